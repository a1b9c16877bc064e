//! `peergrid eval --checkpoint PATH | --policy remote:URL`: evaluate a
//! saved policy, or an external policy service ([`crate::remote_eval`]).
//!
//! Reads the policy weight file the trainer writes (one safetensors blob,
//! `peergrid_core::policy::weights`), plays its deterministic policy (the
//! Gaussian mean) on the held-out days next to grid-only, rule-based and
//! the perfect-foresight optimum, and writes the same report as `peergrid
//! run` through the same [`evaluate_and_report`].

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;

use peergrid_core::policy::weights::from_safetensors;
use peergrid_core::policy::MlpPolicy;

use peergrid_cli::evaluate::{evaluate_and_report, ScenarioArgs, Setup};
use peergrid_cli::remote_eval::{
    evaluate_remote_and_report, remote_url, RemoteEvalPolicy, RemotePolicyArgs,
};
use peergrid_runtime::BadInput;

#[derive(Args, Debug, Clone)]
pub(crate) struct EvalArgs {
    /// The policy weight file (safetensors, as the trainer writes it).
    #[arg(
        long,
        value_name = "PATH",
        required_unless_present = "policy",
        conflicts_with = "policy"
    )]
    pub checkpoint: Option<PathBuf>,
    /// An external PolicyService instead: `remote:http://HOST:PORT` (or
    /// `https://` with --remote-policy-tls-ca), asked once per slot for
    /// every prosumer's action; the agent token of PEERGRID_AGENT_TOKEN
    /// (or _FILE) if set.
    #[arg(long, value_name = "remote:URL")]
    pub policy: Option<String>,
    #[command(flatten)]
    pub remote: RemotePolicyArgs,
    #[command(flatten)]
    pub scenario: ScenarioArgs,
}

pub(crate) fn run(args: EvalArgs) -> Result<()> {
    if let Some(policy) = &args.policy {
        return run_remote(&args, policy);
    }
    let path = args.checkpoint.as_ref().context("--checkpoint or --policy is required")?;
    let bytes = std::fs::read(path)
        .map_err(|e| BadInput::new(format!("--checkpoint {}: {e}", path.display())))?;
    let weights = from_safetensors(&bytes)
        .map_err(|e| BadInput::new(format!("--checkpoint {}: {e}", path.display())))?;
    let mut policy = MlpPolicy::new(weights.net, weights.normaliser)
        .map_err(|e| BadInput::new(format!("--checkpoint {}: {e}", path.display())))?;
    let setup =
        Setup::load("peergrid eval", &args.scenario, None)?.with_checkpoint(path, weights.version);
    evaluate_and_report(&setup, Some(&mut policy), &[])?;
    Ok(())
}

/// `--policy remote:URL`: the service plays the learned row; a slot it
/// fails ends the command before any report is written.
fn run_remote(args: &EvalArgs, policy: &str) -> Result<()> {
    let url = remote_url(policy)?;
    let setup = Setup::load("peergrid eval", &args.scenario, None)?;
    let mut remote = RemoteEvalPolicy::connect(url, &args.remote)?;
    evaluate_remote_and_report(&setup, &mut remote, &[])
}
