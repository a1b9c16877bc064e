//! `peergrid eval --checkpoint PATH`: evaluate a saved policy.
//!
//! Reads the policy weight file the trainer writes (one safetensors blob,
//! `peergrid_core::policy::weights`), plays its deterministic policy (the
//! Gaussian mean) on the held-out days next to grid-only, rule-based and
//! the perfect-foresight optimum, and writes the same report as `peergrid
//! run` through the same [`evaluate_and_report`].

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use peergrid_core::policy::weights::from_safetensors;
use peergrid_core::policy::MlpPolicy;

use peergrid_cli::evaluate::{evaluate_and_report, ScenarioArgs, Setup};
use peergrid_cli::InputError;

#[derive(Args, Debug, Clone)]
pub(crate) struct EvalArgs {
    /// The policy weight file (safetensors, as the trainer writes it).
    #[arg(long, value_name = "PATH")]
    pub checkpoint: PathBuf,
    #[command(flatten)]
    pub scenario: ScenarioArgs,
}

pub(crate) fn run(args: EvalArgs) -> Result<()> {
    let path = &args.checkpoint;
    let bytes = std::fs::read(path)
        .map_err(|e| InputError(format!("--checkpoint {}: {e}", path.display())))?;
    let weights = from_safetensors(&bytes)
        .map_err(|e| InputError(format!("--checkpoint {}: {e}", path.display())))?;
    let mut policy = MlpPolicy::new(weights.net, weights.normaliser)
        .map_err(|e| InputError(format!("--checkpoint {}: {e}", path.display())))?;
    let setup =
        Setup::load("peergrid eval", &args.scenario, None)?.with_checkpoint(path, weights.version);
    evaluate_and_report(&setup, Some(&mut policy), &[])?;
    Ok(())
}
