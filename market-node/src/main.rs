//! The `market-node` binary: parse the configuration, start the market,
//! run until SIGTERM / Ctrl-C (or `--max-slots`), drain the open slot and
//! exit 0. `market-node health --addr URL` checks a running market instead
//! (exit 0 if serving, 1 otherwise) for container health checks; `https://`
//! with `--tls-ca FILE` for a TLS market.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use peergrid_market_node::config::{Cli, Command};
use peergrid_runtime::{init_tracing, wait_for_signal, ShutdownController, Tokens};

/// Beyond the server's own shutdown timeout: the open slot clears (at
/// most its deadline) and the tasks stop.
const DRAIN_SLACK: Duration = Duration::from_secs(30);

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Health { addr, tls_ca, tls_domain }) = cli.command {
        return match peergrid_market_node::grpc::check_health(
            &addr,
            tls_ca.as_deref(),
            tls_domain.as_deref(),
        )
        .await
        {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => {
                eprintln!("market-node at {addr} is not serving");
                ExitCode::from(1)
            }
            Err(e) => {
                eprintln!("market-node at {addr}: {e:#}");
                ExitCode::from(1)
            }
        };
    }
    if let Err(e) = peergrid_runtime::check_renamed_env(|name| std::env::var(name).ok()) {
        eprintln!("market-node: {e}");
        return ExitCode::from(2);
    }
    let config = match Tokens::from_env()
        .map_err(|e| e.to_string())
        .and_then(|t| cli.run.resolve(t).map_err(|e| e.to_string()))
    {
        Ok(config) => config,
        Err(e) => {
            eprintln!("market-node: {e}");
            return ExitCode::from(2);
        }
    };
    init_tracing(config.settings.json_logs);
    tracing::info!("starting market-node {} with {config}", env!("CARGO_PKG_VERSION"));
    match run(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("market-node failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: peergrid_market_node::MarketConfig) -> anyhow::Result<()> {
    let controller = ShutdownController::new();
    let drain = Duration::from_millis(config.settings.shutdown_timeout_ms) + DRAIN_SLACK;
    let market = peergrid_market_node::start(config, controller.subscribe()).await?;
    tokio::select! {
        signal = wait_for_signal() => { signal?; tracing::info!("signal received: draining"); }
        _ = market.finished() => tracing::info!("run complete: draining"),
    }
    controller.trigger();
    tokio::time::timeout(drain, market.join())
        .await
        .map_err(|_| anyhow::anyhow!("drain timed out"))??;
    tracing::info!("market-node stopped");
    Ok(())
}
