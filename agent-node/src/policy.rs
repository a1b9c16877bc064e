//! The policy each prosumer actor runs, and loading it from the config.
//!
//! [`PolicySource`] is loaded once per node; [`PolicySource::instance`] hands
//! every actor its own [`ActorPolicy`]. An MLP is the core's [`MlpPolicy`]
//! over one [`MlpModel`] shared through an `Arc` (a 64×64 actor-critic is
//! ~40 KB; copying it into 10,000 actors would cost 400 MB), while each actor
//! keeps its own generator, scratch buffers and step record, so actors never
//! contend. Acting through the very type the reference simulator uses is
//! what makes the numbers the same (tested below).
//!
//! Weights file: a `.safetensors` policy, the trainer's format
//! (`peergrid_core::policy::weights`), run as the deterministic Gaussian mean.
//!
//! While learning ([`PolicySource::Learning`]), each actor samples from the
//! trainer's current version with its own generator, seeded by (`seed`, its
//! prosumer id), and remembers the step ([`MlpPolicy::last`]); the node swaps
//! in new versions between slots ([`ActorPolicy::set_model`]), and the
//! generator carries on across them.
//!
//! With a remote policy ([`PolicySource::Remote`]) the actions come from an
//! external service once per slot (`remote.rs`) and are handed to the
//! actors with the slot; each actor's own policy is the rule-based
//! baseline, played for any slot the service does not answer usably.

use std::path::Path;
use std::sync::Arc;

use peergrid_core::observation::Observation;
use peergrid_core::policy::{Action, GridOnly, MlpModel, MlpPolicy, Policy, RuleBased};
use peergrid_core::rng::derive_seed;
use peergrid_core::units::ProsumerId;

use crate::config::PolicyChoice;
use crate::error::AgentError;

/// Loads a `.safetensors` policy (the trainer's format, see
/// `peergrid_core::policy::weights`); every error names the `policy` field.
pub fn load_model(path: &Path) -> Result<MlpModel, AgentError> {
    let bad = |e: String| AgentError::config("policy", format!("{}: {e}", path.display()));
    if path.extension().is_none_or(|e| e != "safetensors") {
        return Err(bad("must be a .safetensors policy (the trainer's format)".into()));
    }
    let bytes = std::fs::read(path).map_err(|e| bad(format!("cannot read: {e}")))?;
    let w =
        peergrid_core::policy::weights::from_safetensors(&bytes).map_err(|e| bad(e.to_string()))?;
    MlpModel::new(w.net, w.normaliser).map_err(|e| bad(e.to_string()))
}

/// A policy version received from the trainer.
#[derive(Clone, Debug)]
pub struct Learned {
    pub model: Arc<MlpModel>,
    pub version: u64,
}

/// The node's policy, loaded once.
#[derive(Clone, Debug)]
pub enum PolicySource {
    GridOnly,
    RuleBased,
    Mlp(Arc<MlpModel>),
    /// Sample from the trainer's policy and record experience; each actor's
    /// generator is seeded by (`seed`, its prosumer id).
    Learning {
        learned: Learned,
        seed: u64,
    },
    /// Actions from an external policy service (`remote.rs`); the actors'
    /// own policy is the rule-based fallback.
    Remote,
}

impl PolicySource {
    pub fn load(choice: &PolicyChoice) -> Result<PolicySource, AgentError> {
        Ok(match choice {
            PolicyChoice::GridOnly => PolicySource::GridOnly,
            PolicyChoice::RuleBased => PolicySource::RuleBased,
            PolicyChoice::Weights(path) => PolicySource::Mlp(Arc::new(load_model(path)?)),
            PolicyChoice::Remote(_) => PolicySource::Remote,
        })
    }

    /// A policy instance for the actor of prosumer `id`.
    pub fn instance(&self, id: ProsumerId) -> ActorPolicy {
        match self {
            PolicySource::GridOnly => ActorPolicy::GridOnly(GridOnly),
            PolicySource::RuleBased | PolicySource::Remote => ActorPolicy::RuleBased(RuleBased),
            PolicySource::Mlp(model) => {
                ActorPolicy::Mlp(Box::new(MlpPolicy::deterministic(Arc::clone(model))))
            }
            PolicySource::Learning { learned, seed } => {
                ActorPolicy::Learning(Box::new(MlpPolicy::sampling(
                    Arc::clone(&learned.model),
                    derive_seed(*seed, &format!("actor-{id}")),
                )))
            }
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            PolicySource::GridOnly => "grid-only",
            PolicySource::RuleBased => "rule-based",
            PolicySource::Mlp(_) => "mlp",
            PolicySource::Learning { .. } => "learning",
            PolicySource::Remote => "remote (rule-based fallback)",
        }
    }
}

/// One actor's policy. The MLP variants are boxed: an [`MlpPolicy`] carries
/// its step record, and baseline actors should not pay for it.
#[derive(Debug)]
pub enum ActorPolicy {
    GridOnly(GridOnly),
    RuleBased(RuleBased),
    /// The deterministic Gaussian mean of a loaded policy.
    Mlp(Box<MlpPolicy>),
    /// Sampling from the trainer's current version.
    Learning(Box<MlpPolicy>),
}

impl ActorPolicy {
    /// Learning: act with `learned` from the next slot on (the generator
    /// keeps its state). Other policies ignore it.
    pub fn set_model(&mut self, learned: &Learned) {
        if let ActorPolicy::Learning(p) = self {
            p.set_model(Arc::clone(&learned.model));
        }
    }

    /// Learning: V(obs) under the current version, for bootstrapping a
    /// rollout; 0 for the other policies.
    pub fn value_of(&mut self, obs: &Observation) -> f32 {
        match self {
            ActorPolicy::Learning(p) => p.value_of(obs),
            _ => 0.0,
        }
    }
}

impl Policy for ActorPolicy {
    fn name(&self) -> &str {
        match self {
            ActorPolicy::GridOnly(p) => p.name(),
            ActorPolicy::RuleBased(p) => p.name(),
            ActorPolicy::Mlp(p) => p.name(),
            ActorPolicy::Learning(_) => "learning",
        }
    }

    fn act(&mut self, prosumer: ProsumerId, obs: &Observation) -> Action {
        match self {
            ActorPolicy::GridOnly(p) => p.act(prosumer, obs),
            ActorPolicy::RuleBased(p) => p.act(prosumer, obs),
            ActorPolicy::Mlp(p) | ActorPolicy::Learning(p) => p.act(prosumer, obs),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{contexts, small_community};
    use peergrid_core::household::{Conditions, Household};
    use peergrid_core::observation::OBS_DIM;
    use peergrid_core::policy::weights::{to_safetensors, PolicyWeights};
    use peergrid_core::policy::{ActorCritic, MlpSpec, ObsNormaliser};

    /// A random network with a normaliser that is not the identity.
    fn weights(seed: u64) -> PolicyWeights {
        let spec = MlpSpec::default();
        let mut normaliser = ObsNormaliser::identity(spec.obs_dim);
        normaliser.mean[0] = 0.5;
        normaliser.var[0] = 2.0;
        PolicyWeights { net: ActorCritic::random(&spec, seed), normaliser, version: seed }
    }

    fn learned(seed: u64) -> Learned {
        let w = weights(seed);
        Learned { model: Arc::new(MlpModel::new(w.net, w.normaliser).unwrap()), version: seed }
    }

    #[test]
    fn shared_mlp_acts_exactly_like_mlp_policy() {
        let w = weights(11);
        let model = Arc::new(MlpModel::new(w.net.clone(), w.normaliser.clone()).unwrap());
        let mut reference = MlpPolicy::new(w.net, w.normaliser).unwrap();
        let (ds, specs) = small_community(6, 4);
        let ctxs = contexts(&ds, 30);
        for spec in specs {
            let mut a = Household::new(spec.clone(), ctxs[0].hour);
            let mut b = Household::new(spec, ctxs[0].hour);
            let mut ours = PolicySource::Mlp(Arc::clone(&model)).instance(0);
            for ctx in &ctxs {
                let ra = a.play(&ds, ctx, Conditions::default(), &mut reference);
                let rb = b.play(&ds, ctx, Conditions::default(), &mut ours);
                assert_eq!(ra, rb);
            }
        }
    }

    /// Each learning actor samples exactly as an owned `MlpPolicy` seeded by
    /// `derive_seed(seed, "actor-{id}")`, step records and bootstrap values
    /// included, and a version swap halfway keeps the generator's stream.
    #[test]
    fn learning_actors_sample_exactly_like_seeded_mlp_policies_across_a_swap() {
        let (first, second) = (learned(3), learned(4));
        let source = PolicySource::Learning { learned: first.clone(), seed: 77 };
        let (ds, specs) = small_community(6, 4);
        let ctxs = contexts(&ds, 40);
        for spec in specs {
            let id = spec.id;
            let w = weights(3);
            let mut reference = MlpPolicy::new(w.net, w.normaliser)
                .unwrap()
                .stochastic(derive_seed(77, &format!("actor-{id}")));
            let mut ours = source.instance(id);
            let mut a = Household::new(spec.clone(), ctxs[0].hour);
            let mut b = Household::new(spec, ctxs[0].hour);
            for (slot, ctx) in ctxs.iter().enumerate() {
                if slot == ctxs.len() / 2 {
                    let w = weights(4);
                    reference.set_model(Arc::new(MlpModel::new(w.net, w.normaliser).unwrap()));
                    ours.set_model(&second);
                }
                let ra = a.play(&ds, ctx, Conditions::default(), &mut reference);
                let rb = b.play(&ds, ctx, Conditions::default(), &mut ours);
                assert_eq!(ra, rb, "prosumer {id}, slot {slot}");
                let ActorPolicy::Learning(p) = &mut ours else { panic!("a learning actor") };
                assert_eq!(p.last(), reference.last(), "prosumer {id}, slot {slot}");
                let obs = a.clone().prepare(&ds, ctx, Conditions::default()).obs;
                assert_eq!(ours.value_of(&obs), reference.value_of(&obs));
            }
        }
    }

    #[test]
    fn set_model_leaves_other_policies_alone() {
        let w = weights(5);
        let model = Arc::new(MlpModel::new(w.net, w.normaliser).unwrap());
        let mut p = PolicySource::Mlp(Arc::clone(&model)).instance(1);
        p.set_model(&learned(6));
        let ActorPolicy::Mlp(p) = p else { panic!("an MLP actor") };
        assert!(Arc::ptr_eq(p.model(), &model));
    }

    #[test]
    fn bad_weights_files_name_the_policy_field() {
        let dir =
            std::env::temp_dir().join(format!("peergrid-agent-policy-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let load = |path: &Path| PolicySource::load(&PolicyChoice::Weights(path.to_path_buf()));
        let policy_field =
            |e: &AgentError| matches!(e, AgentError::Config { field, .. } if field == "policy");
        // The trainer's safetensors format loads to the same network.
        let st = dir.join("policy.safetensors");
        let w = weights(1);
        std::fs::write(&st, to_safetensors(&w).unwrap()).unwrap();
        let PolicySource::Mlp(model) = load(&st).unwrap() else { panic!("an MLP") };
        assert_eq!((model.net(), model.normaliser()), (&w.net, &w.normaliser));
        std::fs::write(&st, b"garbage").unwrap();
        let e = load(&st).unwrap_err();
        assert!(policy_field(&e) && e.to_string().contains("safetensors"), "{e}");
        // A network that does not fit the observations.
        let spec = MlpSpec { obs_dim: 5, ..MlpSpec::default() };
        let narrow = PolicyWeights {
            net: ActorCritic::random(&spec, 1),
            normaliser: ObsNormaliser::identity(5),
            version: 1,
        };
        std::fs::write(&st, to_safetensors(&narrow).unwrap()).unwrap();
        let e = load(&st).unwrap_err();
        assert!(policy_field(&e) && e.to_string().contains(&format!("obs_dim {OBS_DIM}")), "{e}");
        // Anything but safetensors (the JSON weights format is gone).
        let json = dir.join("w.json");
        std::fs::write(&json, "{}").unwrap();
        let e = load(&json).unwrap_err();
        assert!(policy_field(&e) && e.to_string().contains(".safetensors"), "{e}");
        let e = load(&dir.join("missing.safetensors")).unwrap_err();
        assert!(policy_field(&e) && e.to_string().contains("missing.safetensors"), "{e}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
