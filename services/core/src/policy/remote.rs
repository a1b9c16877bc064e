//! What an agent-node exchanges with an external policy
//! (`agent-node --policy remote:URL`, `proto/peergrid/policy/v1`), as
//! plain data: one [`ObservationBatch`] out per node per slot (every hosted
//! prosumer's observation, and the [`SlotFeedback`] of the slot settled
//! before), one [`ActionBatch`] back.
//!
//! [`ObservationBatch::validate`], [`SlotFeedback::validate`] and
//! [`ActionBatch::validate`] are the checks both ends trust, with the
//! bounds of the learner's experience (`crate::experience`): observations
//! |x| ≤ 1e6, rewards and costs |x| ≤ 1e6, grid import in [0, 1e6] kWh,
//! raw actions |x| ≤ 1e3, all finite, ids strictly ascending.
//! [`ActionBatch::answers`] is what makes an answer usable for a request:
//! the same slot and the very same ids, in order. Errors name the field
//! (and index) and the bound.
//!
//! Nothing here talks to the network; the agent-node's `remote.rs` does,
//! and the proto crate converts these types to and from the wire.

use crate::error::CoreError;
use crate::experience::{
    check_abs, check_range, MAX_ABS_ACTION, MAX_ABS_OBSERVATION, MAX_ABS_REWARD,
    MAX_GRID_IMPORT_KWH, MAX_PROSUMERS,
};
use crate::observation::OBS_DIM;
use crate::policy::{Action, ACT_DIM};
use crate::units::ProsumerId;

/// Every hosted prosumer of one node at the start of one slot.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ObservationBatch {
    /// The agent-node's name (1..=64 characters).
    pub node_name: String,
    /// The market slot the actions are for.
    pub slot: u64,
    /// Strictly ascending, 1..=[`MAX_PROSUMERS`].
    pub prosumer_ids: Vec<ProsumerId>,
    /// Raw features (`crate::observation::FEATURE_NAMES`), one row per id.
    pub observations: Vec<[f32; OBS_DIM]>,
    /// The outcome of the slot settled since the previous batch, if any.
    pub previous: Option<SlotFeedback>,
}

/// One prosumer's outcome of a settled slot.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ProsumerOutcome {
    /// The prosumer this outcome is of.
    pub prosumer_id: ProsumerId,
    /// The reward of the slot (as the learner's rollouts carry it).
    pub reward: f32,
    /// Energy cost (grid and P2P net of revenue, degradation, overload).
    pub cost: f32,
    /// Grid import of the slot, kWh.
    pub grid_import_kwh: f32,
    /// The slot was the last of a day.
    pub done: bool,
    /// Settled by the market (false: locally with the grid).
    pub settled_by_market: bool,
}

/// The outcome of one settled slot for the prosumers that played it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SlotFeedback {
    /// The market slot settled.
    pub slot: u64,
    /// By prosumer id, strictly ascending.
    pub outcomes: Vec<ProsumerOutcome>,
    /// The prosumers played the remote policy's actions (false: the node
    /// fell back to the rule-based action for that slot).
    pub remote_actions: bool,
}

/// The remote policy's answer: a raw action (before the safety filter) per prosumer.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ActionBatch {
    /// The slot the actions are for: the request's.
    pub slot: u64,
    /// Must be the request's ids, in order.
    pub prosumer_ids: Vec<ProsumerId>,
    /// One raw action per id, in the ids' order.
    pub actions: Vec<Action>,
}

/// 1..=`MAX_PROSUMERS` ids, strictly ascending.
fn check_ids(field: &str, ids: &[ProsumerId]) -> Result<(), CoreError> {
    if ids.is_empty() || ids.len() > MAX_PROSUMERS {
        return Err(CoreError::invalid(
            field,
            format!("must hold 1..={MAX_PROSUMERS} ids, got {}", ids.len()),
        ));
    }
    if let Some(i) = ids.windows(2).position(|w| w[0] >= w[1]) {
        return Err(CoreError::invalid(
            format!("{field}[{}]", i + 1),
            "ids must be strictly ascending",
        ));
    }
    Ok(())
}

impl ObservationBatch {
    /// Checks shape and values; names the first bad field.
    pub fn validate(&self) -> Result<(), CoreError> {
        crate::node_name::check_node_name(&self.node_name, "node_name")?;
        check_ids("prosumer_ids", &self.prosumer_ids)?;
        if self.observations.len() != self.prosumer_ids.len() {
            return Err(CoreError::invalid(
                "observations",
                format!(
                    "expected {} values (prosumers × {OBS_DIM}), got {}",
                    self.prosumer_ids.len() * OBS_DIM,
                    self.observations.len() * OBS_DIM
                ),
            ));
        }
        check_abs("observations", self.observations.as_flattened(), MAX_ABS_OBSERVATION)?;
        if let Some(previous) = &self.previous {
            previous.validate("previous")?;
            if previous.slot >= self.slot {
                return Err(CoreError::invalid(
                    "previous.slot",
                    format!(
                        "must be before the slot acted for ({}), got {}",
                        self.slot, previous.slot
                    ),
                ));
            }
        }
        Ok(())
    }
}

impl SlotFeedback {
    /// Checks ids and values; fields are named under `path` (e.g. `previous`).
    pub fn validate(&self, path: &str) -> Result<(), CoreError> {
        let ids: Vec<ProsumerId> = self.outcomes.iter().map(|o| o.prosumer_id).collect();
        check_ids(&format!("{path}.prosumer_ids"), &ids)?;
        let column =
            |f: fn(&ProsumerOutcome) -> f32| self.outcomes.iter().map(f).collect::<Vec<f32>>();
        check_abs(&format!("{path}.rewards"), &column(|o| o.reward), MAX_ABS_REWARD)?;
        check_abs(&format!("{path}.costs"), &column(|o| o.cost), MAX_ABS_REWARD)?;
        check_range(
            &format!("{path}.grid_import_kwh"),
            &column(|o| o.grid_import_kwh),
            0.0,
            MAX_GRID_IMPORT_KWH,
        )
    }
}

impl ActionBatch {
    /// Checks shape and values; names the first bad field.
    pub fn validate(&self) -> Result<(), CoreError> {
        check_ids("prosumer_ids", &self.prosumer_ids)?;
        if self.actions.len() != self.prosumer_ids.len() {
            return Err(CoreError::invalid(
                "actions",
                format!(
                    "expected {} values (prosumers × {ACT_DIM}), got {}",
                    self.prosumer_ids.len() * ACT_DIM,
                    self.actions.len() * ACT_DIM
                ),
            ));
        }
        let flat: Vec<f32> = self.actions.iter().flat_map(|a| a.to_array()).collect();
        check_abs("actions", &flat, MAX_ABS_ACTION)
    }

    /// Whether this (validated) answer is for `request`: the same slot and
    /// the same ids in the same order.
    pub fn answers(&self, request: &ObservationBatch) -> Result<(), CoreError> {
        if self.slot != request.slot {
            return Err(CoreError::invalid(
                "slot",
                format!("must be the slot asked for ({}), got {}", request.slot, self.slot),
            ));
        }
        if self.prosumer_ids.len() != request.prosumer_ids.len() {
            return Err(CoreError::invalid(
                "prosumer_ids",
                format!(
                    "must name the {} prosumers asked for, got {}",
                    request.prosumer_ids.len(),
                    self.prosumer_ids.len()
                ),
            ));
        }
        if let Some(i) =
            self.prosumer_ids.iter().zip(&request.prosumer_ids).position(|(a, b)| a != b)
        {
            return Err(CoreError::invalid(
                format!("prosumer_ids[{i}]"),
                format!(
                    "must be {} (the request's order), got {}",
                    request.prosumer_ids[i], self.prosumer_ids[i]
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(n: u32) -> ObservationBatch {
        ObservationBatch {
            node_name: "node-a".into(),
            slot: 10,
            prosumer_ids: (5..5 + n).collect(),
            observations: vec![[0.5; OBS_DIM]; n as usize],
            previous: Some(SlotFeedback {
                slot: 9,
                outcomes: (5..5 + n)
                    .map(|id| ProsumerOutcome {
                        prosumer_id: id,
                        reward: -0.2,
                        cost: 0.2,
                        grid_import_kwh: 1.0,
                        ..Default::default()
                    })
                    .collect(),
                remote_actions: true,
            }),
        }
    }

    fn answer(n: u32) -> ActionBatch {
        ActionBatch {
            slot: 10,
            prosumer_ids: (5..5 + n).collect(),
            actions: vec![Action { battery: 1.0, quantity: -1.0, price: 0.0 }; n as usize],
        }
    }

    type Defect = Box<dyn Fn(&mut ObservationBatch)>;

    fn field_of(e: CoreError) -> String {
        match e {
            CoreError::InvalidField { field, .. } => field,
            other => panic!("not a field error: {other}"),
        }
    }

    #[test]
    fn a_valid_request_and_its_answer_pass() {
        request(3).validate().unwrap();
        answer(3).validate().unwrap();
        answer(3).answers(&request(3)).unwrap();
    }

    #[test]
    fn bad_requests_name_the_field() {
        let cases: Vec<(Defect, &str)> = vec![
            (Box::new(|r| r.node_name.clear()), "node_name"),
            (Box::new(|r| r.prosumer_ids.clear()), "prosumer_ids"),
            (Box::new(|r| r.prosumer_ids[2] = 5), "prosumer_ids[2]"),
            (
                Box::new(|r| {
                    r.observations.pop();
                }),
                "observations",
            ),
            (Box::new(|r| r.observations[0][0] = 2e6), "observations[0]"),
            (Box::new(|r| r.previous.as_mut().unwrap().slot = 10), "previous.slot"),
            (
                Box::new(|r| r.previous.as_mut().unwrap().outcomes[1].reward = f32::INFINITY),
                "previous.rewards[1]",
            ),
            (
                Box::new(|r| r.previous.as_mut().unwrap().outcomes[2].cost = -1e7),
                "previous.costs[2]",
            ),
            (
                Box::new(|r| r.previous.as_mut().unwrap().outcomes[0].grid_import_kwh = -1.0),
                "previous.grid_import_kwh[0]",
            ),
            (
                Box::new(|r| r.previous.as_mut().unwrap().outcomes.swap(0, 1)),
                "previous.prosumer_ids[1]",
            ),
        ];
        for (break_it, field) in cases {
            let mut r = request(3);
            break_it(&mut r);
            assert_eq!(field_of(r.validate().unwrap_err()), field);
        }
        // Prosumer-major: feature 3 of row 1 is value OBS_DIM + 3.
        let mut r = request(3);
        r.observations[1][3] = f32::NAN;
        assert_eq!(field_of(r.validate().unwrap_err()), format!("observations[{}]", OBS_DIM + 3));
    }

    #[test]
    fn answers_must_fit_their_request_and_be_finite() {
        let mut a = answer(3);
        a.actions[1].price = f32::NAN;
        let e = a.validate().unwrap_err().to_string();
        assert!(e.contains("actions[5]") && e.contains("not finite"), "{e}");
        let mut a = answer(3);
        a.actions[0].battery = 1e4;
        assert_eq!(field_of(a.validate().unwrap_err()), "actions[0]");
        let mut a = answer(3);
        a.actions.pop();
        let e = a.validate().unwrap_err().to_string();
        assert!(e.contains("expected 9 values") && e.contains("got 6"), "{e}");
        let req = request(3);
        assert_eq!(
            field_of(ActionBatch { slot: 11, ..answer(3) }.answers(&req).unwrap_err()),
            "slot"
        );
        assert_eq!(field_of(answer(2).answers(&req).unwrap_err()), "prosumer_ids");
        let shifted = ActionBatch { prosumer_ids: vec![5, 6, 8], ..answer(3) };
        shifted.validate().unwrap();
        let e = shifted.answers(&req).unwrap_err().to_string();
        assert!(e.contains("prosumer_ids[2]") && e.contains("must be 7"), "{e}");
    }
}
