//! `peergrid`: the umbrella command.
//!
//! `peergrid run` (the default) trains a shared PPO policy with the
//! embedded cluster (market-node, trainer and agent-nodes in this process,
//! over loopback gRPC or in-process pipes), then evaluates it, the
//! baselines and the perfect-foresight optimum on held-out days and writes
//! a report; evaluates a saved policy the same way (`peergrid eval`),
//! clears order books from CSV (`peergrid market clear`) and operates a
//! running market (`peergrid ctl`). Each subcommand lives in its own
//! module; this file only parses arguments (and the global `--log-format`),
//! installs logging and maps errors to exit codes: 2 for bad input (a
//! file, a flag), 1 for anything else.

mod ctl;
mod eval;
mod evaluate;
mod market;
mod run;
mod train;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use peergrid_runtime::LogFormat;

#[derive(Parser, Debug)]
#[command(name = "peergrid", version, about = "Peer-to-peer energy trading simulation with multi-agent RL", long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Log lines as human-readable text or one JSON object per event (for
    /// log collectors); RUST_LOG filters them (default: warnings only).
    #[arg(long, global = true, value_enum, env = "PEERGRID_LOG_FORMAT", default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Train a shared policy (embedded cluster), evaluate it against the baselines and the optimum on held-out days, write a report (default).
    Run(run::RunArgs),
    /// Evaluate a saved policy against the baselines and the optimum on held-out days, write a report.
    Eval(eval::EvalArgs),
    /// Operate a running market-node (status, pause, step, inject scenarios, watch).
    Ctl(ctl::CtlArgs),
    /// Market tools.
    Market {
        #[command(subcommand)]
        command: market::MarketCommand,
    },
}

/// An error caused by the user's input: exit code 2.
#[derive(Debug)]
pub struct InputError(pub String);

impl std::fmt::Display for InputError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InputError {}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Warnings only (for `run`, the progress bar shows the rest of what the
    // embedded nodes would log) unless RUST_LOG says otherwise.
    if std::env::var_os("RUST_LOG").is_none() {
        std::env::set_var("RUST_LOG", "warn");
    }
    peergrid_runtime::init_tracing(cli.log_format.is_json());
    let result = match cli.command.unwrap_or(Command::Run(run::RunArgs::default())) {
        Command::Run(args) => run::run(args),
        Command::Eval(args) => eval::run(args),
        Command::Market { command } => market::run(command),
        Command::Ctl(args) => ctl::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            let bad_input = e.downcast_ref::<InputError>().is_some()
                || e.downcast_ref::<peergrid_core::CoreError>().is_some()
                || e.downcast_ref::<peergrid_eval::EvalError>().is_some_and(|e| e.is_bad_input());
            if bad_input {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}
