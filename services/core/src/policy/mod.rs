//! Policies: what maps an [`Observation`] to a raw [`Action`].
//!
//! A policy only proposes; the safety filter (`crate::safety`) turns the raw
//! action into something physically feasible. Baselines live in
//! `baselines.rs`, the pure-Rust MLP forward pass shared with the trainer in
//! `mlp.rs`; what an agent-node exchanges with an external policy service
//! in `remote.rs`.

pub mod baselines;
pub mod mlp;
pub mod remote;
pub mod weights;

use serde::{Deserialize, Serialize};

use crate::observation::Observation;
use crate::units::ProsumerId;

pub use baselines::{GridOnly, RuleBased};
pub use mlp::{ActionPrior, ActorCritic, Mlp, MlpModel, MlpPolicy, MlpSpec, ObsNormaliser, StepRecord};

/// Number of action components.
pub const ACT_DIM: usize = 3;

/// A raw action; each component is meant to lie in [-1, 1] (the safety
/// filter clamps anything else, including NaN, deterministically).
///
/// - `battery`: set-point as a fraction of the feasible range: −1 = discharge
///   as fast as allowed, 0 = idle, +1 = charge as fast as allowed.
/// - `quantity`: share of the post-battery position offered P2P:
///   −1 = nothing, +1 = all of it (the side follows the sign of the position).
/// - `price`: limit price between feed-in (−1) and retail (+1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Action {
    pub battery: f32,
    pub quantity: f32,
    pub price: f32,
}

impl Action {
    pub fn from_array(a: [f32; ACT_DIM]) -> Action {
        Action { battery: a[0], quantity: a[1], price: a[2] }
    }

    pub fn to_array(self) -> [f32; ACT_DIM] {
        [self.battery, self.quantity, self.price]
    }
}

/// A decision rule for prosumers. `&mut self` lets stochastic policies keep
/// their seeded generator.
pub trait Policy {
    fn name(&self) -> &str;
    fn act(&mut self, prosumer: ProsumerId, obs: &Observation) -> Action;
}

/// Which policy to use, by name (for CLIs and configs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PolicyKind {
    GridOnly,
    RuleBased,
    Mlp,
}

impl PolicyKind {
    pub fn name(self) -> &'static str {
        match self {
            PolicyKind::GridOnly => "grid-only",
            PolicyKind::RuleBased => "rule-based",
            PolicyKind::Mlp => "mlp",
        }
    }
}
