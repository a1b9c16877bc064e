//! Evaluation of peergrid policies, and the report.
//!
//! - [`days`]: numbering the held-out days and the `--days` selection syntax.
//! - [`optimum`]: the perfect-foresight linear program over a whole
//!   evaluation horizon, settled into the same KPIs as a simulated policy.
//! - [`mpc`]: the model-predictive-control baseline: the optimum's LP
//!   re-planned every slot over a rolling window from forecasts.
//! - [`compare`]: grid-only, rule-based, a learned policy, MPC and the
//!   optimum side by side on the same community and held-out days.
//! - [`report`]: `report.md`, `kpis.json`, `kpis.csv`, `config.json` and the
//!   PNG plots of an evaluation.
//! - [`evaluate_and_report`]: the two together, the one call `peergrid run`
//!   and `peergrid eval` make.
//!
//! Like the core, this crate is pure: no async runtime, no gRPC, no
//! libtorch (checked by `scripts/check-deps.sh`). It reads no clock except
//! to time what it runs, and never prints.

pub mod compare;
pub mod days;
pub mod error;
pub mod mpc;
pub mod optimum;
pub mod report;
pub mod study;

use std::path::Path;

use peergrid_core::policy::Policy;

pub use compare::{compare_policies, EvalScenario, Evaluation, OptimumMode};
pub use error::EvalError;
pub use mpc::{MpcMode, MpcSettings};
pub use report::{write_report, LearningPoint, ReportFiles, RunInfo};

/// Evaluates the baselines, `learned` (if any), MPC and the optimum on
/// `scenario`, and writes the report with the learning curve `curve`
/// (possibly empty) into `out_dir`.
pub fn evaluate_and_report(
    scenario: &EvalScenario,
    info: &RunInfo,
    learned: Option<&mut dyn Policy>,
    curve: &[LearningPoint],
    out_dir: &Path,
) -> Result<(Evaluation, ReportFiles), EvalError> {
    let evaluation = compare_policies(scenario, learned, info.optimum_mode, &info.mpc)?;
    let files = write_report(out_dir, info, scenario, &evaluation, curve)?;
    Ok((evaluation, files))
}
