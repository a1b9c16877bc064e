//! What the two halves of the `peergrid` command share.
//!
//! `peergrid` itself (operator commands: `ctl`, `eval`, `market clear`) does
//! not link libtorch, so it starts in milliseconds; `peergrid run`, which
//! trains, is the separate binary `peergrid-run` that `peergrid` hands the
//! command line to. Both evaluate and report through [`evaluate`] and map
//! errors to exit codes with [`exit_code`]: 2 for bad input (a file, a
//! flag: `peergrid_runtime::BadInput`, or an error of the core or the
//! evaluation that blames the input), 1 for anything else.

pub mod evaluate;
pub mod output;
pub mod remote_eval;

use std::process::ExitCode;

/// Lets a closed stdout end the command quietly (`peergrid ctl watch | head`):
/// the default SIGPIPE action, as other Unix tools, instead of Rust's
/// ignored SIGPIPE and a panic on the next `println!`.
///
/// Process-wide, and fatal for sockets too: a vectored write (`writev`,
/// which hyper's HTTP/2 uses) to a TCP peer that has gone raises SIGPIPE
/// and kills the process without a word. So a command that serves or
/// holds many connections (`peergrid run`'s embedded cluster) calls it
/// only once its networking is over, right before it prints its result
/// ([`evaluate::report`]).
pub fn quiet_on_closed_stdout() {
    // SAFETY: called first thing in `main`, before any thread exists;
    // restores the signal's default disposition, which is always valid.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Installs logging for a command: warnings only unless RUST_LOG says
/// otherwise (for `run`, the progress bar shows the rest of what the
/// embedded nodes would log).
pub fn init_logging(json: bool) {
    if std::env::var_os("RUST_LOG").is_none() {
        std::env::set_var("RUST_LOG", "warn");
    }
    peergrid_runtime::init_tracing(json);
}

/// Prints a command's error and picks its exit code
/// (`peergrid_runtime::exit_code`): 2 when the user's input was wrong
/// ([`BadInput`](peergrid_runtime::BadInput), a core error, an evaluation error that blames the
/// input), 1 otherwise.
pub fn exit_code(result: anyhow::Result<()>) -> ExitCode {
    if let Err(e) = &result {
        eprintln!("error: {e:#}");
    }
    peergrid_runtime::exit_code(&result, |e| {
        e.is::<peergrid_core::CoreError>()
            || e.downcast_ref::<peergrid_eval::EvalError>().is_some_and(|e| e.is_bad_input())
    })
}
