//! Policies: what maps an [`Observation`] to a raw [`Action`].
//!
//! A policy only proposes; the safety filter (`crate::safety`) turns the raw
//! action into something physically feasible. Baselines live in
//! `baselines.rs`; the pure-Rust network forward pass and weight layout
//! shared with the trainer in `network.rs`; the MLP as a policy (a shared,
//! validated model and the actor that runs it) in `mlp.rs`; the weight file
//! in `weights.rs`; what an agent-node exchanges with an external policy
//! service in `remote.rs`.

pub mod baselines;
pub mod mlp;
pub mod network;
pub mod remote;
pub mod weights;

use serde::{Deserialize, Serialize};

use crate::observation::Observation;
use crate::units::ProsumerId;

pub use baselines::{GridOnly, RuleBased};
pub use mlp::{ActionPrior, MlpModel, MlpPolicy, ObsNormaliser, StepRecord};
pub use network::{ActorCritic, Mlp, MlpSpec, Scratch};

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
    /// Battery set-point as a fraction of the feasible range.
    pub battery: f32,
    /// Share of the post-battery position offered P2P.
    pub quantity: f32,
    /// Limit price between feed-in (−1) and retail (+1).
    pub price: f32,
}

impl Action {
    /// The action `[battery, quantity, price]`.
    pub fn from_array(a: [f32; ACT_DIM]) -> Action {
        Action { battery: a[0], quantity: a[1], price: a[2] }
    }

    /// The action as `[battery, quantity, price]`, the network's output order.
    pub fn to_array(self) -> [f32; ACT_DIM] {
        [self.battery, self.quantity, self.price]
    }
}

/// A decision rule for prosumers. `&mut self` lets stochastic policies keep
/// their seeded generator.
pub trait Policy {
    /// The policy's name in reports (`grid-only`, `rule-based`, `mlp`, …).
    fn name(&self) -> &str;
    /// The raw action of `prosumer` for `obs` (the safety filter makes it feasible).
    fn act(&mut self, prosumer: ProsumerId, obs: &Observation) -> Action;
    /// Whether the policy decides a whole slot at once: then the simulator
    /// first hands it every prosumer's observation ([`begin_slot`](Self::begin_slot)),
    /// then asks [`act`](Self::act) for each. False by default.
    fn decides_per_slot(&self) -> bool {
        false
    }
    /// Every prosumer's observation of slot `slot` (the simulation's step
    /// number), in id order, before `act` is asked for each; only called
    /// when [`decides_per_slot`](Self::decides_per_slot).
    fn begin_slot(&mut self, _slot: u64, _observations: &[(ProsumerId, Observation)]) {}
}
