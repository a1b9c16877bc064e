//! The `peergrid-agent-node` binary: parse the configuration, initialise
//! tracing, run the node until it ends or a signal arrives. SIGTERM/Ctrl-C
//! finish the current slot, then the process exits 0. Exit codes: 0 done,
//! 1 runtime failure, 2 bad configuration.

use std::process::ExitCode;

use clap::Parser;
use peergrid_agent_node::{AgentArgs, AgentError, Command};
use peergrid_runtime::{init_tracing, wait_for_signal, ShutdownController};
use tracing::{error, info};

fn main() -> ExitCode {
    let args = AgentArgs::parse();
    let command = args.command.unwrap_or(Command::Run);
    let config = match args.into_config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("peergrid-agent-node: {e}");
            return ExitCode::from(2);
        }
    };
    if command == Command::CheckConfig {
        println!("{}", config.redacted_json());
        return ExitCode::SUCCESS;
    }
    init_tracing(config.json_logs);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("peergrid-agent-node: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match command {
        Command::Health => runtime.block_on(async {
            match peergrid_agent_node::health(&config).await {
                Ok(s) => {
                    println!(
                        "ok: slot {} prosumers {} nodes {} mode {} paused {}",
                        s.slot, s.prosumers, s.nodes, s.mode, s.paused
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("peergrid-agent-node: market unhealthy: {e}");
                    ExitCode::FAILURE
                }
            }
        }),
        _ => runtime.block_on(run(config)),
    }
}

async fn run(config: peergrid_agent_node::AgentConfig) -> ExitCode {
    let controller = ShutdownController::new();
    let mut node = tokio::spawn(peergrid_agent_node::run(config, controller.subscribe()));
    let result = tokio::select! {
        r = &mut node => r,
        signal = wait_for_signal() => {
            if let Err(e) = signal {
                error!(error = %e, "cannot listen for signals; stopping");
            }
            info!("shutdown requested: finishing the current slot");
            controller.trigger();
            node.await
        }
    };
    match result {
        Ok(Ok(report)) => {
            info!(slots_played = report.slots_played, prosumers = report.returns.len(), "bye");
            ExitCode::SUCCESS
        }
        Ok(Err(e)) => {
            error!(error = format!("{e:#}"), "agent-node failed");
            match e.downcast_ref::<AgentError>() {
                Some(AgentError::Config { .. }) => ExitCode::from(2),
                _ => ExitCode::FAILURE,
            }
        }
        Err(e) => {
            error!(error = %e, "agent-node task panicked");
            ExitCode::FAILURE
        }
    }
}
