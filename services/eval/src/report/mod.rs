//! The evaluation report: what a run writes into its output directory.
//!
//! [`write_report`] takes the run's metadata ([`RunInfo`]), the scenario,
//! the [`Evaluation`] (one KPI row per policy with per-slot records) and a
//! learning curve (possibly empty) and writes:
//!
//! | file | what |
//! | --- | --- |
//! | `report.md` | scenario, settings, seed, the KPI table, the gap closed, links to everything below |
//! | `kpis.json` | the same numbers at full precision, with the metadata and the learning curve; deterministic (no timings) |
//! | `kpis.csv` | one row per policy, every KPI at full precision |
//! | `slots.csv` | every slot of every policy: community energy flows, stored energy, prices |
//! | `config.json` | the effective `{"community", "sim"}` configuration, reusable with `--scenario` |
//! | `kpis.png` | a bar chart per KPI |
//! | `day-<policy>.png` | the representative held-out day per policy: energy, battery SoC, prices |
//! | `learning-curve.png` | mean episode return and community cost per update (only with a curve) |
//! | `validation-curve.png` | validation cost every few updates beside the baselines', the kept update marked (only when the run validated) |
//!
//! The representative day is the held-out day of median community PV among
//! those evaluated ([`day::representative_day`]). The writer creates the
//! directory if needed and overwrites its own files, nothing else.

pub mod day;
mod files;
mod markdown;
mod mpc_text;
mod plots;
pub mod table;
pub mod validation;

use std::path::{Path, PathBuf};

use peergrid_core::data::split::{SplitPart, WeekSplit};
use peergrid_core::prosumer::CommunityConfig;
use peergrid_core::simulation::SimConfig;
use serde::{Deserialize, Serialize};

use crate::compare::{EvalScenario, Evaluation, OptimumMode};
use crate::error::EvalError;
use crate::mpc::MpcSettings;

/// What produced a report: everything needed to reproduce it.
#[derive(Clone, Debug, Serialize)]
pub struct RunInfo {
    /// The subcommand, e.g. `peergrid eval` (no paths: the JSON stays the
    /// same wherever the report is written).
    pub command: String,
    pub dataset: String,
    pub slot_minutes: u32,
    pub seed: u64,
    pub community: CommunityConfig,
    pub sim: SimConfig,
    /// Which whole weeks are test and which validation (the rest trains).
    pub split: WeekSplit,
    /// The part of the split this report evaluates (`validation` or `test`).
    pub evaluated_on: SplitPart,
    /// The selection among that part's days as given (`all`, `1-7`, …).
    pub days: String,
    pub optimum_mode: OptimumMode,
    /// Whether and how the MPC baseline is played (left out of `kpis.json`
    /// when it is off).
    #[serde(skip_serializing_if = "MpcSettings::is_off")]
    pub mpc: MpcSettings,
    /// The learned policy's weight file, if one was evaluated.
    pub checkpoint: Option<CheckpointInfo>,
    /// Validation during training, when this run trained and validated:
    /// which update's policy was kept and why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub validation: Option<validation::ValidationCurve>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CheckpointInfo {
    pub path: String,
    /// The policy version stored in the file.
    pub policy_version: u64,
}

/// One PPO update of a training run.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct LearningPoint {
    pub update: u64,
    /// Mean undiscounted return of the episodes that ended in this update.
    pub mean_episode_return: f64,
    /// Community cost of this update's rollout episodes.
    pub community_cost: f64,
}

/// The files a report consists of.
#[derive(Clone, Debug)]
pub struct ReportFiles {
    pub dir: PathBuf,
    /// Every file written, `report.md` first.
    pub files: Vec<PathBuf>,
}

/// Writes the report of `evaluation` into `out_dir` (see the module docs).
pub fn write_report(
    out_dir: &Path,
    info: &RunInfo,
    scenario: &EvalScenario,
    evaluation: &Evaluation,
    curve: &[LearningPoint],
) -> Result<ReportFiles, EvalError> {
    if evaluation.rows.is_empty() {
        return Err(EvalError::invalid("evaluation", "has no policy rows to report"));
    }
    if let Some(bad) =
        curve.iter().find(|p| !p.mean_episode_return.is_finite() || !p.community_cost.is_finite())
    {
        return Err(EvalError::invalid(
            "learning_curve",
            format!("update {}: values must be finite", bad.update),
        ));
    }
    std::fs::create_dir_all(out_dir).map_err(|e| EvalError::io(out_dir, e))?;
    let day = day::representative_day(scenario, &evaluation.rows[0].records)?;
    let mut written = Vec::new();
    let mut write = |name: &str, contents: &[u8]| -> Result<(), EvalError> {
        let path = out_dir.join(name);
        std::fs::write(&path, contents).map_err(|e| EvalError::io(&path, e))?;
        written.push(path);
        Ok(())
    };
    let plots = plots::draw_all(out_dir, info, scenario, evaluation, &day, curve)?;
    write(
        "report.md",
        markdown::report(info, scenario, evaluation, &day, curve, &plots).as_bytes(),
    )?;
    write("kpis.json", files::kpis_json(info, scenario, evaluation, &day, curve)?.as_bytes())?;
    write("kpis.csv", files::kpis_csv(evaluation)?.as_bytes())?;
    write("slots.csv", files::slots_csv(evaluation)?.as_bytes())?;
    write("config.json", files::config_json(&info.community, &info.sim)?.as_bytes())?;
    written.extend(plots.iter().map(|p| out_dir.join(&p.file)));
    Ok(ReportFiles { dir: out_dir.to_path_buf(), files: written })
}
