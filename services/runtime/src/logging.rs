//! `tracing` initialisation for every binary: one call at the top of `main`.
//!
//! The filter comes from `RUST_LOG` (e.g. `info,peergrid_market_node=debug`)
//! and defaults to `info`; an unparsable directive is skipped rather than
//! silencing the logs. `json = true` writes one JSON object per event (for
//! log collectors); otherwise human-readable lines. [`LogFormat`] is the
//! `--log-format text|json` flag every binary shares.

use tracing::level_filters::LevelFilter;
use tracing_subscriber::EnvFilter;

/// How log events are written: `--log-format` (env `PEERGRID_LOG_FORMAT`)
/// of every peergrid binary.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines (coloured on a terminal).
    #[default]
    Text,
    /// One JSON object per event, for log collectors.
    Json,
}

impl LogFormat {
    pub fn is_json(self) -> bool {
        self == LogFormat::Json
    }
}

/// The logging flags of every service binary (`#[command(flatten)]`).
#[derive(Clone, Copy, Debug, Default, clap::Args)]
pub struct LogArgs {
    /// Log format: human-readable text or one JSON object per event [default: text].
    #[arg(long, value_enum, env = "PEERGRID_LOG_FORMAT")]
    pub log_format: Option<LogFormat>,
    /// Shorthand for --log-format json.
    #[arg(long, env = "PEERGRID_JSON_LOGS")]
    pub json_logs: bool,
}

impl LogArgs {
    /// Whether to log JSON: `--json-logs`, else `--log-format`, else
    /// `configured` (a config file's choice).
    pub fn json(&self, configured: bool) -> bool {
        self.json_logs || self.log_format.map_or(configured, LogFormat::is_json)
    }
}

/// Installs the global subscriber. Returns `false` (and changes nothing) if
/// one is already installed, e.g. when tests or an embedding program call it
/// twice.
pub fn init_tracing(json: bool) -> bool {
    let filter =
        EnvFilter::builder().with_default_directive(LevelFilter::INFO.into()).from_env_lossy();
    // Colours only for a terminal: log files and `docker logs` stay plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(true)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let installed = if json { builder.json().try_init() } else { builder.try_init() };
    installed.is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_initialisation_is_a_no_op() {
        let first = init_tracing(false);
        assert!(!init_tracing(true), "a subscriber is installed now (first call: {first})");
        tracing::info!(slot = 1, "logging works after init");
    }
}
