//! The `peergrid-agent-node` binary: parse the configuration, initialise
//! tracing, run the node until it ends or a signal arrives. SIGTERM/Ctrl-C
//! finish the current slot, then the process exits 0. Exit codes
//! (`peergrid_runtime::exit_code`): 0 done, 1 runtime failure, 2 bad
//! configuration.

use std::process::ExitCode;

use anyhow::anyhow;
use clap::Parser;
use peergrid_agent_node::{AgentArgs, AgentError, Command};
use peergrid_runtime::{exit_code, init_tracing, BadInput, ShutdownController, Stopping};
use tracing::{error, info};

fn main() -> ExitCode {
    let result = run_command(AgentArgs::parse());
    exit_code(&result, |e| e.downcast_ref().is_some_and(AgentError::is_bad_input))
}

/// Runs the command; every error is printed (or logged) before it returns.
fn run_command(args: AgentArgs) -> anyhow::Result<()> {
    let command = args.command.unwrap_or(Command::Run);
    let config = args.into_config().map_err(|e| {
        eprintln!("peergrid-agent-node: {e}");
        BadInput::new(e)
    })?;
    if command == Command::CheckConfig {
        println!("{}", config.redacted_json());
        return Ok(());
    }
    init_tracing(config.json_logs);
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(|e| {
            eprintln!("peergrid-agent-node: cannot start the runtime: {e}");
            e
        })?;
    match command {
        Command::Health => runtime.block_on(health(&config)),
        _ => runtime.block_on(run(config)),
    }
}

/// The market's status with the agent token; an unhealthy market is a
/// failure (exit 1), whatever the reason.
async fn health(config: &peergrid_agent_node::AgentConfig) -> anyhow::Result<()> {
    match peergrid_agent_node::health(config).await {
        Ok(s) => {
            println!(
                "ok: slot {} prosumers {} nodes {} mode {} paused {}",
                s.slot, s.prosumers, s.nodes, s.mode, s.paused
            );
            Ok(())
        }
        Err(e) => {
            eprintln!("peergrid-agent-node: market unhealthy: {e}");
            Err(anyhow!("market unhealthy: {e}"))
        }
    }
}

async fn run(config: peergrid_agent_node::AgentConfig) -> anyhow::Result<()> {
    let controller = ShutdownController::new();
    let node = peergrid_agent_node::start(config, controller.subscribe());
    match controller.stop_on_signal_or(node.finished()).await {
        Ok(Stopping::Finished) => {}
        Ok(Stopping::Signal) => info!("shutdown requested: finishing the current slot"),
        Err(e) => error!(error = %e, "cannot listen for signals; stopping"),
    }
    match node.join().await {
        Ok(report) => {
            info!(slots_played = report.slots_played, prosumers = report.returns.len(), "bye");
            Ok(())
        }
        Err(e) => {
            error!(error = format!("{e:#}"), "agent-node failed");
            Err(e)
        }
    }
}
