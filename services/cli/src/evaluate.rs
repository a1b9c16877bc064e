//! What `peergrid run` and `peergrid eval` share: the scenario flags, turning
//! them into an [`EvalScenario`], and [`evaluate_and_report`], the one call
//! that compares the policies on held-out days, writes the report and prints
//! the summary.
//!
//! The dataset's whole weeks are split three ways (`--test-every-nth-week`,
//! `--validation-every-nth-week`; the rule is
//! `peergrid_core::data::split`): training plays only the train days, and
//! `--split` picks which held-out part is evaluated — `test` (the default,
//! the reported result) or `validation` (for choosing hyperparameters and
//! checkpoints without looking at the test weeks).
//!
//! A command builds a [`Setup`] from [`ScenarioArgs`] (dataset, community and
//! settings, held-out days, output directory), optionally obtains a learned
//! policy (a checkpoint for `eval`; training, later, for `run`) and a
//! learning curve, and calls [`evaluate_and_report`]. Bad flags and files are
//! [`BadInput`](peergrid_runtime::BadInput) errors naming the flag and the bound.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Result;
use clap::{Args, ValueEnum};
use serde::{Deserialize, Serialize};

use peergrid_core::data::split::{SplitPart, WeekSplit};
use peergrid_core::data::{Dataset, DatasetKind};
use peergrid_core::forecast::ForecastConfig;
use peergrid_core::policy::Policy;
use peergrid_core::prosumer::{generate_community, CommunityConfig};
use peergrid_core::simulation::SimConfig;
use peergrid_core::tariff::{DemandPeriod, MAX_DEMAND_CHARGE_PER_KW};
use peergrid_core::CoreError;
use peergrid_eval::days::{days_of_part, DaySelection};
use peergrid_eval::report::table::kpi_table;
use peergrid_eval::report::CheckpointInfo;
use peergrid_eval::{
    EvalScenario, Evaluation, LearningPoint, MpcMode, MpcSettings, OptimumMode, RunInfo,
};
use peergrid_runtime::DatasetArgs;

use peergrid_runtime::BadInput;

/// The flags that define what is evaluated and where the report goes.
#[derive(Args, Debug, Clone)]
pub struct ScenarioArgs {
    /// JSON file with `{"community": {...}, "sim": {...}}` overriding the defaults
    /// (a report's `config.json` is one).
    #[arg(long, alias = "config", value_name = "FILE")]
    pub scenario: Option<PathBuf>,
    /// Number of prosumers in the community.
    #[arg(long)]
    pub prosumers: Option<usize>,
    /// Run seed (community generation and noise).
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    #[command(flatten)]
    pub data: DatasetArgs,
    /// Test weeks: every n-th whole week from the first Monday (weeks 4, 8, … for 4); never trained on.
    #[arg(long, alias = "eval-every-nth-week", default_value_t = 4, value_name = "N")]
    pub test_every_nth_week: u32,
    /// Validation weeks: weeks 2, 2+M, 2+2M, … that are not test weeks (2, 10, 18, … for 8); never trained on.
    #[arg(long, default_value_t = 8, value_name = "M")]
    pub validation_every_nth_week: u32,
    /// Which held-out part to evaluate: `test` (the reported result) or `validation` (for tuning).
    #[arg(long, value_enum, default_value_t = SplitArg::Test)]
    pub split: SplitArg,
    /// Days of that part to evaluate, numbered 1..N in dataset order: `all`, `3`, `1-7`, `1-7,15,22-28` [default: all].
    #[arg(long, value_name = "DAYS")]
    pub days: Option<String>,
    /// Whether to solve the perfect-foresight optimum (auto: unless the LP is too large).
    #[arg(long, value_enum, default_value_t = OptimumArg::Auto)]
    pub optimum: OptimumArg,
    /// Charge per kW of the community's peak net import in each period (overrides the scenario's `tariff.demand_charge_per_kw`; 0 = none, 0..=1000).
    #[arg(long, value_name = "PER_KW", allow_negative_numbers = true)]
    pub demand_charge_per_kw: Option<f64>,
    /// The period whose peak the demand charge prices: `daily`, or `monthly` (30 days).
    #[arg(long, value_enum, value_name = "PERIOD")]
    pub demand_charge_period: Option<DemandPeriodArg>,
    /// Whether to play the MPC baseline (the optimum's LP re-planned every slot from forecasts; auto: unless the schedule is too large).
    #[arg(long, value_enum, default_value_t = MpcArg::Auto)]
    pub mpc: MpcArg,
    /// Hours MPC plans ahead of the current slot, with forecasts of each household's load and PV (1..=168, shorter than the data).
    #[arg(long, default_value_t = 24, value_name = "HOURS")]
    pub forecast_horizon_hours: usize,
    /// Past days the forecaster's same-hour profile averages (1..=28, shorter than the data).
    #[arg(long, default_value_t = 7, value_name = "DAYS")]
    pub forecast_history_days: usize,
    /// Hours after which the forecaster has moved half-way from "like now" to "like usual" (0 < h ≤ 1000).
    #[arg(long, default_value_t = 2.0, value_name = "HOURS")]
    pub forecast_half_life_hours: f64,
    /// Directory for the report [default: runs/<UTC timestamp>].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Print kpis.json on stdout instead of the table.
    #[arg(long)]
    pub json: bool,
}

impl Default for ScenarioArgs {
    fn default() -> Self {
        ScenarioArgs {
            scenario: None,
            prosumers: None,
            seed: 7,
            data: DatasetArgs::default(),
            test_every_nth_week: 4,
            validation_every_nth_week: 8,
            split: SplitArg::Test,
            days: None,
            optimum: OptimumArg::Auto,
            demand_charge_per_kw: None,
            demand_charge_period: None,
            mpc: MpcArg::Auto,
            forecast_horizon_hours: 24,
            forecast_history_days: 7,
            forecast_half_life_hours: 2.0,
            out: None,
            json: false,
        }
    }
}

impl ScenarioArgs {
    /// The week split the flags describe.
    pub fn week_split(&self) -> WeekSplit {
        WeekSplit {
            test_every_nth_week: self.test_every_nth_week,
            validation_every_nth_week: self.validation_every_nth_week,
        }
    }
}

/// The held-out parts `--split` can name (training days are never evaluated).
#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum SplitArg {
    /// The validation weeks: for hyperparameters and checkpoint selection.
    Validation,
    /// The test weeks: the reported result.
    Test,
}

impl From<SplitArg> for SplitPart {
    fn from(a: SplitArg) -> SplitPart {
        match a {
            SplitArg::Validation => SplitPart::Validation,
            SplitArg::Test => SplitPart::Test,
        }
    }
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum OptimumArg {
    /// Solve it unless the LP exceeds 40,000 battery-household slots (about 10 s).
    Auto,
    /// Always solve it.
    On,
    /// Never solve it.
    Off,
}

impl From<OptimumArg> for OptimumMode {
    fn from(a: OptimumArg) -> OptimumMode {
        match a {
            OptimumArg::Auto => OptimumMode::Auto,
            OptimumArg::On => OptimumMode::On,
            OptimumArg::Off => OptimumMode::Off,
        }
    }
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum DemandPeriodArg {
    /// Every day.
    Daily,
    /// Every 30 days from the dataset's first day.
    Monthly,
}

impl From<DemandPeriodArg> for DemandPeriod {
    fn from(a: DemandPeriodArg) -> DemandPeriod {
        match a {
            DemandPeriodArg::Daily => DemandPeriod::Daily,
            DemandPeriodArg::Monthly => DemandPeriod::Monthly,
        }
    }
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum MpcArg {
    /// Play it unless the schedule exceeds 40,000 battery-household slots.
    Auto,
    /// Always play it.
    On,
    /// Never play it.
    Off,
}

impl From<MpcArg> for MpcMode {
    fn from(a: MpcArg) -> MpcMode {
        match a {
            MpcArg::Auto => MpcMode::Auto,
            MpcArg::On => MpcMode::On,
            MpcArg::Off => MpcMode::Off,
        }
    }
}

/// The forecaster the flags describe, checked against `ds`; an error names
/// the flag and its bound.
fn forecast_config(args: &ScenarioArgs, ds: &Dataset) -> Result<ForecastConfig> {
    let cfg = ForecastConfig {
        horizon_hours: args.forecast_horizon_hours,
        history_days: args.forecast_history_days,
        anomaly_half_life_hours: args.forecast_half_life_hours,
    };
    cfg.validate(ds).map_err(|e| match e {
        CoreError::InvalidField { field, reason } => {
            let flag = match field.as_str() {
                "forecast.horizon_hours" => "--forecast-horizon-hours",
                "forecast.history_days" => "--forecast-history-days",
                _ => "--forecast-half-life-hours",
            };
            BadInput::new(format!("{flag}: {reason}"))
        }
        other => BadInput::new(other.to_string()),
    })?;
    Ok(cfg)
}

/// The scenario file.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RunConfig {
    pub community: CommunityConfig,
    pub sim: SimConfig,
}

/// Everything an evaluation needs, validated.
pub struct Setup {
    pub scenario: EvalScenario,
    pub info: RunInfo,
    pub out: PathBuf,
    pub json: bool,
}

impl Setup {
    /// Loads and validates what `args` describe. `days` overrides `--days`
    /// (`peergrid run --eval-weeks`); `command` names the subcommand.
    pub fn load(command: &str, args: &ScenarioArgs, days: Option<DaySelection>) -> Result<Setup> {
        let cfg = load_config(args)?;
        let ds = Arc::new(load_dataset(args)?);
        let selection = match (days, &args.days) {
            (Some(d), _) => d,
            (None, Some(text)) => {
                DaySelection::parse(text, "--days").map_err(|e| BadInput::new(e.to_string()))?
            }
            (None, None) => DaySelection::All,
        };
        // Every part must be non-empty, whichever one is evaluated: a run
        // trains on one and a study tunes on another.
        let split = args.week_split();
        split.split_checked(&ds)?;
        let part = SplitPart::from(args.split);
        let available = days_of_part(&ds, &split, part);
        let days =
            selection.select(&available, "--days").map_err(|e| BadInput::new(e.to_string()))?;
        let forecast = forecast_config(args, &ds)?;
        let prosumers = generate_community(&ds, &cfg.community)?;
        let info = RunInfo {
            command: command.into(),
            dataset: ds.name.clone(),
            slot_minutes: ds.slot_minutes,
            seed: args.seed,
            community: cfg.community,
            sim: cfg.sim.clone(),
            split,
            evaluated_on: part,
            days: selection.to_string(),
            optimum_mode: args.optimum.into(),
            mpc: MpcSettings { mode: args.mpc.into(), forecast },
            checkpoint: None,
            validation: None,
        };
        let out = match &args.out {
            Some(dir) if dir.exists() && !dir.is_dir() => {
                return Err(BadInput::new(format!(
                    "--out {}: exists and is not a directory",
                    dir.display()
                ))
                .into())
            }
            Some(dir) => dir.clone(),
            None => fresh_run_dir(Path::new("runs"))?,
        };
        Ok(Setup {
            scenario: EvalScenario { ds, prosumers, sim: cfg.sim, days },
            info,
            out,
            json: args.json,
        })
    }

    /// Records how training chose the learned policy on the validation weeks.
    pub fn with_validation(
        mut self,
        curve: peergrid_eval::report::validation::ValidationCurve,
    ) -> Setup {
        self.info.validation = Some(curve);
        self
    }

    /// Records the checkpoint the learned policy comes from.
    pub fn with_checkpoint(mut self, path: &Path, policy_version: u64) -> Setup {
        self.info.checkpoint =
            Some(CheckpointInfo { path: path.display().to_string(), policy_version });
        self
    }
}

fn load_dataset(args: &ScenarioArgs) -> Result<Dataset> {
    let (mut kind, mut file) = (DatasetKind::default(), None);
    Ok(args.data.apply(&mut kind, &mut file)?.load()?)
}

fn load_config(args: &ScenarioArgs) -> Result<RunConfig> {
    let mut cfg = match &args.scenario {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| BadInput::new(format!("{}: {e}", path.display())))?;
            serde_json::from_str(&text)
                .map_err(|e| BadInput::new(format!("{}: {e}", path.display())))?
        }
        None => RunConfig::default(),
    };
    if let Some(n) = args.prosumers {
        cfg.community.n_prosumers = n;
    }
    if let Some(per_kw) = args.demand_charge_per_kw {
        if !(per_kw.is_finite() && (0.0..=MAX_DEMAND_CHARGE_PER_KW).contains(&per_kw)) {
            return Err(BadInput::new(format!(
                "--demand-charge-per-kw: must lie in [0, {MAX_DEMAND_CHARGE_PER_KW}] per kW, got {per_kw}"
            ))
            .into());
        }
        cfg.sim.tariff.demand_charge_per_kw = per_kw;
    }
    if let Some(period) = args.demand_charge_period {
        cfg.sim.tariff.demand_charge_period = period.into();
    }
    cfg.community.seed = args.seed;
    cfg.community.validate()?;
    cfg.sim.validate()?;
    Ok(cfg)
}

/// `runs/<UTC yyyymmdd-hhmmss>`, with `-2`, `-3`… if that exists already.
pub fn fresh_run_dir(parent: &Path) -> Result<PathBuf> {
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let stamp = utc_stamp(secs);
    let mut dir = parent.join(&stamp);
    let mut n = 2;
    while dir.exists() {
        dir = parent.join(format!("{stamp}-{n}"));
        n += 1;
    }
    Ok(dir)
}

/// `yyyymmdd-hhmmss` of a Unix time (the civil-from-days algorithm).
fn utc_stamp(unix_secs: u64) -> String {
    let (days, rem) = ((unix_secs / 86_400) as i64, unix_secs % 86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}{month:02}{day:02}-{:02}{:02}{:02}", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// Evaluates grid-only, rule-based, `learned` (if any) and the optimum on the
/// held-out days of `setup`, writes the report (with `curve`, possibly
/// empty) into `setup.out`, and prints the KPI table (or `kpis.json` with
/// `--json`). `peergrid run` trains first and passes its policy and curve;
/// `peergrid eval` passes a checkpoint's policy and no curve.
pub fn evaluate_and_report(
    setup: &Setup,
    learned: Option<&mut dyn Policy>,
    curve: &[LearningPoint],
) -> Result<Evaluation> {
    let evaluation = peergrid_eval::compare_policies(
        &setup.scenario,
        learned,
        setup.info.optimum_mode,
        &setup.info.mpc,
    )?;
    report(setup, &evaluation, curve)?;
    Ok(evaluation)
}

/// Writes the report of `evaluation` into `setup.out` and prints the KPI
/// table (or `kpis.json` with `--json`): the second half of
/// [`evaluate_and_report`], for a caller that checks the evaluation first.
pub fn report(setup: &Setup, evaluation: &Evaluation, curve: &[LearningPoint]) -> Result<()> {
    // Every connection is closed by now (see `quiet_on_closed_stdout`).
    crate::quiet_on_closed_stdout();
    let files =
        peergrid_eval::write_report(&setup.out, &setup.info, &setup.scenario, evaluation, curve)?;
    if setup.json {
        print!("{}", std::fs::read_to_string(setup.out.join("kpis.json"))?);
        return Ok(());
    }
    print_summary(setup, evaluation, &files.dir);
    Ok(())
}

fn print_summary(setup: &Setup, evaluation: &Evaluation, dir: &Path) {
    let s = &setup.scenario;
    let slots = s.slots().len();
    for (step, took) in &evaluation.timings {
        eprintln!("{step:<22} {:>8.3} s", took.as_secs_f64());
    }
    println!(
        "\nDataset '{}', {} prosumers, seed {}, {} {} days ({slots} slots; --days {}; test every {} weeks, validation every {}):\n",
        s.ds.name,
        s.prosumers.len(),
        setup.info.seed,
        s.days.len(),
        setup.info.evaluated_on,
        setup.info.days,
        setup.info.split.test_every_nth_week,
        setup.info.split.validation_every_nth_week
    );
    let rows: Vec<(&str, &peergrid_core::kpi::Kpis)> =
        evaluation.rows.iter().map(|r| (r.policy.as_str(), &r.kpis)).collect();
    print!("{}", kpi_table(&rows));
    if let Some(pct) = evaluation.gap_closed_pct() {
        println!("\nGap closed by the learned policy (rule-based → optimum): {pct:.1} %");
    }
    if let Some(pct) = evaluation.gap_closed_by_pct(peergrid_eval::compare::MPC) {
        println!("Gap closed by MPC (rule-based → optimum): {pct:.1} %");
    }
    if let Some(why) = &evaluation.mpc_skipped {
        println!("\nMPC: {why}.");
    }
    match (&evaluation.optimum, &evaluation.optimum_skipped) {
        (Some(o), _) => println!(
            "\nOptimum: perfect-foresight LP, {} variables, {}; its plan replayed in the simulator costs {:.2}.",
            o.lp.variables, o.lp.solver_status, o.replayed_cost
        ),
        (None, Some(why)) => println!("\nOptimum: {why}."),
        (None, None) => {}
    }
    println!("\nReport: {}", dir.join("report.md").display());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_stamps_follow_the_calendar() {
        assert_eq!(utc_stamp(0), "19700101-000000");
        assert_eq!(utc_stamp(951_782_400), "20000229-000000");
        assert_eq!(utc_stamp(1_764_067_495), "20251125-104455");
    }
}
