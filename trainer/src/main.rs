//! The `trainer` binary: parse the configuration, start the learner and its
//! gRPC server, run until SIGTERM / Ctrl-C, then write a final checkpoint
//! and exit 0 (exit 1, naming the panic, if the learner thread died; exit
//! 2 for a refused configuration, by `peergrid_runtime::exit_code`).
//! `trainer health` and `trainer status` query a running one (`https://`
//! with `--tls-ca` for a TLS trainer).

use std::process::ExitCode;

use clap::Parser;
use peergrid_runtime::{
    exit_code, health_command, init_tracing, load_token, no_other_bad_input, BadInput, Secret,
    ShutdownController, Stopping, Tokens,
};
use peergrid_trainer::config::{Cli, Command, RunArgs, TargetArgs};

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
    let result = match cli.command {
        Some(Command::Health { target }) => {
            let service = peergrid_proto::services::LEARNER_SERVICE;
            health_command("trainer", target.target(), service).await.map_err(anyhow::Error::from)
        }
        Some(Command::Status { target, json }) => status(&target, json).await,
        None => start(cli.run).await,
    };
    exit_code(&result, no_other_bad_input)
}

/// Prints the status of the trainer at `target`; a token that cannot be
/// read is bad input.
async fn status(target: &TargetArgs, json: bool) -> anyhow::Result<()> {
    let addr = &target.addr;
    let token = status_token().map_err(|e| {
        eprintln!("trainer status: {e}");
        BadInput::new(e)
    })?;
    let s = peergrid_trainer::grpc::fetch_status(target.target(), token.as_ref())
        .await
        .inspect_err(|e| eprintln!("trainer at {addr}: {e:#}"))?;
    if json {
        println!("{s}");
    } else {
        for (k, v) in s.as_object().into_iter().flatten() {
            println!("{k:>20}  {v}");
        }
    }
    Ok(())
}

/// Resolves the tokens and the configuration (refusals are bad input),
/// then trains until a signal or the learner's death.
async fn start(args: RunArgs) -> anyhow::Result<()> {
    // No token at all is refused here, as bad input, like the market's.
    let tokens = args.node.auth.server_tokens().and_then(Tokens::require_configured);
    let tokens = tokens.map_err(|e| e.to_string());
    let (config, tokens) = tokens
        .and_then(|t| args.resolve().map(|c| (c, t)).map_err(|e| e.to_string()))
        .map_err(|e| {
            eprintln!("trainer: {e}");
            BadInput::new(e)
        })?;
    init_tracing(config.json_logs);
    tracing::info!(ppo = ?config.ppo, learner = ?config.learner, "starting trainer {}", env!("CARGO_PKG_VERSION"));
    let controller = ShutdownController::new();
    let result = async {
        let trainer = peergrid_trainer::start(config, tokens, controller.subscribe()).await?;
        match controller.stop_on_signal_or(trainer.finished()).await? {
            Stopping::Signal => tracing::info!("signal received: final checkpoint and stop"),
            // Only a dead learner stops the trainer on its own (health
            // already said NOT_SERVING); join reports the panic and the
            // process exits non-zero.
            Stopping::Finished => {
                let reason = trainer.learner.death().unwrap_or_else(|| "no message".to_owned());
                tracing::error!("the learner thread died ({reason}): the trainer stopped");
            }
        }
        trainer.join().await
    }
    .await;
    result.inspect_err(|e| tracing::error!("trainer failed: {e:#}"))
}
