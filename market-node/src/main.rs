//! The `market-node` binary: parse the configuration, start the market,
//! run until SIGTERM / Ctrl-C (or `--max-slots`), drain the open slot and
//! exit 0. `market-node health --addr URL` checks a running market instead
//! (exit 0 if serving, 1 otherwise) for container health checks; `https://`
//! with `--tls-ca FILE` for a TLS market. A refused configuration exits 2
//! (`peergrid_runtime::exit_code`).

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use peergrid_market_node::config::{Cli, Command, RunArgs};
use peergrid_runtime::{
    exit_code, health_command, init_tracing, no_other_bad_input, BadInput, ShutdownController,
    Stopping,
};

/// Beyond the server's own shutdown timeout: the open slot clears (at
/// most its deadline) and the tasks stop.
const DRAIN_SLACK: Duration = Duration::from_secs(30);

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Health { target }) => {
            let service = peergrid_proto::services::MARKET_SERVICE;
            health_command("market-node", target.target(), service)
                .await
                .map_err(anyhow::Error::from)
        }
        None => start(&cli.run).await,
    };
    exit_code(&result, no_other_bad_input)
}

/// Resolves the configuration (refusals are bad input), then runs.
async fn start(args: &RunArgs) -> anyhow::Result<()> {
    let config = peergrid_runtime::check_renamed_env(|name| std::env::var(name).ok())
        .and_then(|()| args.node.auth.server_tokens().map_err(|e| e.to_string()))
        .and_then(|t| args.resolve(t).map_err(|e| e.to_string()))
        .map_err(|e| {
            eprintln!("market-node: {e}");
            BadInput::new(e)
        })?;
    init_tracing(config.settings.json_logs);
    tracing::info!("starting market-node {} with {config}", env!("CARGO_PKG_VERSION"));
    run(config).await.inspect_err(|e| tracing::error!("market-node failed: {e:#}"))
}

async fn run(config: peergrid_market_node::MarketConfig) -> anyhow::Result<()> {
    let controller = ShutdownController::new();
    let drain = Duration::from_millis(config.settings.shutdown_timeout_ms) + DRAIN_SLACK;
    let market = peergrid_market_node::start(config, controller.subscribe()).await?;
    match controller.stop_on_signal_or(market.finished()).await? {
        Stopping::Signal => tracing::info!("signal received: draining"),
        Stopping::Finished => tracing::info!("run complete: draining"),
    }
    tokio::time::timeout(drain, market.join())
        .await
        .map_err(|_| anyhow::anyhow!("drain timed out"))??;
    tracing::info!("market-node stopped");
    Ok(())
}
