//! `peergrid`: the umbrella command.
//!
//! `peergrid run` (the default) trains a shared PPO policy with the
//! embedded cluster, then evaluates it, the baselines and the
//! perfect-foresight optimum on held-out days and writes a report; it is
//! the separate binary `peergrid-run` (it links libtorch), which this
//! command executes in its place with the same arguments. Everything else
//! runs here and starts in milliseconds: evaluating a saved policy
//! (`peergrid eval`), clearing order books from CSV (`peergrid market
//! clear`) and operating a running market (`peergrid ctl`). Each subcommand
//! lives in its own module; this file only parses arguments (and the global
//! `--log-format`), installs logging and maps errors to exit codes: 2 for
//! bad input (a file, a flag), 1 for anything else.

mod ctl;
mod eval;
mod market;

use std::ffi::OsString;
use std::path::PathBuf;
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
    /// Train a shared policy (embedded cluster), evaluate it against the baselines and the optimum on held-out days, write a report (default; `peergrid run --help` for its options).
    #[command(disable_help_flag = true)]
    Run {
        /// Options of `peergrid run` (see `peergrid run --help`).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
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

/// The binary that trains: `peergrid run` is `peergrid-run`.
const RUN_BINARY: &str = "peergrid-run";

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Before `run` too: the default RUST_LOG it sets is the one
    // `peergrid-run` would set, and it inherits it.
    peergrid_cli::init_logging(cli.log_format.is_json());
    let result = match cli.command.unwrap_or(Command::Run { args: Vec::new() }) {
        Command::Run { args } => exec_run(cli.log_format, args),
        // `report` makes a closed stdout quiet once the remote policy's
        // connection is done with (see `quiet_on_closed_stdout`).
        Command::Eval(args) => eval::run(args),
        Command::Market { command } => {
            peergrid_cli::quiet_on_closed_stdout();
            market::run(command)
        }
        // One client connection; `ctl watch | head` is what it is for.
        Command::Ctl(args) => {
            peergrid_cli::quiet_on_closed_stdout();
            ctl::run(args)
        }
    };
    peergrid_cli::exit_code(result)
}

/// Replaces this process with `peergrid-run ARGS` (same exit code, same
/// signals); the log format travels in `PEERGRID_LOG_FORMAT`. Returns only
/// if it cannot.
fn exec_run(log_format: LogFormat, args: Vec<OsString>) -> anyhow::Result<()> {
    let Some(program) = find_run_binary() else {
        anyhow::bail!(
            "`peergrid run` trains with libtorch in the separate binary {RUN_BINARY}, which is neither next to \
             this one nor on PATH: build both with `cargo build --release -p peergrid-cli` (or run scripts/run.sh)"
        );
    };
    let mut command = std::process::Command::new(&program);
    command
        .args(args)
        .env("PEERGRID_LOG_FORMAT", if log_format.is_json() { "json" } else { "text" });
    use std::os::unix::process::CommandExt;
    let e = command.exec();
    anyhow::bail!("cannot run {}: {e}", program.display())
}

/// `peergrid-run` next to this executable, else the first on PATH.
fn find_run_binary() -> Option<PathBuf> {
    let beside = std::env::current_exe().ok().and_then(|exe| Some(exe.parent()?.join(RUN_BINARY)));
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>());
    beside.into_iter().chain(on_path.map(|dir| dir.join(RUN_BINARY))).find(|p| p.is_file())
}
