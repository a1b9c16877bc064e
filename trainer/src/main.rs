//! The `trainer` binary: parse the configuration, start the learner and its
//! gRPC server, run until SIGTERM / Ctrl-C, then write a final checkpoint
//! and exit 0 (exit 1, naming the panic, if the learner thread died).
//! `trainer health` and `trainer status` query a running one (`https://`
//! with `--tls-ca` for a TLS trainer).

use std::process::ExitCode;

use clap::Parser;
use peergrid_runtime::{
    init_tracing, load_token, wait_for_signal, Secret, ShutdownController, Tokens,
};
use peergrid_trainer::config::{Cli, Command};

/// The token `status` presents: the operator's, else the agent's (either
/// may read status), each from its variable or `_FILE` as everywhere.
fn status_token() -> Result<Option<Secret>, peergrid_runtime::RuntimeError> {
    match load_token(Tokens::OPERATOR_ENV)? {
        Some(token) => Ok(Some(token)),
        None => load_token(Tokens::AGENT_ENV),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Health { target }) => {
            let addr = &target.addr;
            return match peergrid_trainer::grpc::check_health(target.target()).await {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => {
                    eprintln!("trainer at {addr} is not serving");
                    ExitCode::from(1)
                }
                Err(e) => {
                    eprintln!("trainer at {addr}: {e:#}");
                    ExitCode::from(1)
                }
            };
        }
        Some(Command::Status { target, json }) => {
            let addr = &target.addr;
            let token = match status_token() {
                Ok(token) => token,
                Err(e) => {
                    eprintln!("trainer status: {e}");
                    return ExitCode::from(2);
                }
            };
            return match peergrid_trainer::grpc::fetch_status(target.target(), token.as_ref()).await
            {
                Ok(s) if json => {
                    println!("{s}");
                    ExitCode::SUCCESS
                }
                Ok(s) => {
                    for (k, v) in s.as_object().into_iter().flatten() {
                        println!("{k:>20}  {v}");
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("trainer at {addr}: {e:#}");
                    ExitCode::from(1)
                }
            };
        }
        None => {}
    }
    let insecure = cli.run.insecure_no_auth;
    let tokens = if insecure {
        Ok(Tokens::insecure_no_auth())
    } else {
        Tokens::from_env().map_err(|e| e.to_string())
    };
    let (config, tokens) =
        match tokens.and_then(|t| cli.run.resolve().map(|c| (c, t)).map_err(|e| e.to_string())) {
            Ok(x) => x,
            Err(e) => {
                eprintln!("trainer: {e}");
                return ExitCode::from(2);
            }
        };
    init_tracing(config.json_logs);
    tracing::info!(ppo = ?config.ppo, learner = ?config.learner, "starting trainer {}", env!("CARGO_PKG_VERSION"));
    let controller = ShutdownController::new();
    let result = async {
        let trainer = peergrid_trainer::start(config, tokens, controller.subscribe()).await?;
        let learner = trainer.learner.clone();
        tokio::select! {
            signal = wait_for_signal() => { signal?; tracing::info!("signal received: final checkpoint and stop"); }
            // Health already says NOT_SERVING; join reports the panic and
            // the process exits non-zero.
            reason = learner.died() => tracing::error!("the learner thread died ({reason}): stopping"),
        }
        controller.trigger();
        trainer.join().await
    }
    .await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("trainer failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}
