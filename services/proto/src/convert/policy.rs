//! An external policy's messages (`peergrid.policy.v1`): the agent-node's
//! `ActRequest` and the policy's `ActResponse`.
//!
//! Wire → domain is `TryFrom`, which checks every array's length against
//! the ids (naming the field and the expected count) and then runs the
//! core's `validate` (finite values within the learner's bounds, ids
//! strictly ascending). Both directions are fallible in practice: the
//! agent-node decodes a policy's answer, and a policy written in Rust (the
//! end-to-end tests' stand-in) decodes the node's request. Domain → wire is
//! `From`: domain values are valid by construction.

use peergrid_core::observation::OBS_DIM;
use peergrid_core::policy::remote::{ActionBatch, ObservationBatch, ProsumerOutcome, SlotFeedback};
use peergrid_core::policy::{Action, ACT_DIM};

use crate::convert::field;
use crate::error::WireError;
use crate::pb::policy::v1 as pb;

/// `values` must hold `per` values for each of `ids` prosumers.
fn check_len<T>(path: &str, values: &[T], ids: usize, per: usize) -> Result<(), WireError> {
    let want = ids.saturating_mul(per);
    if values.len() == want {
        return Ok(());
    }
    let unit = if per == 1 { "one per prosumer".to_owned() } else { format!("prosumers × {per}") };
    Err(WireError::invalid(path, format!("expected {want} values ({unit}), got {}", values.len())))
}

impl From<&ObservationBatch> for pb::ActRequest {
    fn from(b: &ObservationBatch) -> pb::ActRequest {
        pb::ActRequest {
            node_name: b.node_name.clone(),
            slot: b.slot,
            prosumer_ids: b.prosumer_ids.clone(),
            observations: b.observations.as_flattened().to_vec(),
            previous: b.previous.as_ref().map(pb::SlotFeedback::from),
        }
    }
}

impl From<&SlotFeedback> for pb::SlotFeedback {
    fn from(f: &SlotFeedback) -> pb::SlotFeedback {
        let o = &f.outcomes;
        pb::SlotFeedback {
            slot: f.slot,
            prosumer_ids: o.iter().map(|o| o.prosumer_id).collect(),
            rewards: o.iter().map(|o| o.reward).collect(),
            costs: o.iter().map(|o| o.cost).collect(),
            grid_import_kwh: o.iter().map(|o| o.grid_import_kwh).collect(),
            dones: o.iter().map(|o| o.done).collect(),
            settled_by_market: o.iter().map(|o| o.settled_by_market).collect(),
            remote_actions: f.remote_actions,
        }
    }
}

impl From<&ActionBatch> for pb::ActResponse {
    fn from(b: &ActionBatch) -> pb::ActResponse {
        pb::ActResponse {
            slot: b.slot,
            prosumer_ids: b.prosumer_ids.clone(),
            actions: b.actions.iter().flat_map(|a| a.to_array()).collect(),
        }
    }
}

/// The feedback at `path` (e.g. `previous`), lengths checked; values are
/// checked by the caller's `validate`.
fn feedback_from_wire(f: pb::SlotFeedback, path: &str) -> Result<SlotFeedback, WireError> {
    let p = f.prosumer_ids.len();
    check_len(&field(path, "rewards"), &f.rewards, p, 1)?;
    check_len(&field(path, "costs"), &f.costs, p, 1)?;
    check_len(&field(path, "grid_import_kwh"), &f.grid_import_kwh, p, 1)?;
    check_len(&field(path, "dones"), &f.dones, p, 1)?;
    check_len(&field(path, "settled_by_market"), &f.settled_by_market, p, 1)?;
    let outcomes = (0..p)
        .map(|i| ProsumerOutcome {
            prosumer_id: f.prosumer_ids[i],
            reward: f.rewards[i],
            cost: f.costs[i],
            grid_import_kwh: f.grid_import_kwh[i],
            done: f.dones[i],
            settled_by_market: f.settled_by_market[i],
        })
        .collect();
    Ok(SlotFeedback { slot: f.slot, outcomes, remote_actions: f.remote_actions })
}

impl TryFrom<pb::ActRequest> for ObservationBatch {
    type Error = WireError;

    fn try_from(r: pb::ActRequest) -> Result<ObservationBatch, WireError> {
        check_len("observations", &r.observations, r.prosumer_ids.len(), OBS_DIM)?;
        let observations = r
            .observations
            .chunks_exact(OBS_DIM)
            .map(|row| std::array::from_fn(|f| row[f]))
            .collect();
        let previous = r.previous.map(|f| feedback_from_wire(f, "previous")).transpose()?;
        let batch = ObservationBatch {
            node_name: r.node_name,
            slot: r.slot,
            prosumer_ids: r.prosumer_ids,
            observations,
            previous,
        };
        batch.validate()?;
        Ok(batch)
    }
}

impl TryFrom<pb::ActResponse> for ActionBatch {
    type Error = WireError;

    fn try_from(r: pb::ActResponse) -> Result<ActionBatch, WireError> {
        check_len("actions", &r.actions, r.prosumer_ids.len(), ACT_DIM)?;
        let actions = r
            .actions
            .chunks_exact(ACT_DIM)
            .map(|a| Action { battery: a[0], quantity: a[1], price: a[2] })
            .collect();
        let batch = ActionBatch { slot: r.slot, prosumer_ids: r.prosumer_ids, actions };
        batch.validate()?;
        Ok(batch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> ObservationBatch {
        ObservationBatch {
            node_name: "node-0".into(),
            slot: 42,
            prosumer_ids: vec![3, 4],
            observations: vec![[0.25; OBS_DIM], [-1.5; OBS_DIM]],
            previous: Some(SlotFeedback {
                slot: 41,
                outcomes: vec![
                    ProsumerOutcome {
                        prosumer_id: 3,
                        reward: -0.5,
                        cost: 0.4,
                        grid_import_kwh: 1.5,
                        done: true,
                        settled_by_market: true,
                    },
                    ProsumerOutcome {
                        prosumer_id: 4,
                        reward: 0.1,
                        cost: -0.1,
                        grid_import_kwh: 0.0,
                        done: true,
                        settled_by_market: false,
                    },
                ],
                remote_actions: true,
            }),
        }
    }

    type Defect = Box<dyn Fn(&mut pb::ActRequest)>;

    fn invalid_field(e: WireError) -> String {
        match e {
            WireError::InvalidArgument { field, .. } => field,
            other => panic!("not InvalidArgument: {other}"),
        }
    }

    #[test]
    fn requests_and_answers_round_trip() {
        let r = request();
        let wire = pb::ActRequest::from(&r);
        assert_eq!(wire.observations.len(), 2 * OBS_DIM);
        assert_eq!(
            wire.observations[OBS_DIM], -1.5,
            "prosumer-major: row 1 starts at index OBS_DIM"
        );
        assert_eq!(ObservationBatch::try_from(wire).unwrap(), r);
        let first = ObservationBatch { previous: None, ..request() };
        assert_eq!(ObservationBatch::try_from(pb::ActRequest::from(&first)).unwrap(), first);
        let a = ActionBatch {
            slot: 42,
            prosumer_ids: vec![3, 4],
            actions: vec![
                Action { battery: 1.0, quantity: -1.0, price: 0.5 },
                Action { battery: -0.3, quantity: 2.0, price: -7.0 },
            ],
        };
        let wire = pb::ActResponse::from(&a);
        assert_eq!(wire.actions, vec![1.0, -1.0, 0.5, -0.3, 2.0, -7.0]);
        assert_eq!(ActionBatch::try_from(wire).unwrap(), a);
    }

    #[test]
    fn bad_requests_name_the_field_and_bound() {
        let too_long = format!(
            "expected {} values (prosumers × {OBS_DIM}), got {}",
            2 * OBS_DIM,
            2 * OBS_DIM + 1
        );
        let cases: Vec<(Defect, &str, &str)> = vec![
            (Box::new(|r| r.observations.push(0.0)), "observations", &too_long),
            (Box::new(|r| r.observations[20] = f32::NAN), "observations[20]", "not finite"),
            (Box::new(|r| r.node_name = String::new()), "node_name", ""),
            (Box::new(|r| r.prosumer_ids = vec![4, 3]), "prosumer_ids[1]", "strictly ascending"),
            (
                Box::new(|r| {
                    r.previous.as_mut().unwrap().rewards.pop();
                }),
                "previous.rewards",
                "one per prosumer",
            ),
            (
                Box::new(|r| r.previous.as_mut().unwrap().dones.clear()),
                "previous.dones",
                "expected 2 values",
            ),
            (
                Box::new(|r| r.previous.as_mut().unwrap().costs[1] = f32::NEG_INFINITY),
                "previous.costs[1]",
                "not finite",
            ),
            (
                Box::new(|r| r.previous.as_mut().unwrap().slot = 42),
                "previous.slot",
                "before the slot",
            ),
        ];
        for (break_it, want_field, want_reason) in cases {
            let mut wire = pb::ActRequest::from(&request());
            break_it(&mut wire);
            let e = ObservationBatch::try_from(wire).unwrap_err();
            let text = e.to_string();
            assert_eq!(e.code(), tonic::Code::InvalidArgument, "{text}");
            assert_eq!(invalid_field(e), want_field, "{text}");
            assert!(text.contains(want_reason), "{text}");
        }
    }

    #[test]
    fn bad_answers_name_the_field_and_bound() {
        let good = pb::ActResponse { slot: 42, prosumer_ids: vec![3, 4], actions: vec![0.0; 6] };
        ActionBatch::try_from(good.clone()).unwrap();
        let cases: Vec<(pb::ActResponse, &str, &str)> = vec![
            (
                pb::ActResponse { actions: vec![0.0; 5], ..good.clone() },
                "actions",
                "expected 6 values (prosumers × 3), got 5",
            ),
            (
                pb::ActResponse {
                    actions: vec![0.0, 0.0, 0.0, f32::NAN, 0.0, 0.0],
                    ..good.clone()
                },
                "actions[3]",
                "not finite",
            ),
            (
                pb::ActResponse { actions: vec![0.0, 0.0, 0.0, 0.0, 0.0, 1e9], ..good.clone() },
                "actions[5]",
                "outside",
            ),
            (
                pb::ActResponse { prosumer_ids: vec![], actions: vec![], ..good.clone() },
                "prosumer_ids",
                "1..=",
            ),
            (
                pb::ActResponse { prosumer_ids: vec![4, 4], ..good.clone() },
                "prosumer_ids[1]",
                "ascending",
            ),
        ];
        for (wire, want_field, want_reason) in cases {
            let e = ActionBatch::try_from(wire).unwrap_err();
            let text = e.to_string();
            assert_eq!(invalid_field(e), want_field, "{text}");
            assert!(text.contains(want_reason), "{text}");
        }
    }
}
