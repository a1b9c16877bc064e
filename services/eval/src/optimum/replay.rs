//! Playing an [`OptimumPlan`] in the reference simulator.
//!
//! [`PlanPolicy`] steers each battery along the LP's stored-energy
//! trajectory: in every slot it asks for the set-point that brings the
//! battery from what it actually holds to what the plan holds at the end of
//! the slot, expressed as the raw action the safety filter maps onto it (a
//! fraction of the feasible range). Tracking the trajectory rather than
//! replaying the LP's set-points keeps rounding (f32 actions, whole-Wh
//! orders) from accumulating into SoC drift. In slots where the plan trades
//! it offers the whole position P2P at the tariff midpoint: every bid then
//! meets every ask, so the auction matches `min(deficit, surplus)`, the
//! volume the LP chose. The midpoint is only a price for the auction; P2P
//! payments cancel in the community cost.

use std::collections::HashMap;

use peergrid_core::observation::Observation;
use peergrid_core::policy::{Action, Policy};
use peergrid_core::units::ProsumerId;

use super::OptimumPlan;

/// The idle, no-trade action (what grid-only does).
const IDLE: Action = Action { battery: 0.0, quantity: -1.0, price: 0.0 };

#[derive(Clone, Debug)]
pub struct PlanPolicy {
    /// Per household and slot: planned stored energy at the end of the slot,
    /// `None` where there is no battery to steer.
    stored_kwh: Vec<Vec<Option<f64>>>,
    one_way_efficiency: Vec<f64>,
    trade: Vec<bool>,
    /// Dataset slot → position in the plan's schedule.
    position: HashMap<usize, usize>,
}

impl PlanPolicy {
    pub(super) fn new(plan: &OptimumPlan) -> PlanPolicy {
        PlanPolicy {
            stored_kwh: plan
                .households
                .iter()
                .map(|h| {
                    h.stored_kwh
                        .iter()
                        .zip(&h.battery_available)
                        .map(|(s, a)| a.then_some(*s))
                        .collect()
                })
                .collect(),
            one_way_efficiency: plan
                .households
                .iter()
                .map(|h| h.one_way_efficiency.unwrap_or(1.0))
                .collect(),
            trade: plan.p2p_kwh.iter().map(|p| *p > 1e-6).collect(),
            position: plan.slots.iter().enumerate().map(|(k, &t)| (t, k)).collect(),
        }
    }
}

impl Policy for PlanPolicy {
    fn name(&self) -> &str {
        "optimum"
    }

    /// Slots outside the plan's schedule get the idle action.
    fn act(&mut self, prosumer: ProsumerId, obs: &Observation) -> Action {
        let Some(&k) = self.position.get(&obs.ctx.data_slot) else {
            return IDLE;
        };
        let household = prosumer as usize;
        let target = self.stored_kwh.get(household).and_then(|row| row.get(k)).copied().flatten();
        steer_to(target, self.one_way_efficiency[household], self.trade[k], obs)
    }
}

/// The raw action that brings a battery (one-way efficiency `e`) from what
/// it holds now to `target_kwh` at the end of the slot (idle without a
/// target), offering the whole position P2P at the tariff midpoint when
/// `trade`.
pub(crate) fn steer_to(target_kwh: Option<f64>, e: f64, trade: bool, obs: &Observation) -> Action {
    let setpoint_kw = target_kwh.map_or(0.0, |target| {
        let delta = target - obs.soc * obs.battery_capacity_kwh;
        let bus_kwh = if delta >= 0.0 { delta / e } else { delta * e };
        bus_kwh / obs.ctx.hours
    });
    Action {
        battery: battery_fraction(setpoint_kw, obs.setpoint_min_kw, obs.setpoint_max_kw),
        quantity: if trade { 1.0 } else { -1.0 },
        price: 0.0,
    }
}

/// The raw battery action the safety filter maps to `setpoint_kw` within
/// `[min_kw, max_kw]`: `+a` spans `[0, max]`, `−a` spans `[min, 0]`.
fn battery_fraction(setpoint_kw: f64, min_kw: f64, max_kw: f64) -> f32 {
    let a = if setpoint_kw > 0.0 && max_kw > 0.0 {
        setpoint_kw / max_kw
    } else if setpoint_kw < 0.0 && min_kw < 0.0 {
        -setpoint_kw / min_kw
    } else {
        0.0
    };
    a.clamp(-1.0, 1.0) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fractions_map_back_onto_the_setpoint() {
        assert_eq!(battery_fraction(2.5, -5.0, 5.0), 0.5);
        assert_eq!(battery_fraction(-1.0, -4.0, 5.0), -0.25);
        assert_eq!(battery_fraction(9.0, -5.0, 5.0), 1.0);
        assert_eq!(battery_fraction(-1.0, 0.0, 5.0), 0.0);
        assert_eq!(battery_fraction(0.0, -5.0, 5.0), 0.0);
    }
}
