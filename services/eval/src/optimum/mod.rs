//! The perfect-foresight optimum: the cheapest the whole community could
//! have done over an evaluation horizon, knowing every load and PV value in
//! advance, as one linear program.
//!
//! [`solve_optimum`] builds the LP of [`model`] from the same dataset,
//! community, settings and slot schedule the reference simulator plays and
//! solves it with Clarabel (through `good_lp`). The resulting
//! [`OptimumPlan`] holds every household's battery flows, stored energy and
//! position per slot and the community's P2P volume.
//! [`OptimumPlan::settle`] turns it into the same [`Kpis`] and per-slot
//! [`SlotRecord`]s as a simulated policy, through the core's own settlement,
//! feeder, reward and KPI code, so the optimum sits in the same table. Its
//! community cost is the LP's optimum ([`LpSummary::lower_bound_cost`]): no
//! policy can pay less (see [`model`] for why, and for what the LP relaxes).
//!
//! [`OptimumPlan::policy`] replays the plan in the reference simulator as an
//! ordinary policy. That is how the tests check the LP models the simulator
//! faithfully: the replay pays what the LP promised, up to whole-Wh order
//! rounding, whenever energy never has negative value (no binding feeder
//! export limit).
//!
//! This module never reads a clock.

pub(crate) mod input;
pub(crate) mod model;
pub(crate) mod replay;
mod settle;
#[cfg(test)]
mod tests;

use std::collections::HashSet;

use peergrid_core::data::Dataset;
use peergrid_core::prosumer::ProsumerSpec;
use peergrid_core::simulation::SimConfig;
#[cfg(doc)]
use peergrid_core::{kpi::Kpis, simulation::SlotRecord};
use serde::{Deserialize, Serialize};

pub use replay::PlanPolicy;
pub use settle::SettledOptimum;

use crate::error::EvalError;

/// What the LP found, besides the plan (deterministic: no timings).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LpSummary {
    /// The LP's community cost: grid import cost − export revenue + battery
    /// degradation + feeder overload penalties. A lower bound on the
    /// community cost of every policy that delivers the EVs' departure
    /// energy (which the safety filter enforces), up to the solver's
    /// 1e-8 relative tolerance.
    pub lower_bound_cost: f64,
    /// Households whose battery (home or EV) the LP schedules.
    pub battery_households: usize,
    pub slots: usize,
    pub variables: usize,
    /// Rows besides the variables' bounds.
    pub constraints: usize,
    /// EV energy the LP could not deliver at departure or for a trip, kWh:
    /// 0 unless a configured EV cannot physically charge in time.
    pub ev_shortfall_kwh: f64,
    /// Clarabel's verdict, e.g. `Solved`.
    pub solver_status: String,
    pub solver_iterations: u32,
}

/// One household's optimal schedule; every vector has one value per
/// schedule slot, energies in kWh.
#[derive(Clone, Debug, PartialEq)]
pub struct HouseholdPlan {
    /// Drawn from the household bus to charge the battery.
    pub charge_kwh: Vec<f64>,
    /// Delivered to the bus by the battery.
    pub discharge_kwh: Vec<f64>,
    /// Stored at the end of the slot (0 without a battery).
    pub stored_kwh: Vec<f64>,
    /// Whether the battery could be used (false without one, or for an EV away).
    pub battery_available: Vec<bool>,
    /// Position after the battery (load − PV + charge − discharge), split
    /// into what it needs and what it has to spare.
    pub deficit_kwh: Vec<f64>,
    pub surplus_kwh: Vec<f64>,
    /// EV energy missing at a departure or for a trip, in that slot.
    pub ev_shortfall_kwh: Vec<f64>,
    /// √η of the battery; `None` without one.
    pub one_way_efficiency: Option<f64>,
}

/// The optimal schedule of the whole community.
#[derive(Clone, Debug, PartialEq)]
pub struct OptimumPlan {
    /// The schedule the plan is for: the dataset slot of each position.
    pub slots: Vec<usize>,
    /// One per prosumer, in id order.
    pub households: Vec<HouseholdPlan>,
    /// Energy traded P2P (delivered by sellers) per slot, kWh.
    pub p2p_kwh: Vec<f64>,
    pub summary: LpSummary,
}

impl OptimumPlan {
    /// A policy that plays this plan in the reference simulator.
    pub fn policy(&self) -> PlanPolicy {
        PlanPolicy::new(self)
    }
}

/// Solves the perfect-foresight LP for `prosumers` on dataset `ds` over the
/// dataset slots `slots` (played in that order, as the simulator plays a
/// schedule), under `cfg`.
pub fn solve_optimum(
    ds: &Dataset,
    prosumers: &[ProsumerSpec],
    cfg: &SimConfig,
    slots: &[usize],
) -> Result<OptimumPlan, EvalError> {
    validate(ds, prosumers, cfg, slots)?;
    model::build(input::LpInput::perfect_foresight(ds, prosumers, cfg, slots)).solve()
}

/// The same checks as `Simulation::new`, plus distinct slots (a plan is
/// keyed by dataset slot).
fn validate(
    ds: &Dataset,
    prosumers: &[ProsumerSpec],
    cfg: &SimConfig,
    slots: &[usize],
) -> Result<(), EvalError> {
    cfg.validate()?;
    if slots.is_empty() {
        return Err(EvalError::invalid("schedule", "needs at least one slot"));
    }
    let mut seen = HashSet::with_capacity(slots.len());
    for &t in slots {
        if t >= ds.n_slots() {
            return Err(EvalError::invalid(
                "schedule",
                format!("slot {t} is beyond the dataset's {} slots", ds.n_slots()),
            ));
        }
        if !seen.insert(t) {
            return Err(EvalError::invalid("schedule", format!("slot {t} appears twice")));
        }
    }
    for (i, p) in prosumers.iter().enumerate() {
        p.validate(ds)?;
        if p.id as usize != i {
            return Err(EvalError::invalid(
                format!("prosumers[{i}].id"),
                format!("ids must be 0..n in order, got {}", p.id),
            ));
        }
    }
    Ok(())
}
