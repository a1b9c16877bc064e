//! Baseline policies every learned policy is compared against.
//!
//! - [`GridOnly`]: the battery idles and nothing is traded P2P; every
//!   residual goes to the grid. The reference point for "savings".
//! - [`RuleBased`]: the classic self-consumption heuristic: charge from PV
//!   surplus, discharge to cover a deficit, then offer the remaining surplus
//!   or bid for the remaining deficit P2P at the tariff midpoint.

use super::{Action, Policy};
use crate::observation::Observation;
use crate::units::ProsumerId;

/// The battery idles and nothing is traded P2P: the reference for savings.
#[derive(Clone, Copy, Debug, Default)]
pub struct GridOnly;

impl Policy for GridOnly {
    fn name(&self) -> &str {
        "grid-only"
    }

    fn act(&mut self, _: ProsumerId, _: &Observation) -> Action {
        Action { battery: 0.0, quantity: -1.0, price: 0.0 }
    }
}

/// Self-consumption: battery follows the PV surplus or deficit, the rest is offered P2P at the tariff midpoint.
#[derive(Clone, Copy, Debug, Default)]
pub struct RuleBased;

impl Policy for RuleBased {
    fn name(&self) -> &str {
        "rule-based"
    }

    fn act(&mut self, _: ProsumerId, obs: &Observation) -> Action {
        RuleBased::action(obs)
    }
}

impl RuleBased {
    /// The rule's action for `obs` (it keeps no state).
    pub fn action(obs: &Observation) -> Action {
        let net_kw = obs.net_load_kwh() / obs.ctx.hours;
        // Express the wanted set-point as a fraction of the feasible range so
        // the safety filter maps it back exactly.
        let battery = if net_kw < 0.0 && obs.setpoint_max_kw > 0.0 {
            (-net_kw / obs.setpoint_max_kw).min(1.0)
        } else if net_kw > 0.0 && obs.setpoint_min_kw < 0.0 {
            -(net_kw / -obs.setpoint_min_kw).min(1.0)
        } else {
            0.0
        };
        Action { battery: battery as f32, quantity: 1.0, price: 0.0 }
    }
}
