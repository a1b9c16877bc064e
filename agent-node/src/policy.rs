//! The policy each prosumer actor runs, and loading it from the config.
//!
//! [`PolicySource`] is loaded once per node; [`PolicySource::instance`] hands
//! every actor its own [`ActorPolicy`]. The MLP's weights are shared through
//! an `Arc` (a 64×64 actor-critic is ~40 KB; copying it into 10,000 actors
//! would cost 400 MB), while each actor keeps its own scratch buffers, so
//! actors never contend. The forward pass is exactly
//! [`MlpPolicy`]'s deterministic path (features → normaliser → actor mean):
//! the same numbers as the reference simulator (tested below).
//!
//! Weights file: a `.safetensors` policy (`peergrid_core::policy::weights`) or
//! JSON `{"spec": MlpSpec, "weights": [f32...], "normaliser": ObsNormaliser}`
//! in the flat layout of `peergrid_core::policy::mlp`.
//!
//! While learning ([`PolicySource::Learning`]), each actor samples from the
//! trainer's current version with its own seeded generator and remembers
//! the step ([`LearningPolicy::last`]); the node swaps in new versions
//! between slots.

use std::path::Path;
use std::sync::Arc;

use peergrid_core::observation::{Observation, OBS_DIM};
use peergrid_core::policy::mlp::Scratch;
use peergrid_core::policy::weights::PolicyWeights;
use peergrid_core::policy::{
    Action, ActorCritic, GridOnly, MlpPolicy, MlpSpec, ObsNormaliser, Policy, RuleBased, StepRecord, ACT_DIM,
};
use peergrid_core::rng::{derive_seed, SeededRng};
use peergrid_core::units::ProsumerId;
use serde::{Deserialize, Serialize};

use crate::config::PolicyChoice;
use crate::error::AgentError;

/// The on-disk weights format.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeightsFile {
    pub spec: MlpSpec,
    pub weights: Vec<f32>,
    pub normaliser: ObsNormaliser,
}

/// A validated network and its observation normaliser, shared by all actors.
#[derive(Debug)]
pub struct MlpModel {
    net: ActorCritic,
    normaliser: ObsNormaliser,
}

impl MlpModel {
    /// Validates the weights against the spec and the observation layout.
    pub fn new(file: WeightsFile) -> Result<MlpModel, AgentError> {
        let net = ActorCritic::from_flat(&file.spec, &file.weights)?;
        // MlpPolicy::new checks obs/act dims and the normaliser.
        let checked = MlpPolicy::new(net, file.normaliser)?;
        Ok(MlpModel { net: checked.net, normaliser: checked.normaliser })
    }

    /// Loads a `.safetensors` policy (the trainer's format, see
    /// `peergrid_core::policy::weights`) or a JSON weights file.
    pub fn load(path: &Path) -> Result<MlpModel, AgentError> {
        if path.extension().is_some_and(|e| e == "safetensors") {
            let bytes =
                std::fs::read(path).map_err(|e| AgentError::config("policy", format!("cannot read {}: {e}", path.display())))?;
            let w = peergrid_core::policy::weights::from_safetensors(&bytes)
                .map_err(|e| AgentError::config("policy", format!("{}: {e}", path.display())))?;
            let file = WeightsFile { spec: w.net.spec.clone(), weights: w.net.to_flat(), normaliser: w.normaliser };
            return MlpModel::new(file).map_err(|e| AgentError::config("policy", format!("{}: {e}", path.display())));
        }
        let text = std::fs::read_to_string(path)
            .map_err(|e| AgentError::config("policy", format!("cannot read {}: {e}", path.display())))?;
        let file: WeightsFile =
            serde_json::from_str(&text).map_err(|e| AgentError::config("policy", format!("{}: {e}", path.display())))?;
        MlpModel::new(file).map_err(|e| AgentError::config("policy", format!("{}: {e}", path.display())))
    }
}

impl MlpModel {
    /// A model from a policy the trainer published.
    pub fn from_weights(w: PolicyWeights) -> Result<MlpModel, AgentError> {
        let checked = MlpPolicy::new(w.net, w.normaliser)?;
        Ok(MlpModel { net: checked.net, normaliser: checked.normaliser })
    }
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
}

impl PolicySource {
    pub fn load(choice: &PolicyChoice) -> Result<PolicySource, AgentError> {
        Ok(match choice {
            PolicyChoice::GridOnly => PolicySource::GridOnly,
            PolicyChoice::RuleBased => PolicySource::RuleBased,
            PolicyChoice::Weights(path) => PolicySource::Mlp(Arc::new(MlpModel::load(path)?)),
        })
    }

    /// A policy instance for the actor of prosumer `id`.
    pub fn instance(&self, id: ProsumerId) -> ActorPolicy {
        match self {
            PolicySource::GridOnly => ActorPolicy::GridOnly(GridOnly),
            PolicySource::RuleBased => ActorPolicy::RuleBased(RuleBased),
            PolicySource::Mlp(model) => ActorPolicy::Mlp { model: Arc::clone(model), scratch: Scratch::default() },
            PolicySource::Learning { learned, seed } => ActorPolicy::Learning(Box::new(LearningPolicy {
                learned: learned.clone(),
                rng: SeededRng::new(derive_seed(*seed, &format!("actor-{id}"))),
                scratch: Scratch::default(),
                last: StepRecord::default(),
            })),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            PolicySource::GridOnly => "grid-only",
            PolicySource::RuleBased => "rule-based",
            PolicySource::Mlp(_) => "mlp",
            PolicySource::Learning { .. } => "learning",
        }
    }
}

/// An actor's sampling policy while learning: the shared model of the
/// current version, the actor's own generator, and the last step's record.
#[derive(Debug)]
pub struct LearningPolicy {
    pub learned: Learned,
    rng: SeededRng,
    scratch: Scratch,
    last: StepRecord,
}

impl LearningPolicy {
    /// What the last `act` did: raw features, sampled action, log-prob, value.
    pub fn last(&self) -> &StepRecord {
        &self.last
    }

    /// V(obs) under the current version, for bootstrapping a rollout.
    pub fn value_of(&mut self, obs: &Observation) -> f32 {
        let mut x = [0.0f32; OBS_DIM];
        obs.features(&mut x);
        self.learned.model.normaliser.apply(&mut x);
        self.learned.model.net.value(&x, &mut self.scratch)
    }

    fn act(&mut self, obs: &Observation) -> Action {
        let mut x = [0.0f32; OBS_DIM];
        obs.features(&mut x);
        self.last.features = x;
        let model = &self.learned.model;
        model.normaliser.apply(&mut x);
        let (a, log_prob, value) = model.net.sample(&x, &mut self.rng, &mut self.scratch);
        self.last.obs = x;
        self.last.action = a;
        self.last.log_prob = log_prob;
        self.last.value = value;
        model.net.spec.prior.compose(obs, a)
    }
}

/// One actor's policy.
#[derive(Debug)]
pub enum ActorPolicy {
    GridOnly(GridOnly),
    RuleBased(RuleBased),
    Mlp { model: Arc<MlpModel>, scratch: Scratch },
    Learning(Box<LearningPolicy>),
}

impl Policy for ActorPolicy {
    fn name(&self) -> &str {
        match self {
            ActorPolicy::GridOnly(p) => p.name(),
            ActorPolicy::RuleBased(p) => p.name(),
            ActorPolicy::Mlp { .. } => "mlp",
            ActorPolicy::Learning(_) => "learning",
        }
    }

    fn act(&mut self, prosumer: ProsumerId, obs: &Observation) -> Action {
        match self {
            ActorPolicy::GridOnly(p) => p.act(prosumer, obs),
            ActorPolicy::RuleBased(p) => p.act(prosumer, obs),
            ActorPolicy::Mlp { model, scratch } => {
                // MlpPolicy::act without a sampler, on shared weights.
                let mut x = [0.0f32; OBS_DIM];
                obs.features(&mut x);
                model.normaliser.apply(&mut x);
                let mut mean = [0.0f32; ACT_DIM];
                model.net.mean(&x, scratch, &mut mean);
                model.net.spec.prior.compose(obs, mean)
            }
            ActorPolicy::Learning(p) => p.act(obs),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{contexts, small_community};
    use peergrid_core::household::{Conditions, Household};

    pub(crate) fn weights_file(seed: u64) -> WeightsFile {
        let spec = MlpSpec::default();
        let net = ActorCritic::random(&spec, seed);
        let mut normaliser = ObsNormaliser::identity(spec.obs_dim);
        normaliser.mean[0] = 0.5;
        normaliser.var[0] = 2.0;
        WeightsFile { weights: net.to_flat(), spec, normaliser }
    }

    #[test]
    fn shared_mlp_acts_exactly_like_mlp_policy() {
        let file = weights_file(11);
        let model = Arc::new(MlpModel::new(file.clone()).unwrap());
        let mut reference =
            MlpPolicy::new(ActorCritic::from_flat(&file.spec, &file.weights).unwrap(), file.normaliser.clone()).unwrap();
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

    #[test]
    fn bad_weights_files_name_the_policy_field() {
        let dir = std::env::temp_dir().join(format!("peergrid-agent-policy-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("w.json");
        let mut file = weights_file(1);
        std::fs::write(&path, serde_json::to_string(&file).unwrap()).unwrap();
        assert!(matches!(PolicySource::load(&PolicyChoice::Weights(path.clone())).unwrap(), PolicySource::Mlp(_)));
        // The trainer's safetensors format loads to the same network.
        let st = dir.join("policy.safetensors");
        let net = peergrid_core::policy::ActorCritic::from_flat(&file.spec, &file.weights).unwrap();
        let w = peergrid_core::policy::weights::PolicyWeights { net, normaliser: file.normaliser.clone(), version: 3 };
        std::fs::write(&st, peergrid_core::policy::weights::to_safetensors(&w).unwrap()).unwrap();
        let PolicySource::Mlp(a) = PolicySource::load(&PolicyChoice::Weights(st.clone())).unwrap() else { panic!("an MLP") };
        let PolicySource::Mlp(b) = PolicySource::load(&PolicyChoice::Weights(path.clone())).unwrap() else { panic!("an MLP") };
        assert_eq!(a.net, b.net);
        std::fs::write(&st, b"garbage").unwrap();
        assert!(PolicySource::load(&PolicyChoice::Weights(st)).unwrap_err().to_string().contains("safetensors"));
        file.weights.pop();
        std::fs::write(&path, serde_json::to_string(&file).unwrap()).unwrap();
        let e = PolicySource::load(&PolicyChoice::Weights(path.clone())).unwrap_err();
        assert!(matches!(&e, AgentError::Config { field, .. } if field == "policy"), "{e}");
        assert!(e.to_string().contains("weights"), "{e}");
        let e = PolicySource::load(&PolicyChoice::Weights(dir.join("missing.json"))).unwrap_err();
        assert!(e.to_string().contains("missing.json"), "{e}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
