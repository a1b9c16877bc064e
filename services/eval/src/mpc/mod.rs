//! Model-predictive control: the realistic competitor of a learned policy.
//!
//! Every slot, [`run_mpc`] re-plans the whole community with the
//! perfect-foresight optimum's LP ([`crate::optimum`]'s model) over a
//! rolling window — the current slot and the next `H` hours (24 by
//! default) — built from what a controller knows then ([`window`]: measured
//! load and PV of the current slot, the core forecaster's values after it,
//! the tariff schedule, the batteries' current state). It applies only the
//! first slot's decision: each battery is steered to the plan's stored
//! energy at the end of the slot and, where the plan trades, the whole
//! position is offered P2P at the tariff midpoint, exactly as the optimum's
//! replay does. The decisions are played in the reference simulator
//! through the same safety filter, auction and settlement as every other
//! policy, so its KPIs are comparable with theirs; it differs from the
//! optimum only by its forecasts and its horizon.
//!
//! A window whose LP the solver cannot solve falls back, for that slot, to
//! the rule-based action (counted in [`MpcReport::fallback_slots`]).
//!
//! Solve times are measurements only: they go to the report's timings,
//! never into `kpis.json` and never into a decision.

mod policy;
#[cfg(test)]
mod tests;
mod window;

use std::time::{Duration, Instant};

use peergrid_core::evaluation::PolicyResult;
use peergrid_core::forecast::{ForecastConfig, SeriesShape};
use peergrid_core::observation::SlotContext;
use peergrid_core::policy::GridOnly;
use peergrid_core::simulation::Simulation;
use serde::Serialize;

use crate::compare::EvalScenario;
use crate::error::EvalError;
use crate::optimum::input::max_degradation_per_kwh;
use crate::optimum::model;

use policy::MpcPolicy;
use window::{peak_so_far_kw, window_input, Forecasts};

/// The name of the MPC row.
pub const MPC: &str = "mpc";

/// Above this many battery-household slots (of the schedule, not of one
/// window) `MpcMode::Auto` skips MPC: one LP per slot, each over a 25-slot
/// window, adds up (see the README for measured times).
pub const AUTO_MPC_MAX_BATTERY_SLOTS: usize = 40_000;

/// Whether to play the MPC baseline.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum MpcMode {
    /// Play it unless the schedule exceeds [`AUTO_MPC_MAX_BATTERY_SLOTS`].
    #[default]
    Auto,
    /// Always play it, however long it takes.
    On,
    Off,
}

/// How an evaluation runs the MPC baseline.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct MpcSettings {
    pub mode: MpcMode,
    /// The forecaster of the windows; its horizon is the window after the current slot.
    pub forecast: ForecastConfig,
}

impl MpcSettings {
    /// Whether MPC is turned off (then `kpis.json` says nothing about it).
    pub fn is_off(&self) -> bool {
        self.mode == MpcMode::Off
    }
}

/// What an MPC run did (deterministic: no timings).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MpcReport {
    /// The forecaster the windows were built with; its `horizon_hours` is
    /// the window after the current slot.
    pub forecast: ForecastConfig,
    /// Slots per window: the current one and the forecast ones.
    pub window_slots: usize,
    /// LPs solved (one per slot played).
    pub solves: usize,
    /// Slots whose LP failed and that played the rule-based action instead.
    pub fallback_slots: usize,
    /// Mean size of a window's LP.
    pub mean_variables: f64,
    /// Mean rows of a window's LP besides the variables' bounds.
    pub mean_constraints: f64,
    /// Mean Clarabel iterations per window.
    pub mean_iterations: f64,
}

/// An MPC run: its row, its report and how long its LPs took.
#[derive(Clone, Debug)]
pub struct MpcRun {
    pub row: PolicyResult,
    pub report: MpcReport,
    /// Wall-clock time spent building and solving the LPs, in total and
    /// for the slowest slot.
    pub solve_total: Duration,
    pub solve_max: Duration,
}

/// Plays the MPC controller on `scenario`, measuring savings against
/// `baseline_costs` (a grid-only run's per-household bills over the same
/// slots; `None` runs one).
pub fn run_mpc(
    scenario: &EvalScenario,
    forecast: &ForecastConfig,
    baseline_costs: Option<Vec<f64>>,
) -> Result<MpcRun, EvalError> {
    let (ds, prosumers, cfg) = (&scenario.ds, &scenario.prosumers, &scenario.sim);
    forecast.validate(ds)?;
    let slots = scenario.slots();
    let baseline = match baseline_costs {
        Some(costs) => costs,
        None => {
            let mut reference =
                Simulation::new(ds.clone(), prosumers.clone(), cfg.clone(), slots.clone())?;
            reference.run(&mut GridOnly);
            reference.household_costs().to_vec()
        }
    };
    // A measurement only: reported beside the KPIs, never an input to them.
    #[allow(clippy::disallowed_methods)]
    let started = Instant::now();
    let mut sim = Simulation::new(ds.clone(), prosumers.clone(), cfg.clone(), slots)?
        .with_slot_records()
        .with_baseline_costs(baseline)?;
    let mut controller = Controller::new(scenario, forecast);
    while let Some(ctx) = sim.context() {
        controller.plan(&sim, &ctx);
        sim.step(&mut controller.policy);
    }
    let Controller { mut report, solve_total, solve_max, .. } = controller;
    let solved = (report.solves - report.fallback_slots).max(1) as f64;
    report.mean_variables /= solved;
    report.mean_constraints /= solved;
    report.mean_iterations /= solved;
    let row = PolicyResult {
        policy: MPC.into(),
        kpis: sim.kpis(),
        records: sim.records().to_vec(),
        elapsed: started.elapsed(),
    };
    Ok(MpcRun { row, report, solve_total, solve_max })
}

/// The controller between slots: its forecaster, the decision it plays and
/// what it has counted so far.
struct Controller<'a> {
    scenario: &'a EvalScenario,
    forecasts: Forecasts,
    policy: MpcPolicy,
    max_degradation: f64,
    report: MpcReport,
    solve_total: Duration,
    solve_max: Duration,
}

impl<'a> Controller<'a> {
    fn new(scenario: &'a EvalScenario, forecast: &ForecastConfig) -> Controller<'a> {
        let (ds, prosumers) = (&scenario.ds, &scenario.prosumers);
        let horizon = forecast.horizon_slots(ds);
        Controller {
            scenario,
            forecasts: Forecasts::new(SeriesShape::of(ds, forecast), horizon, prosumers.len()),
            policy: MpcPolicy::new(prosumers.len()),
            max_degradation: max_degradation_per_kwh(prosumers),
            report: MpcReport {
                forecast: *forecast,
                window_slots: horizon + 1,
                solves: 0,
                fallback_slots: 0,
                mean_variables: 0.0,
                mean_constraints: 0.0,
                mean_iterations: 0.0,
            },
            solve_total: Duration::ZERO,
            solve_max: Duration::ZERO,
        }
    }

    /// Plans the window from the slot `sim` is about to play (`ctx`) and
    /// sets the policy to its first slot.
    fn plan(&mut self, sim: &Simulation, ctx: &SlotContext) {
        let (ds, cfg) = (&self.scenario.ds, &self.scenario.sim);
        // The households as they will act: this slot's EV events applied.
        let mut households = sim.households().to_vec();
        for h in &mut households {
            h.begin_slot(ctx);
        }
        // A measurement only (see the module docs).
        #[allow(clippy::disallowed_methods)]
        let solving = Instant::now();
        let peak = peak_so_far_kw(ds, cfg, sim.records(), ctx.data_slot);
        let input = window_input(
            ds,
            cfg,
            &households,
            ctx.data_slot,
            &mut self.forecasts,
            self.max_degradation,
            peak,
        );
        let report = &mut self.report;
        match model::build(input).solve() {
            Ok(plan) => {
                report.mean_variables += plan.summary.variables as f64;
                report.mean_constraints += plan.summary.constraints as f64;
                report.mean_iterations += plan.summary.solver_iterations as f64;
                self.policy.follow(&plan);
            }
            Err(_) => {
                report.fallback_slots += 1;
                self.policy.fall_back();
            }
        }
        report.solves += 1;
        let took = solving.elapsed();
        self.solve_total += took;
        self.solve_max = self.solve_max.max(took);
    }
}
