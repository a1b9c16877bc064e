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
use peergrid_agent_node::config::REMOTE_POLICY_PREFIX;

use peergrid_core::policy::weights::from_safetensors;
use peergrid_core::policy::MlpPolicy;

use peergrid_cli::evaluate::{evaluate_and_report, report, ScenarioArgs, Setup};
use peergrid_cli::remote_eval::RemoteEvalPolicy;
use peergrid_cli::InputError;

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
    /// How long the service may take for one slot, ms; a slot it misses
    /// fails the evaluation.
    #[arg(long, default_value_t = 30_000)]
    pub remote_policy_timeout_ms: u64,
    /// PEM CA certificate(s) to trust for an `https://` policy service.
    #[arg(long, value_name = "FILE")]
    pub remote_policy_tls_ca: Option<PathBuf>,
    #[command(flatten)]
    pub scenario: ScenarioArgs,
}

pub(crate) fn run(args: EvalArgs) -> Result<()> {
    if let Some(policy) = &args.policy {
        return run_remote(&args, policy);
    }
    let path = args.checkpoint.as_ref().context("--checkpoint or --policy is required")?;
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

/// `--policy remote:URL`: the service plays the learned row; a slot it
/// fails ends the command before any report is written.
fn run_remote(args: &EvalArgs, policy: &str) -> Result<()> {
    let url = policy.strip_prefix(REMOTE_POLICY_PREFIX).ok_or_else(|| {
        InputError(format!(
            "--policy must be remote:URL (a file goes to --checkpoint), got {policy}"
        ))
    })?;
    let setup = Setup::load("peergrid eval", &args.scenario, None)?;
    let mut remote = RemoteEvalPolicy::connect(
        url,
        args.remote_policy_tls_ca.clone(),
        args.remote_policy_timeout_ms,
    )?;
    let evaluation = peergrid_eval::compare_policies(
        &setup.scenario,
        Some(&mut remote),
        setup.info.optimum_mode,
        &setup.info.mpc,
    )?;
    if let Some(failure) = remote.failure() {
        anyhow::bail!("{failure}; no report written (its learned row would be rule-based)");
    }
    eprintln!("remote policy at {url}: {} slots answered", remote.calls());
    report(&setup, &evaluation, &[])
}
