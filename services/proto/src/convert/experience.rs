//! The learner's messages: experience batches and policy updates.
//!
//! An [`pb::ExperienceBatch`] becomes a [`Rollout`] only if
//! [`Rollout::validate`] accepts it (every length, every value finite and
//! within the bounds documented in `peergrid_core::experience`, ids
//! ascending) and its node name is sane; a [`pb::PolicyUpdate`] becomes
//! [`PolicyWeights`] only if its SHA-256 matches and the safetensors blob
//! reads back (`peergrid_core::policy::weights`) with the same version.

use peergrid_core::experience::{Rollout, RolloutStart};
use peergrid_core::node_name::check_node_name;
use peergrid_core::policy::weights::{from_safetensors, PolicyWeights};
use peergrid_core::CoreError;
use sha2::{Digest, Sha256};

use crate::error::WireError;
use crate::pb::learner::v1 as pb;

/// Checks a node name by the one rule (`peergrid_core::node_name`).
pub fn node_name_from_wire(name: &str, field: &str) -> Result<String, WireError> {
    check_node_name(name, field).map_err(|e| match e {
        CoreError::InvalidField { field, reason } => WireError::invalid(field, reason),
        other => WireError::invalid(field, other.to_string()),
    })?;
    Ok(name.to_owned())
}

impl From<&Rollout> for pb::ExperienceBatch {
    fn from(r: &Rollout) -> pb::ExperienceBatch {
        pb::ExperienceBatch {
            node_name: r.node_name.clone(),
            policy_version: r.policy_version,
            first_slot: r.first_slot,
            steps: r.steps as u32,
            prosumer_ids: r.prosumer_ids.clone(),
            observations: r.observations.clone(),
            actions: r.actions.clone(),
            log_probs: r.log_probs.clone(),
            values: r.values.clone(),
            rewards: r.rewards.clone(),
            dones: r.dones.clone(),
            bootstrap_values: r.bootstrap_values.clone(),
            costs: r.costs.clone(),
            grid_import_kwh: r.grid_import_kwh.clone(),
        }
    }
}

impl From<&RolloutStart> for pb::RolloutStart {
    fn from(s: &RolloutStart) -> pb::RolloutStart {
        pb::RolloutStart {
            node_name: s.node_name.clone(),
            policy_version: s.policy_version,
            first_slot: s.first_slot,
            end_slot: s.end_slot,
        }
    }
}

/// Validates a node's rollout announcement (name, version, slot span).
pub fn rollout_start_from_wire(m: pb::RolloutStart) -> Result<RolloutStart, WireError> {
    let start = RolloutStart {
        node_name: node_name_from_wire(&m.node_name, "node_name")?,
        policy_version: m.policy_version,
        first_slot: m.first_slot,
        end_slot: m.end_slot,
    };
    start.validate()?;
    Ok(start)
}

/// Validates a batch into a rollout; consumes it to avoid copying the arrays.
pub fn rollout_from_wire(b: pb::ExperienceBatch) -> Result<Rollout, WireError> {
    let node_name = node_name_from_wire(&b.node_name, "node_name")?;
    if b.policy_version == 0 {
        return Err(WireError::invalid(
            "policy_version",
            "must be ≥ 1 (version 1 is the initial policy)",
        ));
    }
    let rollout = Rollout {
        node_name,
        policy_version: b.policy_version,
        first_slot: b.first_slot,
        steps: b.steps as usize,
        prosumer_ids: b.prosumer_ids,
        observations: b.observations,
        actions: b.actions,
        log_probs: b.log_probs,
        values: b.values,
        rewards: b.rewards,
        dones: b.dones,
        bootstrap_values: b.bootstrap_values,
        costs: b.costs,
        grid_import_kwh: b.grid_import_kwh,
    };
    rollout.validate()?;
    Ok(rollout)
}

/// A policy as an update message: its safetensors blob (encoded once per
/// version by the trainer, `weights::to_safetensors`) and the blob's SHA-256.
pub fn policy_update_from_blob(version: u64, weights: Vec<u8>) -> pb::PolicyUpdate {
    let sha256 = Sha256::digest(&weights).to_vec();
    pb::PolicyUpdate { version, weights, sha256 }
}

/// Checks the digest, reads the blob and checks its version.
pub fn policy_from_wire(u: &pb::PolicyUpdate) -> Result<PolicyWeights, WireError> {
    if Sha256::digest(&u.weights).as_slice() != u.sha256.as_slice() {
        return Err(WireError::invalid("sha256", "does not match the SHA-256 of weights"));
    }
    let w =
        from_safetensors(&u.weights).map_err(|e| WireError::invalid("weights", e.to_string()))?;
    if w.version != u.version {
        return Err(WireError::invalid(
            "version",
            format!("{} but the weights say version {}", u.version, w.version),
        ));
    }
    Ok(w)
}

#[cfg(test)]
mod tests {
    use super::*;
    use peergrid_core::observation::OBS_DIM;
    use peergrid_core::policy::weights::to_safetensors;
    use peergrid_core::policy::{ActorCritic, MlpSpec, ObsNormaliser};

    type Defect = Box<dyn Fn(&mut pb::ExperienceBatch)>;

    fn batch() -> pb::ExperienceBatch {
        let (t, p) = (2usize, 3usize);
        let n = t * p;
        pb::ExperienceBatch {
            node_name: "node-a".into(),
            policy_version: 4,
            first_slot: 10,
            steps: t as u32,
            prosumer_ids: vec![5, 6, 9],
            observations: vec![0.25; n * OBS_DIM],
            actions: vec![0.5; n * 3],
            log_probs: vec![-2.0; n],
            values: vec![1.0; n],
            rewards: vec![-0.5; n],
            dones: vec![false; n],
            bootstrap_values: vec![0.0; p],
            costs: vec![0.1; n],
            grid_import_kwh: vec![0.3; n],
        }
    }

    #[test]
    fn a_batch_round_trips() {
        let r = rollout_from_wire(batch()).unwrap();
        assert_eq!((r.steps, r.n_prosumers(), r.policy_version), (2, 3, 4));
        assert_eq!(pb::ExperienceBatch::from(&r), batch());
    }

    #[test]
    fn bad_batches_name_the_field() {
        let cases: Vec<(Defect, &str)> = vec![
            (Box::new(|b| b.node_name.clear()), "node_name"),
            (Box::new(|b| b.policy_version = 0), "policy_version"),
            (Box::new(|b| b.observations.truncate(3)), "observations"),
            (Box::new(|b| b.rewards[2] = f32::NAN), "rewards[2]"),
            (Box::new(|b| b.rewards.fill(3e38)), "rewards[0]"),
            (Box::new(|b| b.observations[30] = 3e38), "observations[30]"),
            (Box::new(|b| b.prosumer_ids = vec![5, 5, 6]), "prosumer_ids[1]"),
            (Box::new(|b| b.steps = 0), "steps"),
        ];
        for (defect, field) in cases {
            let mut b = batch();
            defect(&mut b);
            match rollout_from_wire(b) {
                Err(WireError::InvalidArgument { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{field}: {other:?}"),
            }
        }
    }

    #[test]
    fn rollout_starts_round_trip_and_bad_ones_name_the_field() {
        let good = pb::RolloutStart {
            node_name: "node-a".into(),
            policy_version: 3,
            first_slot: 40,
            end_slot: 48,
        };
        let s = rollout_start_from_wire(good.clone()).unwrap();
        assert_eq!((s.policy_version, s.first_slot, s.end_slot), (3, 40, 48));
        assert_eq!(pb::RolloutStart::from(&s), good);
        let cases: Vec<(pb::RolloutStart, &str)> = vec![
            (pb::RolloutStart { node_name: String::new(), ..good.clone() }, "node_name"),
            (pb::RolloutStart { policy_version: 0, ..good.clone() }, "policy_version"),
            (pb::RolloutStart { end_slot: 40, ..good.clone() }, "end_slot"),
            (pb::RolloutStart { end_slot: 39, ..good.clone() }, "end_slot"),
            (pb::RolloutStart { end_slot: 100_041, ..good.clone() }, "end_slot"),
            (pb::RolloutStart { first_slot: u64::MAX, end_slot: 1, ..good.clone() }, "end_slot"),
        ];
        for (m, field) in cases {
            match rollout_start_from_wire(m.clone()) {
                Err(WireError::InvalidArgument { field: f, .. }) => assert_eq!(f, field, "{m:?}"),
                other => panic!("{field}: {other:?}"),
            }
        }
    }

    #[test]
    fn policy_updates_check_digest_and_version() {
        let spec = MlpSpec::default();
        let w = PolicyWeights {
            net: ActorCritic::random(&spec, 3),
            normaliser: ObsNormaliser::identity(OBS_DIM),
            version: 7,
        };
        let u = policy_update_from_blob(w.version, to_safetensors(&w).unwrap());
        assert_eq!(policy_from_wire(&u).unwrap(), w);
        let mut tampered = u.clone();
        tampered.weights[100] ^= 1;
        assert!(
            matches!(policy_from_wire(&tampered), Err(WireError::InvalidArgument { field, .. }) if field == "sha256")
        );
        let mut relabelled = u;
        relabelled.version = 8;
        assert!(
            matches!(policy_from_wire(&relabelled), Err(WireError::InvalidArgument { field, .. }) if field == "version")
        );
    }
}
