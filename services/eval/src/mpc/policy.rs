//! The MPC controller's decision for the slot being played: the first slot
//! of the latest plan, as raw actions the safety filter maps back onto it.

use peergrid_core::observation::Observation;
use peergrid_core::policy::{Action, Policy, RuleBased};
use peergrid_core::units::ProsumerId;

use crate::optimum::replay::steer_to;
use crate::optimum::OptimumPlan;

/// Follows the first slot of a plan; [`MpcPolicy::fall_back`] plays the
/// rule-based action instead for a slot without one.
pub(super) struct MpcPolicy {
    /// Per household: planned stored energy at the end of this slot, `None`
    /// without a battery to steer.
    target_kwh: Vec<Option<f64>>,
    one_way_efficiency: Vec<f64>,
    trade: bool,
    fallback: bool,
}

impl MpcPolicy {
    pub(super) fn new(households: usize) -> MpcPolicy {
        MpcPolicy {
            target_kwh: vec![None; households],
            one_way_efficiency: vec![1.0; households],
            trade: false,
            fallback: true,
        }
    }

    /// Act on the first slot of `plan` (a window starting at this slot).
    pub(super) fn follow(&mut self, plan: &OptimumPlan) {
        for (i, h) in plan.households.iter().enumerate() {
            self.target_kwh[i] = h.battery_available[0].then_some(h.stored_kwh[0]);
            self.one_way_efficiency[i] = h.one_way_efficiency.unwrap_or(1.0);
        }
        self.trade = plan.p2p_kwh[0] > 1e-6;
        self.fallback = false;
    }

    /// Play the rule-based action this slot.
    pub(super) fn fall_back(&mut self) {
        self.fallback = true;
    }
}

impl Policy for MpcPolicy {
    fn name(&self) -> &str {
        super::MPC
    }

    fn act(&mut self, prosumer: ProsumerId, obs: &Observation) -> Action {
        if self.fallback {
            return RuleBased::action(obs);
        }
        let i = prosumer as usize;
        steer_to(self.target_kwh[i], self.one_way_efficiency[i], self.trade, obs)
    }
}
