//! Every policy side by side on the same community and held-out days.
//!
//! [`compare_policies`] plays grid-only, rule-based and (when given) the
//! learned policy through the reference simulator with the core's
//! [`evaluate`] (one grid-only baseline for every row's savings), then the
//! MPC baseline ([`crate::mpc`]: the optimum's LP re-planned every slot from
//! forecasts, played in the same simulator) with the forecaster's measured
//! error, then solves the perfect-foresight optimum over the same slots and
//! settles it against the same baseline, so all rows are measured alike. It
//! also plays the optimum's plan in the simulator: that replayed cost, next
//! to the LP's, shows how faithfully the LP models the simulator.
//!
//! Only this module and the report know row names; they are the constants
//! below.

use std::sync::Arc;
use std::time::{Duration, Instant};

use peergrid_core::data::Dataset;
use peergrid_core::evaluation::{evaluate, PolicyResult};
use peergrid_core::forecast::{measure_forecast_errors, ForecastErrors};
use peergrid_core::observation::Observation;
use peergrid_core::policy::{Action, GridOnly, Policy, RuleBased};
use peergrid_core::prosumer::ProsumerSpec;
use peergrid_core::simulation::{SimConfig, Simulation};
use peergrid_core::units::ProsumerId;
use serde::Serialize;

use crate::days::{schedule_of, HeldOutDay};
use crate::error::EvalError;
use crate::mpc::{run_mpc, MpcMode, MpcReport, MpcSettings, AUTO_MPC_MAX_BATTERY_SLOTS};
use crate::optimum::{solve_optimum, LpSummary};

pub const GRID_ONLY: &str = "grid-only";
pub const RULE_BASED: &str = "rule-based";
pub const LEARNED: &str = "learned";
pub use crate::mpc::MPC;
pub const OPTIMUM: &str = "optimum";

/// Above this many battery-household slots `OptimumMode::Auto` skips the LP:
/// about 10 s of solving on a 2-core VM (24 households × 13 weeks is 26,208
/// and takes 5 s; the LP grows superlinearly with the community).
pub const AUTO_OPTIMUM_MAX_BATTERY_SLOTS: usize = 40_000;

/// The community and the held-out days every policy is evaluated on.
#[derive(Clone, Debug)]
pub struct EvalScenario {
    pub ds: Arc<Dataset>,
    pub prosumers: Vec<ProsumerSpec>,
    pub sim: SimConfig,
    /// Played in this order, back to back.
    pub days: Vec<HeldOutDay>,
}

impl EvalScenario {
    pub fn slots(&self) -> Vec<usize> {
        schedule_of(&self.days)
    }

    /// Households with a battery the optimum has to schedule.
    pub fn battery_households(&self) -> usize {
        self.prosumers.iter().filter(|p| p.battery.is_some_and(|b| b.capacity_kwh > 0.0)).count()
    }
}

/// Whether to solve the optimum.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum OptimumMode {
    /// Solve it unless the LP is larger than [`AUTO_OPTIMUM_MAX_BATTERY_SLOTS`].
    #[default]
    Auto,
    /// Always solve it, however long it takes.
    On,
    Off,
}

/// The optimum's LP and how its plan fares in the simulator.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct OptimumReport {
    #[serde(flatten)]
    pub lp: LpSummary,
    /// Community cost of the plan played by the reference simulator: above
    /// the LP's by whole-Wh order rounding, more only where the LP wastes
    /// energy no household can (a binding feeder export limit).
    pub replayed_cost: f64,
}

/// All rows of an evaluation.
#[derive(Clone, Debug)]
pub struct Evaluation {
    /// grid-only, rule-based, learned (if given), mpc (if played), optimum
    /// (if solved), in that order.
    pub rows: Vec<PolicyResult>,
    pub optimum: Option<OptimumReport>,
    /// Why the optimum is missing, when it is.
    pub optimum_skipped: Option<String>,
    /// What the MPC baseline did, when it was played.
    pub mpc: Option<MpcReport>,
    /// Why MPC is missing when it was asked for (`auto` on a large schedule).
    pub mpc_skipped: Option<String>,
    /// The error of the forecasts MPC planned with, on the evaluated slots.
    pub forecast_errors: Option<ForecastErrors>,
    /// Wall-clock time of each step: machine-dependent, never in `kpis.json`.
    pub timings: Timings,
}

impl Evaluation {
    pub fn row(&self, name: &str) -> Option<&PolicyResult> {
        self.rows.iter().find(|r| r.policy == name)
    }

    /// The learned policy's share of the cost gap from rule-based to the
    /// optimum that it closes, %: 0 = no better than rule-based, 100 = optimal.
    /// `None` without a learned policy or an optimum, or when rule-based is
    /// already optimal.
    pub fn gap_closed_pct(&self) -> Option<f64> {
        self.gap_closed_by_pct(LEARNED)
    }

    /// The same share for any row (`mpc`, …).
    pub fn gap_closed_by_pct(&self, policy: &str) -> Option<f64> {
        let cost = |name| self.row(name).map(|r| r.kpis.community_cost);
        let (rule, own, optimum) = (cost(RULE_BASED)?, cost(policy)?, cost(OPTIMUM)?);
        let gap = rule - optimum;
        (gap > 1e-9 * rule.abs().max(1.0)).then(|| 100.0 * (rule - own) / gap)
    }
}

/// Evaluates the baselines, `learned` (shown as `learned`, whatever its own
/// name), MPC and the optimum on `scenario`.
pub fn compare_policies(
    scenario: &EvalScenario,
    learned: Option<&mut dyn Policy>,
    mode: OptimumMode,
    mpc: &MpcSettings,
) -> Result<Evaluation, EvalError> {
    let slots = scenario.slots();
    if slots.is_empty() {
        return Err(EvalError::invalid("days", "no held-out day to evaluate"));
    }
    let (ds, prosumers, sim) = (&scenario.ds, &scenario.prosumers, &scenario.sim);
    let (mut grid_only, mut rule_based) = (GridOnly, RuleBased);
    let mut learned = learned.map(|inner| Renamed { name: LEARNED, inner });
    let mut policies: Vec<&mut dyn Policy> = vec![&mut grid_only, &mut rule_based];
    if let Some(l) = learned.as_mut() {
        policies.push(l);
    }
    let rows = evaluate(ds, prosumers, sim, &slots, &mut policies)?;
    let mut timings: Timings =
        rows.iter().map(|r| (format!("simulate {}", r.policy), r.elapsed)).collect();
    let mut evaluation = Evaluation {
        rows,
        optimum: None,
        optimum_skipped: None,
        mpc: None,
        mpc_skipped: None,
        forecast_errors: None,
        timings: Vec::new(),
    };
    let size = scenario.battery_households() * slots.len();
    match mpc.mode {
        MpcMode::Off => {}
        MpcMode::Auto if size > AUTO_MPC_MAX_BATTERY_SLOTS => {
            evaluation.mpc_skipped =
                Some(too_large(scenario, slots.len(), AUTO_MPC_MAX_BATTERY_SLOTS, "--mpc"))
        }
        MpcMode::Auto | MpcMode::On => {
            let mut steps = mpc_row(scenario, &slots, mpc, &mut evaluation)?;
            timings.append(&mut steps);
        }
    }
    match mode {
        OptimumMode::Off => {
            evaluation.optimum_skipped = Some("not requested (--optimum off)".into())
        }
        OptimumMode::Auto if size > AUTO_OPTIMUM_MAX_BATTERY_SLOTS => {
            evaluation.optimum_skipped =
                Some(too_large(scenario, slots.len(), AUTO_OPTIMUM_MAX_BATTERY_SLOTS, "--optimum"))
        }
        OptimumMode::Auto | OptimumMode::On => {
            let (row, report, mut steps) = optimum_row(scenario, &slots)?;
            evaluation.rows.push(row);
            evaluation.optimum = Some(report);
            timings.append(&mut steps);
        }
    }
    evaluation.timings = timings;
    Ok(evaluation)
}

/// Why `Auto` skipped an LP-based row: the scenario's battery-household
/// slots exceed `limit`; `flag` forces it.
fn too_large(scenario: &EvalScenario, slots: usize, limit: usize, flag: &str) -> String {
    let households = scenario.battery_households();
    format!(
        "skipped: {households} battery households × {slots} slots = {} exceeds the automatic \
         limit of {limit}; select fewer days or force it with {flag} on",
        households * slots
    )
}

/// Named wall-clock durations.
pub type Timings = Vec<(String, Duration)>;

/// Plays MPC, measures its forecasts and adds its row and report to `evaluation`.
fn mpc_row(
    scenario: &EvalScenario,
    slots: &[usize],
    settings: &MpcSettings,
    evaluation: &mut Evaluation,
) -> Result<Timings, EvalError> {
    let traces: Vec<_> = scenario.prosumers.iter().map(|p| p.trace).collect();
    evaluation.forecast_errors =
        Some(measure_forecast_errors(&scenario.ds, &traces, slots, &settings.forecast)?);
    let run = run_mpc(scenario, &settings.forecast, None)?;
    let per_slot = run.solve_total / run.report.solves.max(1) as u32;
    let timings = vec![
        (format!("simulate {}", run.row.policy), run.row.elapsed),
        (format!("mpc: {} LPs in total", run.report.solves), run.solve_total),
        ("mpc: mean LP per slot".into(), per_slot),
        ("mpc: slowest LP".into(), run.solve_max),
    ];
    evaluation.rows.push(run.row);
    evaluation.mpc = Some(run.report);
    Ok(timings)
}

/// Solves, settles and replays the optimum.
fn optimum_row(
    scenario: &EvalScenario,
    slots: &[usize],
) -> Result<(PolicyResult, OptimumReport, Timings), EvalError> {
    let (ds, prosumers, sim) = (&scenario.ds, &scenario.prosumers, &scenario.sim);
    // A measurement only: the solve time is reported in report.md, never in
    // kpis.json and never an input to a result.
    #[allow(clippy::disallowed_methods)]
    let started = Instant::now();
    let plan = solve_optimum(ds, prosumers, sim, slots)?;
    let solved = started.elapsed();
    let mut reference =
        Simulation::new(ds.clone(), prosumers.clone(), sim.clone(), slots.to_vec())?;
    reference.run(&mut GridOnly);
    let settled = plan.settle(ds, prosumers, sim, Some(reference.household_costs().to_vec()))?;
    let replay = evaluate(ds, prosumers, sim, slots, &mut [&mut plan.policy()])?;
    let report =
        OptimumReport { lp: plan.summary.clone(), replayed_cost: replay[0].kpis.community_cost };
    let row = PolicyResult {
        policy: OPTIMUM.into(),
        kpis: settled.kpis,
        records: settled.records,
        elapsed: solved,
    };
    Ok((
        row,
        report,
        vec![("solve optimum LP".into(), solved), ("replay optimum".into(), replay[0].elapsed)],
    ))
}

/// A policy under another name (the learned policy's row is `learned`).
struct Renamed<'a> {
    name: &'static str,
    inner: &'a mut dyn Policy,
}

impl Policy for Renamed<'_> {
    fn name(&self) -> &str {
        self.name
    }

    fn act(&mut self, prosumer: ProsumerId, obs: &Observation) -> Action {
        self.inner.act(prosumer, obs)
    }

    fn decides_per_slot(&self) -> bool {
        self.inner.decides_per_slot()
    }

    fn begin_slot(&mut self, slot: u64, observations: &[(ProsumerId, Observation)]) {
        self.inner.begin_slot(slot, observations)
    }
}
