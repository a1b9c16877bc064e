//! The MLP as a policy: a validated policy version ([`MlpModel`]: the
//! network of [`super::network`] and its observation normaliser), what the
//! network's output is added to ([`ActionPrior`]), and [`MlpPolicy`], which
//! turns an [`Observation`] into an [`Action`] with it.
//!
//! A policy version is an [`MlpModel`] (network + normaliser, validated
//! once) shared by `Arc`; an [`MlpPolicy`] runs one with its own generator,
//! scratch buffers and step record. The simulator, the evaluation and every
//! agent-node actor act through this one type.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::network::{ActorCritic, Scratch};
use super::{Action, Policy, RuleBased, ACT_DIM};
use crate::error::CoreError;
use crate::observation::{Observation, OBS_DIM};
use crate::rng::SeededRng;
use crate::units::ProsumerId;

/// What the network's output is added to before the safety filter
/// (residual policy learning: Silver et al. 2018, Johannink et al. 2019).
///
/// The Gaussian, its log-probabilities and everything the trainer sees are
/// about the network's own output `a`; the household then plays
/// `prior(obs) + a`. With [`ActionPrior::RuleBased`] an untrained network
/// (mean ≈ 0) plays the rule-based baseline, and learning only has to find
/// what to do differently — for example keep the battery for the evening
/// peak instead of emptying it at night at the off-peak price.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ActionPrior {
    /// The network's output is the action.
    #[default]
    None,
    /// The network's output corrects the rule-based action.
    RuleBased,
}

impl ActionPrior {
    /// The action a household plays for the network output `raw`.
    pub fn compose(self, obs: &Observation, raw: [f32; ACT_DIM]) -> Action {
        match self {
            ActionPrior::None => Action::from_array(raw),
            ActionPrior::RuleBased => {
                let base = RuleBased::action(obs).to_array();
                Action::from_array(std::array::from_fn(|i| base[i] + raw[i]))
            }
        }
    }
}

/// Running observation normaliser: `clip((x − mean) / sqrt(var + eps), ±clip)`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ObsNormaliser {
    /// Running mean of each feature.
    pub mean: Vec<f32>,
    /// Running variance of each feature.
    pub var: Vec<f32>,
    /// Normalised values are clipped to `±clip`.
    pub clip: f32,
    /// Added to the variance before the square root.
    pub epsilon: f32,
}

impl ObsNormaliser {
    /// A normaliser that leaves `dim` features unchanged (but clipped to ±10).
    pub fn identity(dim: usize) -> ObsNormaliser {
        ObsNormaliser {
            mean: vec![0.0; dim],
            var: vec![1.0 - 1e-8; dim],
            clip: 10.0,
            epsilon: 1e-8,
        }
    }

    /// Checks it fits `dim` features and every value is finite, variances ≥ 0.
    pub fn validate(&self, dim: usize) -> Result<(), CoreError> {
        if self.mean.len() != dim || self.var.len() != dim {
            return Err(CoreError::invalid(
                "normaliser",
                format!("mean/var need {dim} values, got {}/{}", self.mean.len(), self.var.len()),
            ));
        }
        if self.mean.iter().chain(&self.var).any(|v| !v.is_finite())
            || self.var.iter().any(|v| *v < 0.0)
        {
            return Err(CoreError::invalid(
                "normaliser",
                "mean must be finite and var finite and ≥ 0",
            ));
        }
        if !(self.clip > 0.0
            && self.epsilon > 0.0
            && self.clip.is_finite()
            && self.epsilon.is_finite())
        {
            return Err(CoreError::invalid(
                "normaliser.clip",
                "clip and epsilon must be finite and > 0",
            ));
        }
        Ok(())
    }

    /// Normalises `x` in place.
    pub fn apply(&self, x: &mut [f32]) {
        for ((v, m), var) in x.iter_mut().zip(&self.mean).zip(&self.var) {
            *v = ((*v - m) / (var + self.epsilon).sqrt()).clamp(-self.clip, self.clip);
        }
    }
}

/// A validated policy version: the actor-critic and the observation
/// normaliser it was trained with, checked against the observation and
/// action layout. Immutable once built, so any number of [`MlpPolicy`]
/// instances share one through an `Arc` (a 64×64 actor-critic is ~40 KB;
/// 10,000 actors must not each own a copy).
#[derive(Clone, Debug, PartialEq)]
pub struct MlpModel {
    net: ActorCritic,
    normaliser: ObsNormaliser,
}

impl MlpModel {
    /// Checks that `net` maps this crate's observations to its actions and
    /// that `normaliser` fits them.
    pub fn new(net: ActorCritic, normaliser: ObsNormaliser) -> Result<MlpModel, CoreError> {
        if net.spec.obs_dim != OBS_DIM || net.spec.act_dim != ACT_DIM {
            return Err(CoreError::invalid(
                "mlp",
                format!("needs obs_dim {OBS_DIM} and act_dim {ACT_DIM}, got {:?}", net.spec),
            ));
        }
        normaliser.validate(OBS_DIM)?;
        Ok(MlpModel { net, normaliser })
    }

    /// The actor-critic network.
    pub fn net(&self) -> &ActorCritic {
        &self.net
    }

    /// The observation normaliser the network was trained with.
    pub fn normaliser(&self) -> &ObsNormaliser {
        &self.normaliser
    }
}

/// The MLP as a [`Policy`]: deterministic (the Gaussian mean) for
/// evaluation, or sampling with a seeded generator for rollouts. After each
/// `act`, [`MlpPolicy::last`] holds the log-prob and value of that step.
///
/// The model is shared ([`MlpModel`] behind an `Arc`); the generator,
/// scratch buffers and step record are this instance's own, so many
/// instances run one model without contending.
#[derive(Clone, Debug)]
pub struct MlpPolicy {
    model: Arc<MlpModel>,
    sampler: Option<SeededRng>,
    scratch: Scratch,
    last: StepRecord,
}

/// What a rollout needs to remember about one action.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct StepRecord {
    /// The raw features (before normalisation): what the trainer receives.
    pub features: [f32; OBS_DIM],
    /// The normalised observation the network saw.
    pub obs: [f32; OBS_DIM],
    /// The network's own output `a` (before the prior is added).
    pub action: [f32; ACT_DIM],
    /// Log-probability of `action` (when sampling).
    pub log_prob: f32,
    /// The critic's value of the observation (when sampling).
    pub value: f32,
}

impl MlpPolicy {
    /// A deterministic policy owning its (validated) network.
    pub fn new(net: ActorCritic, normaliser: ObsNormaliser) -> Result<MlpPolicy, CoreError> {
        Ok(MlpPolicy::deterministic(Arc::new(MlpModel::new(net, normaliser)?)))
    }

    /// Plays the Gaussian mean of the shared `model`.
    pub fn deterministic(model: Arc<MlpModel>) -> MlpPolicy {
        MlpPolicy { model, sampler: None, scratch: Scratch::default(), last: StepRecord::default() }
    }

    /// Samples from the shared `model`'s Gaussian with a generator seeded by `seed`.
    pub fn sampling(model: Arc<MlpModel>, seed: u64) -> MlpPolicy {
        MlpPolicy::deterministic(model).stochastic(seed)
    }

    /// Samples actions from the Gaussian with a generator seeded by `seed`.
    pub fn stochastic(mut self, seed: u64) -> MlpPolicy {
        self.sampler = Some(SeededRng::new(seed));
        self
    }

    /// The model this policy acts with.
    pub fn model(&self) -> &Arc<MlpModel> {
        &self.model
    }

    /// Acts with `model` from the next `act` on. The generator carries on
    /// where it was: a learner's stream of draws does not restart with
    /// each policy version.
    pub fn set_model(&mut self, model: Arc<MlpModel>) {
        self.model = model;
    }

    /// What the last `act` did: raw features, action, and (when sampling)
    /// log-prob and value.
    pub fn last(&self) -> &StepRecord {
        &self.last
    }

    /// V(obs) under the current model, for bootstrapping a rollout. Draws
    /// nothing from the generator.
    pub fn value_of(&mut self, obs: &Observation) -> f32 {
        let mut x = [0.0f32; OBS_DIM];
        obs.features(&mut x);
        self.model.normaliser.apply(&mut x);
        self.model.net.value(&x, &mut self.scratch)
    }
}

impl Policy for MlpPolicy {
    fn name(&self) -> &str {
        "mlp"
    }

    fn act(&mut self, _: ProsumerId, obs: &Observation) -> Action {
        let mut x = [0.0f32; OBS_DIM];
        obs.features(&mut x);
        self.last.features = x;
        let MlpModel { net, normaliser } = &*self.model;
        normaliser.apply(&mut x);
        let action = match self.sampler.as_mut() {
            Some(rng) => {
                let (a, log_prob, value) = net.sample(&x, rng, &mut self.scratch);
                self.last.log_prob = log_prob;
                self.last.value = value;
                a
            }
            None => {
                let mut mean = [0.0f32; ACT_DIM];
                net.mean(&x, &mut self.scratch, &mut mean);
                mean
            }
        };
        self.last.obs = x;
        self.last.action = action;
        net.spec.prior.compose(obs, action)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::MlpSpec;

    #[test]
    fn the_rule_based_prior_adds_the_network_output_to_the_rule() {
        // PV surplus of 2 kWh, up to 4 kW of charging: the rule charges at 0.5.
        let obs = crate::safety::tests::obs(1.0, 3.0, -5.0, 4.0);
        let rule = RuleBased::action(&obs);
        assert_eq!(rule, Action { battery: 0.5, quantity: 1.0, price: 0.0 });
        assert_eq!(ActionPrior::RuleBased.compose(&obs, [0.0; 3]), rule);
        assert_eq!(
            ActionPrior::RuleBased.compose(&obs, [-0.5, -2.0, 0.25]),
            Action { battery: 0.0, quantity: -1.0, price: 0.25 }
        );
        assert_eq!(
            ActionPrior::None.compose(&obs, [-0.5, -2.0, 0.25]),
            Action { battery: -0.5, quantity: -2.0, price: 0.25 }
        );

        // A network whose mean head is all zeros plays the rule exactly, and
        // its step record keeps the network's own output (what PPO trains on).
        let spec = MlpSpec { prior: ActionPrior::RuleBased, ..MlpSpec::default() };
        let mut flat = ActorCritic::random(&spec, 5).to_flat();
        let (n_in, n_out) = *spec.layer_sizes(spec.act_dim).last().unwrap();
        let head_end = spec.layer_sizes(spec.act_dim).iter().map(|(i, o)| i * o + o).sum::<usize>();
        flat[head_end - n_out - n_in * n_out..head_end].fill(0.0);
        let net = ActorCritic::from_flat(&spec, &flat).unwrap();
        let mut policy = MlpPolicy::new(net.clone(), ObsNormaliser::identity(OBS_DIM)).unwrap();
        assert_eq!(policy.act(0, &obs), rule);
        assert_eq!(policy.last().action, [0.0; 3]);
        let mut sampling =
            MlpPolicy::new(net, ObsNormaliser::identity(OBS_DIM)).unwrap().stochastic(9);
        let played = sampling.act(0, &obs).to_array();
        let raw = sampling.last().action;
        assert!(raw.iter().any(|a| *a != 0.0));
        for i in 0..ACT_DIM {
            assert_eq!(played[i], rule.to_array()[i] + raw[i]);
        }
    }

    /// Observations that exercise the network (a spread of hours, prices, states).
    fn observations(n: usize) -> Vec<Observation> {
        (0..n)
            .map(|i| {
                let f = i as f64;
                crate::safety::tests::obs(
                    (f * 0.37).sin() + 1.5,
                    (f * 0.11).cos() * 3.0 + 3.0,
                    (f * 0.7).sin() - 5.0,
                    4.0,
                )
            })
            .collect()
    }

    #[test]
    fn policies_sharing_a_model_act_like_policies_owning_it() {
        let spec = MlpSpec::default();
        let net = ActorCritic::random(&spec, 21);
        let mut normaliser = ObsNormaliser::identity(OBS_DIM);
        normaliser.mean[0] = 0.5;
        normaliser.var[0] = 2.0;
        let model = Arc::new(MlpModel::new(net.clone(), normaliser.clone()).unwrap());
        let mut owner = MlpPolicy::new(net.clone(), normaliser.clone()).unwrap();
        let mut shared = MlpPolicy::deterministic(Arc::clone(&model));
        let mut owner_sampling = MlpPolicy::new(net, normaliser).unwrap().stochastic(9);
        let mut shared_sampling = MlpPolicy::sampling(Arc::clone(&model), 9);
        for obs in observations(50) {
            assert_eq!(owner.act(0, &obs), shared.act(0, &obs));
            assert_eq!(owner.last(), shared.last());
            assert_eq!(owner_sampling.act(0, &obs), shared_sampling.act(0, &obs));
            assert_eq!(owner_sampling.last(), shared_sampling.last());
            assert_eq!(owner_sampling.value_of(&obs), shared_sampling.last().value);
        }
        assert!(Arc::ptr_eq(shared.model(), shared_sampling.model()));
    }

    #[test]
    fn set_model_swaps_the_network_and_keeps_the_generator() {
        let spec = MlpSpec::default();
        let models: Vec<Arc<MlpModel>> = (0..3)
            .map(|seed| {
                Arc::new(
                    MlpModel::new(
                        ActorCritic::random(&spec, seed),
                        ObsNormaliser::identity(OBS_DIM),
                    )
                    .unwrap(),
                )
            })
            .collect();
        let mut policy = MlpPolicy::sampling(Arc::clone(&models[0]), 4);
        // By hand: one generator, sampled through each version in turn.
        let mut rng = SeededRng::new(4);
        let mut scratch = Scratch::default();
        for (i, obs) in observations(60).iter().enumerate() {
            let model = &models[i / 20];
            if i % 20 == 0 {
                policy.set_model(Arc::clone(model));
            }
            let mut x = [0.0f32; OBS_DIM];
            obs.features(&mut x);
            model.normaliser().apply(&mut x);
            let (a, log_prob, value) = model.net().sample(&x, &mut rng, &mut scratch);
            assert_eq!(policy.act(0, obs), ActionPrior::None.compose(obs, a));
            assert_eq!(
                (policy.last().action, policy.last().log_prob, policy.last().value),
                (a, log_prob, value)
            );
            assert_eq!(policy.value_of(obs), value, "valuing draws nothing");
        }
    }

    #[test]
    fn models_must_fit_the_observation_and_action_layout() {
        let spec = MlpSpec { obs_dim: 5, ..MlpSpec::default() };
        let e = MlpModel::new(ActorCritic::random(&spec, 1), ObsNormaliser::identity(5))
            .unwrap_err()
            .to_string();
        assert!(e.contains("obs_dim"), "{e}");
        let net = ActorCritic::random(&MlpSpec::default(), 1);
        assert!(MlpModel::new(net, ObsNormaliser::identity(OBS_DIM - 1))
            .unwrap_err()
            .to_string()
            .contains("normaliser"));
    }

    #[test]
    fn normaliser_clips() {
        let n =
            ObsNormaliser { mean: vec![1.0, 0.0], var: vec![4.0, 1e-12], clip: 5.0, epsilon: 1e-8 };
        let mut x = [3.0f32, 1.0];
        n.apply(&mut x);
        assert!((x[0] - 1.0).abs() < 1e-6);
        assert_eq!(x[1], 5.0);
        assert!(ObsNormaliser { var: vec![-1.0, 1.0], ..n }.validate(2).is_err());
    }
}
