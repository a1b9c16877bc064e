//! `peergrid-run`: the half of the `peergrid` command that trains, and the
//! only one that links libtorch. Users call it as `peergrid run` (or plain
//! `peergrid`), which executes this binary with the same arguments, so
//! `peergrid ctl`, `eval` and `market clear` never load libtorch.
//!
//! It trains a shared PPO policy with the embedded cluster ([`train`]),
//! then evaluates it, the baselines and the perfect-foresight optimum on
//! held-out days and writes a report ([`run`]).

mod remote;
mod run;
mod train;
mod validate;

use std::process::ExitCode;

use clap::Parser;
use peergrid_runtime::LogFormat;

#[derive(Parser, Debug)]
#[command(
    name = "peergrid run",
    bin_name = "peergrid run",
    version,
    about = "Train a shared policy (embedded cluster), evaluate it against the baselines and the optimum on held-out days, write a report"
)]
struct Cli {
    #[command(flatten)]
    run: run::RunArgs,
    /// Log lines as human-readable text or one JSON object per event (for
    /// log collectors); RUST_LOG filters them (default: warnings only).
    #[arg(long, value_enum, env = "PEERGRID_LOG_FORMAT", default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

fn main() -> ExitCode {
    // No `quiet_on_closed_stdout` here: with SIGPIPE's default action a
    // write to a socket the embedded cluster's peer closed would kill the
    // run silently. `report` (and the study below) set it before printing.
    let cli = Cli::parse();
    peergrid_cli::init_logging(cli.log_format.is_json());
    peergrid_cli::exit_code(run::run(cli.run))
}
