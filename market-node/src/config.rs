//! The market-node's one typed configuration: defaults, then a JSON file
//! (`--config`), then environment variables and flags (clap), validated as a
//! whole before anything starts.
//!
//! [`MarketConfig`] is what [`crate::start`] takes. Tests build it directly
//! with [`MarketConfig::new`]; the binary goes through [`Cli`]. The
//! `Display` impl is the redacted form printed in the first log line: tokens
//! only ever show as `<redacted>`/`<unset>` (their `Debug`).

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};
use peergrid_core::data::split::WeekSplit;
use peergrid_core::data::{DatasetKind, DatasetSource};
use peergrid_core::simulation::SimConfig;
use peergrid_runtime::connections::{self, ConnectionLimits};
use peergrid_runtime::{
    replace_if_given, DatasetArgs, MarketNode, NodeArgs, ProbeArgs, ServerArgs, ServerSettings,
    Tokens,
};
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// A configuration problem, naming the setting and its bound.
#[derive(Debug, Error)]
#[error("invalid {field}: {reason}")]
pub struct ConfigError {
    pub field: String,
    pub reason: String,
}

/// A runtime setting error (TLS files, tokens) keeps the setting's name.
impl From<peergrid_runtime::RuntimeError> for ConfigError {
    fn from(e: peergrid_runtime::RuntimeError) -> ConfigError {
        match e {
            peergrid_runtime::RuntimeError::Config { name, reason } => {
                ConfigError { field: name, reason }
            }
            other => ConfigError { field: "runtime".into(), reason: other.to_string() },
        }
    }
}

/// A core error about a setting (the dataset's) keeps the setting's name.
impl From<peergrid_core::CoreError> for ConfigError {
    fn from(e: peergrid_core::CoreError) -> ConfigError {
        match e {
            peergrid_core::CoreError::InvalidField { field, reason } => {
                ConfigError { field, reason }
            }
            other => bad("dataset", other.to_string()),
        }
    }
}

fn bad(field: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError { field: field.into(), reason: reason.into() }
}

/// How the clock advances.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum ClockMode {
    /// A slot clears as soon as every expected prosumer reported, or at the deadline.
    #[default]
    Fast,
    /// One slot every `slot_period_ms`.
    RealTime,
}

impl ClockMode {
    pub fn name(self) -> &'static str {
        match self {
            ClockMode::Fast => "fast",
            ClockMode::RealTime => "real-time",
        }
    }
}

/// Every non-secret market setting (what a config file's `market` object holds).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MarketSettings {
    pub listen: SocketAddr,
    pub metrics_listen: Option<SocketAddr>,
    /// The dataset the run plays (every agent-node must play the same one).
    pub dataset: DatasetKind,
    /// The CSV file of a `citylearn-csv` or `ausgrid-csv` dataset.
    pub data_file: Option<PathBuf>,
    /// First dataset slot; later slots follow consecutively, wrapping at the end.
    pub start_slot: u64,
    pub mode: ClockMode,
    /// Fast mode: how long a slot waits for reports, ms.
    pub deadline_ms: u64,
    /// Real-time mode: one slot every this many ms.
    pub slot_period_ms: u64,
    /// Clearing starts (without an operator `Start`) once this many prosumers are connected.
    pub min_prosumers: u32,
    /// Stop opening slots after this many.
    pub max_slots: Option<u64>,
    /// A connected node silent for this long (and late last slot) is no longer waited for.
    pub node_timeout_ms: u64,
    /// Most reports one batch may carry.
    pub max_batch: usize,
    /// A node whose stream is gone keeps its id range and households this
    /// long (absent, not missing); then its lease expires and they leave.
    pub lease_grace_ms: u64,
    /// A registration that has not joined within this long expires.
    pub join_timeout_ms: u64,
    /// Fast mode: the longest a slot waits for nodes that hold it (they wait
    /// for the next policy version of a synchronous learner), from its opening.
    pub max_hold_ms: u64,
    /// Largest average power one household may draw, kW: a report with more
    /// load than this × the slot's hours × its scenario load scale is refused.
    pub max_household_kw: f64,
    /// After SIGTERM, how long open calls (streams, idle connections,
    /// half-sent requests) get before the server abandons them and exits.
    pub shutdown_timeout_ms: u64,
    /// Most open gRPC connections (more are accepted and closed at once).
    /// Unset: the soft RLIMIT_NOFILE minus a quarter, at most 4096.
    pub max_connections: Option<usize>,
    /// A new connection must complete its TLS handshake and HTTP/2 preface
    /// within this long, or it is closed.
    pub handshake_timeout_ms: u64,
    /// A served connection that carries no call (request or stream) for
    /// this long is closed, even if it answers pings.
    pub idle_timeout_ms: u64,
    pub insecure_no_auth: bool,
    pub json_logs: bool,
    /// PEM certificate chain the gRPC listener presents (TLS on when set,
    /// together with `tls_key`).
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// Play only the training days of this split: skip the validation and
    /// test weeks (the weeks `peergrid run` evaluates on). Unset: every slot.
    pub train_weeks_only: Option<WeekSplit>,
    /// Serve in-process at `local://NAME` instead of on `listen` (an
    /// embedding program such as `peergrid run --transport local`; not a
    /// file or flag setting: nothing outside this process could connect).
    #[serde(skip)]
    pub local_name: Option<String>,
}

impl Default for MarketSettings {
    fn default() -> Self {
        MarketSettings {
            listen: "127.0.0.1:50051".parse().expect("literal address"),
            metrics_listen: None,
            dataset: DatasetKind::Bundled,
            data_file: None,
            start_slot: 0,
            mode: ClockMode::Fast,
            deadline_ms: 200,
            slot_period_ms: 1000,
            min_prosumers: 1,
            max_slots: None,
            node_timeout_ms: 10_000,
            max_batch: 100_000,
            lease_grace_ms: 30_000,
            join_timeout_ms: 10_000,
            max_hold_ms: 60_000,
            max_household_kw: 50.0,
            shutdown_timeout_ms: peergrid_runtime::serve::limits::SHUTDOWN_TIMEOUT_MS,
            max_connections: None,
            handshake_timeout_ms: connections::DEFAULT_HANDSHAKE_TIMEOUT_MS,
            idle_timeout_ms: connections::DEFAULT_IDLE_TIMEOUT_MS,
            insecure_no_auth: false,
            json_logs: false,
            tls_cert: None,
            tls_key: None,
            train_weeks_only: None,
            local_name: None,
        }
    }
}

/// The config file: a `SimConfig` and market settings, both optional.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConfigFile {
    pub sim: SimConfig,
    pub market: MarketSettings,
}

/// The validated configuration of a market-node.
#[derive(Clone)]
pub struct MarketConfig {
    pub settings: MarketSettings,
    pub sim: SimConfig,
    pub tokens: Tokens,
}

pub const DEADLINE_MS: (u64, u64) = (1, 600_000);
pub const SLOT_PERIOD_MS: (u64, u64) = (10, 86_400_000);
pub const NODE_TIMEOUT_MS: (u64, u64) = (100, 86_400_000);
pub const SHUTDOWN_TIMEOUT_MS: (u64, u64) = (0, 600_000);
pub const MAX_BATCH: (usize, usize) = (1, 1_000_000);
pub const LEASE_GRACE_MS: (u64, u64) = (100, 86_400_000);
pub const JOIN_TIMEOUT_MS: (u64, u64) = (100, 3_600_000);
pub const MAX_HOLD_MS: (u64, u64) = (1, 3_600_000);
pub const MAX_HOUSEHOLD_KW: (f64, f64) = (0.1, 10_000.0);

impl MarketConfig {
    /// Validates `settings`, `sim` and the tokens together. With no token
    /// configured the market refuses to start unless `insecure_no_auth`.
    pub fn new(
        settings: MarketSettings,
        sim: SimConfig,
        tokens: Tokens,
    ) -> Result<MarketConfig, ConfigError> {
        let in_range = |field: &str, v: u64, (lo, hi): (u64, u64)| {
            if (lo..=hi).contains(&v) {
                Ok(())
            } else {
                Err(bad(field, format!("must lie in {lo}..={hi}, got {v}")))
            }
        };
        in_range("deadline_ms", settings.deadline_ms, DEADLINE_MS)?;
        in_range("slot_period_ms", settings.slot_period_ms, SLOT_PERIOD_MS)?;
        in_range("node_timeout_ms", settings.node_timeout_ms, NODE_TIMEOUT_MS)?;
        in_range("shutdown_timeout_ms", settings.shutdown_timeout_ms, SHUTDOWN_TIMEOUT_MS)?;
        in_range("max_batch", settings.max_batch as u64, (MAX_BATCH.0 as u64, MAX_BATCH.1 as u64))?;
        in_range("lease_grace_ms", settings.lease_grace_ms, LEASE_GRACE_MS)?;
        in_range("join_timeout_ms", settings.join_timeout_ms, JOIN_TIMEOUT_MS)?;
        in_range("max_hold_ms", settings.max_hold_ms, MAX_HOLD_MS)?;
        in_range("min_prosumers", settings.min_prosumers as u64, (1, 10_000_000))?;
        let (lo, hi) = MAX_HOUSEHOLD_KW;
        if !(settings.max_household_kw.is_finite()
            && (lo..=hi).contains(&settings.max_household_kw))
        {
            return Err(bad(
                "max_household_kw",
                format!("must lie in [{lo}, {hi}] kW, got {}", settings.max_household_kw),
            ));
        }
        in_range(
            "handshake_timeout_ms",
            settings.handshake_timeout_ms,
            connections::HANDSHAKE_TIMEOUT_MS,
        )?;
        in_range("idle_timeout_ms", settings.idle_timeout_ms, connections::IDLE_TIMEOUT_MS)?;
        if let Some(n) = settings.max_connections {
            let (lo, hi) = connections::MAX_CONNECTIONS;
            in_range("max_connections", n as u64, (lo as u64, hi as u64))?;
        }
        if settings.max_slots == Some(0) {
            return Err(bad("max_slots", "must be ≥ 1 when given"));
        }
        peergrid_runtime::tls::check_server_pair(
            settings.tls_cert.as_deref(),
            settings.tls_key.as_deref(),
        )
        .map_err(ConfigError::from)?;
        if let Some(name) = &settings.local_name {
            peergrid_runtime::inproc::check_name(name)
                .map_err(|e| bad("local_name", e.to_string()))?;
            if settings.tls_cert.is_some() {
                return Err(bad(
                    "local_name",
                    "an in-process market serves without TLS: unset tls_cert/tls_key",
                ));
            }
        }
        settings.dataset_source()?;
        sim.validate().map_err(|e| bad("sim", e.to_string()))?;
        let tokens = if settings.insecure_no_auth {
            Tokens::insecure_no_auth()
        } else {
            tokens.require_configured()?
        };
        Ok(MarketConfig { settings, sim, tokens })
    }
}

impl MarketSettings {
    /// The dataset `dataset` and `data_file` name, checked.
    pub fn dataset_source(&self) -> Result<DatasetSource, ConfigError> {
        DatasetSource::new(self.dataset, self.data_file.clone()).map_err(ConfigError::from)
    }
}

impl MarketConfig {
    /// The accept loop's limits; the error names the setting and its bound.
    pub fn connection_limits(&self) -> Result<ConnectionLimits, ConfigError> {
        let s = &self.settings;
        ConnectionLimits::new(
            s.max_connections,
            Some(s.handshake_timeout_ms),
            Some(s.idle_timeout_ms),
        )
        .map_err(|e| bad(e.field, e.reason))
    }
}

/// Redacted, for the first log line.
impl fmt::Display for MarketConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let settings = serde_json::to_string(&self.settings).map_err(|_| fmt::Error)?;
        let sim = serde_json::to_string(&self.sim).map_err(|_| fmt::Error)?;
        write!(f, "market {settings} sim {sim} tokens {:?}", self.tokens)
    }
}

impl fmt::Debug for MarketConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Command line of the `market-node` binary. Every flag also reads an
/// environment variable; flags and variables override the config file.
#[derive(Debug, Parser)]
#[command(
    name = "market-node",
    version,
    about = "peergrid market-node: the clock and auctioneer of a distributed run"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Query the gRPC health service of a running market; exit 0 if SERVING, 1 otherwise.
    Health {
        #[command(flatten)]
        target: ProbeArgs<MarketNode>,
    },
}

/// The market's flags: the ones every node has, the ones every server
/// has (`peergrid_runtime::node_args`), the dataset's, and its own.
#[derive(Debug, Default, clap::Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub node: NodeArgs<MarketNode>,
    #[command(flatten)]
    pub server: ServerArgs<MarketNode>,
    #[command(flatten)]
    pub dataset: DatasetArgs,
    /// First dataset slot [default: 0].
    #[arg(long, env = "PEERGRID_MARKET_START_SLOT")]
    pub start_slot: Option<u64>,
    #[arg(long, value_enum, env = "PEERGRID_MARKET_MODE")]
    pub mode: Option<ClockMode>,
    /// Fast mode: ms to wait for reports [default: 200].
    #[arg(long, env = "PEERGRID_MARKET_DEADLINE_MS")]
    pub deadline_ms: Option<u64>,
    /// Real-time mode: ms per slot [default: 1000].
    #[arg(long, env = "PEERGRID_MARKET_SLOT_PERIOD_MS")]
    pub slot_period_ms: Option<u64>,
    /// Start clearing once this many prosumers are connected [default: 1].
    #[arg(long, env = "PEERGRID_MARKET_MIN_PROSUMERS")]
    pub min_prosumers: Option<u32>,
    /// Stop opening slots after this many.
    #[arg(long, env = "PEERGRID_MARKET_MAX_SLOTS")]
    pub max_slots: Option<u64>,
    /// A silent node is no longer waited for after this many ms [default: 10000].
    #[arg(long, env = "PEERGRID_MARKET_NODE_TIMEOUT_MS")]
    pub node_timeout_ms: Option<u64>,
    /// Most reports in one batch [default: 100000].
    #[arg(long, env = "PEERGRID_MARKET_MAX_BATCH")]
    pub max_batch: Option<usize>,
    /// A node without a stream keeps its ids and households this many ms [default: 30000].
    #[arg(long, env = "PEERGRID_MARKET_LEASE_GRACE_MS")]
    pub lease_grace_ms: Option<u64>,
    /// A registration that never joins expires after this many ms [default: 10000].
    #[arg(long, env = "PEERGRID_MARKET_JOIN_TIMEOUT_MS")]
    pub join_timeout_ms: Option<u64>,
    /// Fast mode: a slot waits at most this many ms for nodes holding it [default: 60000].
    #[arg(long, env = "PEERGRID_MARKET_MAX_HOLD_MS")]
    pub max_hold_ms: Option<u64>,
    /// Largest average power one household may draw, kW; bounds load reports [default: 50].
    #[arg(long, env = "PEERGRID_MARKET_MAX_HOUSEHOLD_KW")]
    pub max_household_kw: Option<f64>,
}

impl RunArgs {
    /// Defaults, then the config file (`{"sim": SimConfig, "market":
    /// settings}`, both optional), then the environment and flags; tokens
    /// from `tokens`.
    pub fn resolve(&self, tokens: Tokens) -> Result<MarketConfig, ConfigError> {
        let file: ConfigFile = self.node.read_config()?;
        let mut s = file.market;
        macro_rules! set {
            ($($f:ident),*) => { $( replace_if_given(&mut s.$f, self.$f); )* };
        }
        set!(
            start_slot,
            mode,
            deadline_ms,
            slot_period_ms,
            min_prosumers,
            node_timeout_ms,
            max_batch,
            lease_grace_ms,
            join_timeout_ms,
            max_hold_ms,
            max_household_kw
        );
        self.dataset.apply(&mut s.dataset, &mut s.data_file).map_err(ConfigError::from)?;
        replace_if_given(&mut s.max_slots, self.max_slots.map(Some));
        self.node.apply(&mut s.metrics_listen, &mut s.json_logs);
        self.server.apply(ServerSettings {
            listen: &mut s.listen,
            tls_cert: &mut s.tls_cert,
            tls_key: &mut s.tls_key,
            shutdown_timeout_ms: &mut s.shutdown_timeout_ms,
            max_connections: &mut s.max_connections,
            handshake_timeout_ms: &mut s.handshake_timeout_ms,
            idle_timeout_ms: &mut s.idle_timeout_ms,
        });
        s.insecure_no_auth |= self.node.auth.insecure_no_auth;
        MarketConfig::new(s, file.sim, tokens)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use peergrid_runtime::{LogArgs, LogFormat};

    /// `--insecure-no-auth` and the node-wide flags `node`.
    fn insecure_args(mut node: NodeArgs<MarketNode>) -> RunArgs {
        node.auth.insecure_no_auth = true;
        RunArgs { node, ..RunArgs::default() }
    }

    fn insecure() -> MarketSettings {
        MarketSettings { insecure_no_auth: true, ..MarketSettings::default() }
    }

    #[test]
    fn refuses_to_start_without_tokens_unless_insecure() {
        let e =
            MarketConfig::new(MarketSettings::default(), SimConfig::default(), Tokens::default())
                .unwrap_err();
        assert!(e.to_string().contains("--insecure-no-auth"), "{e}");
        let c = MarketConfig::new(insecure(), SimConfig::default(), Tokens::default()).unwrap();
        assert!(c.tokens.is_insecure());
    }

    #[test]
    fn bounds_are_named() {
        let cases = [
            (MarketSettings { deadline_ms: 0, ..insecure() }, "deadline_ms"),
            (MarketSettings { slot_period_ms: 5, ..insecure() }, "slot_period_ms"),
            (MarketSettings { max_batch: 0, ..insecure() }, "max_batch"),
            (MarketSettings { lease_grace_ms: 0, ..insecure() }, "lease_grace_ms"),
            (MarketSettings { join_timeout_ms: 0, ..insecure() }, "join_timeout_ms"),
            (MarketSettings { max_hold_ms: 0, ..insecure() }, "max_hold_ms"),
            (MarketSettings { min_prosumers: 0, ..insecure() }, "min_prosumers"),
            (MarketSettings { max_household_kw: 0.0, ..insecure() }, "max_household_kw"),
            (MarketSettings { max_household_kw: f64::NAN, ..insecure() }, "max_household_kw"),
            (MarketSettings { max_slots: Some(0), ..insecure() }, "max_slots"),
            (MarketSettings { max_connections: Some(0), ..insecure() }, "max_connections"),
            (MarketSettings { handshake_timeout_ms: 1, ..insecure() }, "handshake_timeout_ms"),
            (MarketSettings { idle_timeout_ms: 1, ..insecure() }, "idle_timeout_ms"),
            (MarketSettings { tls_cert: Some("server.pem".into()), ..insecure() }, "tls_key"),
            (MarketSettings { tls_key: Some("server.key".into()), ..insecure() }, "tls_cert"),
            (MarketSettings { local_name: Some("no spaces".into()), ..insecure() }, "local_name"),
            (
                MarketSettings {
                    local_name: Some("market".into()),
                    tls_cert: Some("server.pem".into()),
                    tls_key: Some("server.key".into()),
                    ..insecure()
                },
                "local_name",
            ),
        ];
        for (s, field) in cases {
            let e = MarketConfig::new(s, SimConfig::default(), Tokens::default()).unwrap_err();
            assert_eq!(e.field, field, "{e}");
        }
    }

    #[test]
    fn flags_override_the_file_and_display_redacts() {
        let dir =
            std::env::temp_dir().join(format!("peergrid-market-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("market.json");
        std::fs::write(
            &path,
            r#"{"market": {"deadline_ms": 50, "start_slot": 7}, "sim": {"mechanism": {"kind": "uniform", "k": 0.3}}}"#,
        )
        .unwrap();
        let args = RunArgs {
            deadline_ms: Some(75),
            ..insecure_args(NodeArgs { config: Some(path), ..NodeArgs::default() })
        };
        let c = args.resolve(Tokens::default()).unwrap();
        assert_eq!((c.settings.deadline_ms, c.settings.start_slot), (75, 7));
        assert!(!c.settings.json_logs);
        let json = insecure_args(NodeArgs {
            logs: LogArgs { log_format: Some(LogFormat::Json), json_logs: false },
            ..NodeArgs::default()
        });
        assert!(json.resolve(Tokens::default()).unwrap().settings.json_logs, "--log-format json");
        let shorthand = insecure_args(NodeArgs {
            logs: LogArgs { log_format: None, json_logs: true },
            ..NodeArgs::default()
        });
        assert!(shorthand.resolve(Tokens::default()).unwrap().settings.json_logs, "--json-logs");
        let cli = Cli::try_parse_from([
            "market-node",
            "--insecure-no-auth",
            "--max-connections",
            "64",
            "--handshake-timeout-ms",
            "500",
        ])
        .unwrap();
        let c = cli.run.resolve(Tokens::default()).unwrap();
        assert_eq!((c.settings.max_connections, c.settings.handshake_timeout_ms), (Some(64), 500));
        assert_eq!(c.connection_limits().unwrap().max_connections, 64);
        let e =
            Cli::try_parse_from(["market-node", "--insecure-no-auth", "--max-connections", "0"])
                .unwrap()
                .run
                .resolve(Tokens::default())
                .unwrap_err();
        assert_eq!(e.field, "max_connections", "{e}");
        let tokens = Tokens::new(
            Some("agent-secret-0123456789".into()),
            Some("operator-secret-0123456789".into()),
        )
        .unwrap();
        let c = MarketConfig::new(MarketSettings::default(), SimConfig::default(), tokens).unwrap();
        let shown = c.to_string();
        assert!(!shown.contains("secret") && shown.contains("<redacted>"), "{shown}");
    }

    #[test]
    fn the_dataset_comes_from_the_shared_flags_and_a_csv_needs_its_file() {
        let parse = |argv: &[&str]| {
            Cli::try_parse_from(["market-node", "--insecure-no-auth"].iter().chain(argv)).unwrap()
        };
        let c = parse(&["--dataset", "ausgrid-csv", "--data-file", "/data/homes.csv"])
            .run
            .resolve(Tokens::default())
            .unwrap();
        assert_eq!(
            c.settings.dataset_source().unwrap(),
            DatasetSource::AusgridCsv("/data/homes.csv".into())
        );
        assert_eq!(c.settings.dataset, DatasetKind::AusgridCsv);
        for argv in [&["--dataset", "citylearn-csv"][..], &["--data-file", "homes.csv"][..]] {
            let e = parse(argv).run.resolve(Tokens::default()).unwrap_err();
            assert_eq!(e.field, "data_file", "{argv:?}: {e}");
        }
        let file: ConfigFile =
            serde_json::from_str(r#"{"market": {"dataset": "synthetic"}}"#).unwrap();
        assert_eq!(
            file.market.dataset_source().unwrap(),
            DatasetSource::Synthetic,
            "config files name it the same way"
        );
    }
}
