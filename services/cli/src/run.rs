//! `peergrid run`: the main job embedded on one machine.
//!
//! Today: loads the dataset (bundled CityLearn-derived data by default),
//! scales it to a community with the seeded generator, holds out whole
//! weeks, and evaluates the baselines and the perfect-foresight optimum on
//! the held-out days through [`evaluate_and_report`], which writes the
//! report and prints the KPI table. Training goes in front of that call
//! (the trainer issue): it will pass the learned policy and its learning
//! curve instead of `None` and `&[]`; the output keeps this shape.

use anyhow::Result;
use clap::Args;

use peergrid_eval::days::DaySelection;

use crate::evaluate::{evaluate_and_report, ScenarioArgs, Setup};
use crate::InputError;

#[derive(Args, Debug, Clone, Default)]
pub struct RunArgs {
    #[command(flatten)]
    pub scenario: ScenarioArgs,
    /// Evaluate only the first N held-out weeks (0 = all); shorthand for `--days 1-7N`.
    #[arg(long, default_value_t = 0)]
    pub eval_weeks: usize,
}

pub fn run(args: RunArgs) -> Result<()> {
    let days = match (args.eval_weeks, &args.scenario.days) {
        (0, _) => None,
        (_, Some(_)) => return Err(InputError("--eval-weeks and --days both select held-out days: use one".into()).into()),
        (weeks, None) => Some(DaySelection::first(7 * weeks)),
    };
    let setup = Setup::load("peergrid run", &args.scenario, days)?;
    evaluate_and_report(&setup, None, &[])?;
    Ok(())
}
