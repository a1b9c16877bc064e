//! `peergrid`: the umbrella command.
//!
//! Today it runs the embedded reference simulation with the baselines
//! (`peergrid run`, the default), clears order books from CSV
//! (`peergrid market clear`) and operates a running market (`peergrid ctl`). Each subcommand lives in its own module; this
//! file only parses arguments and maps errors to exit codes: 2 for bad input
//! (a file, a flag), 1 for anything else.

mod ctl;
mod market;
mod run;
mod table;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "peergrid", version, about = "Peer-to-peer energy trading simulation with multi-agent RL", long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the reference simulation on held-out weeks with the baseline policies and print the KPIs (default).
    Run(run::RunArgs),
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
    let result = match cli.command.unwrap_or(Command::Run(run::RunArgs::default())) {
        Command::Run(args) => run::run(args),
        Command::Market { command } => market::run(command),
        Command::Ctl(args) => ctl::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            if e.downcast_ref::<InputError>().is_some() || e.downcast_ref::<peergrid_core::CoreError>().is_some() {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}
