//! Experience: what a learning agent-node sends the trainer.
//!
//! A [`Rollout`] is one node's `steps` consecutive slots for its prosumers,
//! all acting with one policy version. Arrays are **step-major**: prosumer
//! `p` at step `t` is at index `t * P + p` (times [`OBS_DIM`] or
//! [`ACT_DIM`] for observations and actions). Observations are raw (the
//! trainer normalises them with the normaliser of `policy_version`, exactly
//! as the actors did, and updates its running statistics with them).
//!
//! [`Rollout::validate`] is the one check both ends trust: every length,
//! every value finite and within its documented bound (below), ids strictly
//! ascending. It names the field and the index of the first problem.
//!
//! **Bounds.** The trainer must never ingest a number that can overflow its
//! f32 arithmetic (a reward of 3e38 is finite but its square is not; an
//! observation of 3e38 makes the running variance infinite). The bounds
//! are derived from what the physics and the reward can produce, with a
//! wide margin, so no honest node ever hits them:
//!
//! | field | bound | real magnitude |
//! | ----- | ----- | -------------- |
//! | `observations` | abs ≤ 1e6 | energies ≤ 1,000 kWh per slot (the market's per-slot bound), prices ≤ 100/kWh, the rest in [-1, 1] |
//! | `rewards`, `costs` | abs ≤ 1e6 | one slot's bill: ≤ 1,000 kWh × 100/kWh = 1e5 at the extremes, a few units in practice |
//! | `values`, `bootstrap_values` | abs ≤ 1e8 | discounted returns: the reward bound × 1/(1 − γ) = 100 at γ = 0.99 |
//! | `log_probs` | in [-1e4, 1e4] | a 3-D Gaussian log-density: tens |
//! | `actions` | abs ≤ 1e3 | Gaussian samples around a mean in [-1, 1]: a few units |
//! | `grid_import_kwh` | in [0, 1e6] | ≤ 1,000 kWh per slot |
//!
//! Squares of every bounded value stay far below f32's 3.4e38, so the loss
//! and the normaliser's statistics stay finite for any accepted batch. (A
//! lie within the bounds, say a log-prob far from the policy's, can still
//! make one update's ratio overflow; the trainer discards such an update.)

use crate::error::CoreError;
use crate::observation::OBS_DIM;
use crate::policy::ACT_DIM;
use crate::units::ProsumerId;

/// Most steps in one rollout.
pub const MAX_STEPS: usize = 100_000;
/// Most prosumers in one rollout.
pub const MAX_PROSUMERS: usize = 100_000;
/// Most samples (steps × prosumers) in one rollout: 2²⁴ (≈ 1.1 GB of floats
/// on the wire would be far beyond the message limit anyway).
pub const MAX_SAMPLES: usize = 1 << 24;

/// Largest accepted |observation feature| (see the module's bounds table).
pub const MAX_ABS_OBSERVATION: f32 = 1e6;
/// Largest accepted |reward| and |cost| of one step.
pub const MAX_ABS_REWARD: f32 = 1e6;
/// Largest accepted |value| and |bootstrap value|.
pub const MAX_ABS_VALUE: f32 = 1e8;
/// Largest accepted |log-prob|.
pub const MAX_ABS_LOG_PROB: f32 = 1e4;
/// Largest accepted |raw action| component.
pub const MAX_ABS_ACTION: f32 = 1e3;
/// Largest accepted grid import of one step, kWh.
pub const MAX_GRID_IMPORT_KWH: f32 = 1e6;

/// One node's rollout for one policy version.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Rollout {
    /// The sending node's name.
    pub node_name: String,
    /// The policy version every action was taken with.
    pub policy_version: u64,
    /// Market slot of the rollout's first step.
    pub first_slot: u64,
    /// Consecutive slots (steps) in the rollout.
    pub steps: usize,
    /// The node's prosumer ids, strictly ascending: the `P` of the layout.
    pub prosumer_ids: Vec<ProsumerId>,
    /// Raw observations, T × P × [`OBS_DIM`].
    pub observations: Vec<f32>,
    /// The network's raw actions, T × P × [`ACT_DIM`].
    pub actions: Vec<f32>,
    /// Log-probability of each action under `policy_version`, T × P.
    pub log_probs: Vec<f32>,
    /// The critic's value of each observation, T × P.
    pub values: Vec<f32>,
    /// Reward of each step, T × P.
    pub rewards: Vec<f32>,
    /// Whether the step was the last of an episode (a day), T × P.
    pub dones: Vec<bool>,
    /// Value of each prosumer's observation after the last step, P.
    pub bootstrap_values: Vec<f32>,
    /// Information only (charts, not learning): the household's energy
    /// cost of the step (grid and P2P, net of revenue), T × P.
    pub costs: Vec<f32>,
    /// Information only: grid import of the step in kWh, T × P.
    pub grid_import_kwh: Vec<f32>,
}

/// A node's word, as it starts a rollout, that it acts with
/// `policy_version` until slot `end_slot` (exclusive): the synchronous
/// learner then waits for that rollout (see the learner's `BeginRollout`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RolloutStart {
    /// The node's name, as its rollout will carry it.
    pub node_name: String,
    /// The policy version the rollout's actions are sampled from.
    pub policy_version: u64,
    /// The market slot of the rollout's first step.
    pub first_slot: u64,
    /// First slot + steps of the rollout to come.
    pub end_slot: u64,
}

impl RolloutStart {
    /// Checks the version and the slot span; names the first bad field.
    pub fn validate(&self) -> Result<(), CoreError> {
        if self.policy_version == 0 {
            return Err(CoreError::invalid(
                "policy_version",
                "must be ≥ 1 (version 1 is the initial policy)",
            ));
        }
        let span = self
            .end_slot
            .checked_sub(self.first_slot)
            .filter(|s| (1..=MAX_STEPS as u64).contains(s));
        if span.is_none() {
            return Err(CoreError::invalid(
                "end_slot",
                format!(
                    "must be in first_slot + 1..=first_slot + {MAX_STEPS}, got {} with first_slot {}",
                    self.end_slot, self.first_slot
                ),
            ));
        }
        Ok(())
    }
}

fn check_len<T>(field: &str, v: &[T], want: usize) -> Result<(), CoreError> {
    if v.len() == want {
        Ok(())
    } else {
        Err(CoreError::invalid(
            field,
            format!("expected {want} values (steps × prosumers{}), got {}", per(field), v.len()),
        ))
    }
}

fn per(field: &str) -> String {
    match field {
        "observations" => format!(" × {OBS_DIM}"),
        "actions" => format!(" × {ACT_DIM}"),
        "bootstrap_values" => " / steps".into(),
        _ => String::new(),
    }
}

/// Every value finite and in `[min, max]`; names the first that is not.
pub(crate) fn check_range(field: &str, v: &[f32], min: f32, max: f32) -> Result<(), CoreError> {
    // One pass, no formatting unless a value is bad: batches hold millions.
    match v.iter().position(|x| !(x.is_finite() && *x >= min && *x <= max)) {
        Some(i) if !v[i].is_finite() => {
            Err(CoreError::invalid(format!("{field}[{i}]"), format!("{} is not finite", v[i])))
        }
        Some(i) => Err(CoreError::invalid(
            format!("{field}[{i}]"),
            format!("{} is outside [{min:e}, {max:e}]", v[i]),
        )),
        None => Ok(()),
    }
}

pub(crate) fn check_abs(field: &str, v: &[f32], max: f32) -> Result<(), CoreError> {
    check_range(field, v, -max, max)
}

impl Rollout {
    /// Prosumers in the rollout (`P`).
    pub fn n_prosumers(&self) -> usize {
        self.prosumer_ids.len()
    }

    /// Steps × prosumers.
    pub fn samples(&self) -> usize {
        self.steps * self.prosumer_ids.len()
    }

    /// Checks shape and values; names the first bad field.
    pub fn validate(&self) -> Result<(), CoreError> {
        if self.steps == 0 || self.steps > MAX_STEPS {
            return Err(CoreError::invalid(
                "steps",
                format!("must be in 1..={MAX_STEPS}, got {}", self.steps),
            ));
        }
        let p = self.prosumer_ids.len();
        if p == 0 || p > MAX_PROSUMERS {
            return Err(CoreError::invalid(
                "prosumer_ids",
                format!("must hold 1..={MAX_PROSUMERS} ids, got {p}"),
            ));
        }
        if let Some(i) = self.prosumer_ids.windows(2).position(|w| w[0] >= w[1]) {
            return Err(CoreError::invalid(
                format!("prosumer_ids[{}]", i + 1),
                "ids must be strictly ascending",
            ));
        }
        let n = self.samples();
        if n > MAX_SAMPLES {
            return Err(CoreError::invalid(
                "steps",
                format!("steps × prosumers = {n} exceeds {MAX_SAMPLES}"),
            ));
        }
        check_len("observations", &self.observations, n * OBS_DIM)?;
        check_len("actions", &self.actions, n * ACT_DIM)?;
        check_len("log_probs", &self.log_probs, n)?;
        check_len("values", &self.values, n)?;
        check_len("rewards", &self.rewards, n)?;
        check_len("dones", &self.dones, n)?;
        check_len("bootstrap_values", &self.bootstrap_values, p)?;
        check_len("costs", &self.costs, n)?;
        check_len("grid_import_kwh", &self.grid_import_kwh, n)?;
        check_abs("observations", &self.observations, MAX_ABS_OBSERVATION)?;
        check_abs("actions", &self.actions, MAX_ABS_ACTION)?;
        check_abs("log_probs", &self.log_probs, MAX_ABS_LOG_PROB)?;
        check_abs("values", &self.values, MAX_ABS_VALUE)?;
        check_abs("rewards", &self.rewards, MAX_ABS_REWARD)?;
        check_abs("bootstrap_values", &self.bootstrap_values, MAX_ABS_VALUE)?;
        check_abs("costs", &self.costs, MAX_ABS_REWARD)?;
        check_range("grid_import_kwh", &self.grid_import_kwh, 0.0, MAX_GRID_IMPORT_KWH)?;
        Ok(())
    }
}

/// Generalised advantage estimation over a step-major rollout of `p`
/// parallel prosumers: returns `(advantages, returns)`, both step-major.
///
/// `δ_t = r_t + γ V(s_{t+1}) − V(s_t)`, `A_t = δ_t + γλ A_{t+1}`, with
/// `V(s_T)` = `bootstrap`. The environment never resets (a household's
/// battery carries over midnight), so episode ends do not cut the
/// bootstrap; pass `terminal` for tasks that do end.
pub fn gae(
    rewards: &[f32],
    values: &[f32],
    bootstrap: &[f32],
    terminal: Option<&[bool]>,
    p: usize,
    gamma: f32,
    lambda: f32,
) -> (Vec<f32>, Vec<f32>) {
    let n = rewards.len();
    debug_assert!(p > 0 && n % p == 0 && values.len() == n && bootstrap.len() == p);
    let steps = n / p;
    let mut adv = vec![0.0f32; n];
    let mut next_adv = vec![0.0f32; p];
    let mut next_value = bootstrap.to_vec();
    for t in (0..steps).rev() {
        for j in 0..p {
            let i = t * p + j;
            let live = if terminal.is_some_and(|d| d[i]) { 0.0 } else { 1.0 };
            let delta = rewards[i] + gamma * next_value[j] * live - values[i];
            next_adv[j] = delta + gamma * lambda * live * next_adv[j];
            adv[i] = next_adv[j];
            next_value[j] = values[i];
        }
    }
    let returns = adv.iter().zip(values).map(|(a, v)| a + v).collect();
    (adv, returns)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rollout(steps: usize, p: usize) -> Rollout {
        let n = steps * p;
        Rollout {
            node_name: "n".into(),
            policy_version: 1,
            first_slot: 0,
            steps,
            prosumer_ids: (0..p as u32).collect(),
            observations: vec![0.5; n * OBS_DIM],
            actions: vec![0.1; n * ACT_DIM],
            log_probs: vec![-1.0; n],
            values: vec![0.0; n],
            rewards: vec![1.0; n],
            dones: vec![false; n],
            bootstrap_values: vec![0.0; p],
            costs: vec![0.2; n],
            grid_import_kwh: vec![1.0; n],
        }
    }

    #[test]
    fn a_well_formed_rollout_validates() {
        rollout(3, 2).validate().unwrap();
    }

    type Defect = Box<dyn Fn(&mut Rollout)>;

    #[test]
    fn each_defect_is_named() {
        let cases: Vec<(Defect, &str)> = vec![
            (Box::new(|r| r.steps = 0), "steps"),
            (Box::new(|r| r.prosumer_ids.clear()), "prosumer_ids"),
            (Box::new(|r| r.prosumer_ids[1] = 0), "prosumer_ids[1]"),
            (Box::new(|r| r.observations.pop().map(drop).unwrap_or(())), "observations"),
            (Box::new(|r| r.actions.push(0.0)), "actions"),
            (Box::new(|r| r.log_probs.pop().map(drop).unwrap_or(())), "log_probs"),
            (Box::new(|r| r.dones.push(true)), "dones"),
            (Box::new(|r| r.bootstrap_values.clear()), "bootstrap_values"),
            (Box::new(|r| r.observations[20] = f32::NAN), "observations[20]"),
            (Box::new(|r| r.rewards[5] = f32::INFINITY), "rewards[5]"),
            (Box::new(|r| r.values[0] = f32::NEG_INFINITY), "values[0]"),
            (Box::new(|r| r.costs.clear()), "costs"),
            (Box::new(|r| r.grid_import_kwh[1] = f32::NAN), "grid_import_kwh[1]"),
            // Finite but beyond what physics and the reward can produce.
            (Box::new(|r| r.rewards[4] = 3e38), "rewards[4]"),
            (Box::new(|r| r.observations[7] = -3e38), "observations[7]"),
            (Box::new(|r| r.values[2] = 1e9), "values[2]"),
            (Box::new(|r| r.bootstrap_values[1] = -1e9), "bootstrap_values[1]"),
            (Box::new(|r| r.log_probs[3] = -1e5), "log_probs[3]"),
            (Box::new(|r| r.actions[8] = 1e4), "actions[8]"),
            (Box::new(|r| r.costs[0] = 2e6), "costs[0]"),
            (Box::new(|r| r.grid_import_kwh[2] = -1.0), "grid_import_kwh[2]"),
        ];
        for (defect, field) in cases {
            let mut r = rollout(3, 2);
            defect(&mut r);
            match r.validate() {
                Err(CoreError::InvalidField { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{field}: {other:?}"),
            }
        }
    }

    #[test]
    fn values_at_the_bounds_are_accepted_and_the_message_names_the_bound() {
        let mut r = rollout(2, 1);
        r.observations[0] = MAX_ABS_OBSERVATION;
        r.rewards[1] = -MAX_ABS_REWARD;
        r.values[0] = MAX_ABS_VALUE;
        r.log_probs[0] = -MAX_ABS_LOG_PROB;
        r.actions[0] = -MAX_ABS_ACTION;
        r.grid_import_kwh[0] = 0.0;
        r.validate().unwrap();
        r.rewards[1] = 3e38;
        let message = r.validate().unwrap_err().to_string();
        assert!(
            message.contains("rewards[1]") && message.contains("outside [-1e6, 1e6]"),
            "{message}"
        );
    }

    #[test]
    fn gae_matches_a_hand_computation() {
        // One prosumer, two steps: r = [1, 2], V = [0.5, 1.0], V(s_2) = 3.
        let (g, l) = (0.9f32, 0.8f32);
        let (adv, ret) = gae(&[1.0, 2.0], &[0.5, 1.0], &[3.0], None, 1, g, l);
        let d1 = 2.0 + g * 3.0 - 1.0;
        let d0 = 1.0 + g * 1.0 - 0.5;
        let a0 = d0 + g * l * d1;
        assert!((adv[1] - d1).abs() < 1e-6 && (adv[0] - a0).abs() < 1e-6, "{adv:?}");
        assert!((ret[0] - (a0 + 0.5)).abs() < 1e-6 && (ret[1] - (d1 + 1.0)).abs() < 1e-6);
    }

    #[test]
    fn gae_keeps_prosumers_apart_and_terminal_cuts_the_bootstrap() {
        // Two prosumers interleaved step-major; the second is terminal at t = 1.
        let rewards = [1.0, 10.0, 1.0, 10.0];
        let values = [0.0; 4];
        let (adv, _) = gae(
            &rewards,
            &values,
            &[100.0, 100.0],
            Some(&[false, false, false, true]),
            2,
            0.5,
            1.0,
        );
        assert_eq!(adv[3], 10.0, "terminal: no bootstrap");
        assert_eq!(adv[2], 1.0 + 0.5 * 100.0);
        assert_eq!(adv[1], 10.0 + 0.5 * 10.0);
    }
}
