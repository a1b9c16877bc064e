//! The agent-node's configuration: one typed struct, [`AgentConfig`], built
//! from (lowest to highest precedence) its defaults, a JSON file
//! (`--config`), environment variables and command-line flags
//! ([`AgentArgs`], clap), then validated once with errors that name the
//! field. The bearer token is a [`Secret`] read like every peergrid token
//! (`peergrid_runtime::load_token`): it is never logged, never shown by
//! `Debug` and serialised as `<redacted>`, so [`AgentConfig::redacted_json`]
//! is safe for the first log line. URLs and their TLS settings are checked
//! by `peergrid_runtime::dial`, the code that later dials them.
//!
//! This module reads files and the environment but starts nothing.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use clap::{Parser, Subcommand};
use peergrid_core::data::{DatasetKind, DatasetSource};
use peergrid_core::prosumer::CommunityConfig;
pub use peergrid_runtime::Secret;
use peergrid_runtime::{load_token_with, DatasetArgs, LogArgs, SettingNames, Target};
use serde::{Deserialize, Serialize};

use crate::error::AgentError;

/// Most prosumers one node may host (the market's bound on `prosumer_count`).
pub const MAX_PROSUMERS: u32 = 100_000;
/// Most actor threads one node may run.
pub const MAX_ACTOR_THREADS: usize = 64;
/// The environment variable holding the agent token (`…_FILE`: a file with it).
pub const TOKEN_ENV: &str = "PEERGRID_AGENT_TOKEN";
pub const TOKEN_FILE_ENV: &str = "PEERGRID_AGENT_TOKEN_FILE";
/// How the config names the market's and the trainer's URL and TLS settings.
pub const MARKET_SETTINGS: SettingNames =
    SettingNames { url: "market", ca: "tls_ca", domain: "tls_domain" };
pub const LEARNER_SETTINGS: SettingNames =
    SettingNames { url: "learner", ca: "learner_tls_ca", domain: "learner_tls_domain" };
/// How the config names a remote policy's URL (inside `policy`) and CA.
pub const REMOTE_POLICY_SETTINGS: SettingNames =
    SettingNames { url: "policy", ca: "remote_policy_tls_ca", domain: "remote_policy_tls_domain" };
/// The prefix of a remote policy in `policy`: `remote:http://host:port`.
pub const REMOTE_POLICY_PREFIX: &str = "remote:";

/// Which policy every prosumer of this node runs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum PolicyChoice {
    RuleBased,
    GridOnly,
    /// A `.safetensors` policy, the trainer's format
    /// (`peergrid_core::policy::weights`), run as the deterministic Gaussian mean.
    Weights(PathBuf),
    /// An external `PolicyService` (`proto/peergrid/policy/v1`) at this URL
    /// (`http://`, `https://` with `remote_policy_tls_ca`, or `local://`),
    /// asked once per slot for every prosumer's action; written
    /// `remote:URL`. The rule-based action stands in for a slot it does not
    /// answer in time or answers wrongly.
    Remote(String),
}

impl FromStr for PolicyChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<PolicyChoice, String> {
        match s {
            "" => Err(
                "must be rule-based, grid-only, remote:URL or the path of a .safetensors policy"
                    .into(),
            ),
            "rule-based" => Ok(PolicyChoice::RuleBased),
            "grid-only" => Ok(PolicyChoice::GridOnly),
            remote if remote.starts_with(REMOTE_POLICY_PREFIX) => {
                Ok(PolicyChoice::Remote(remote[REMOTE_POLICY_PREFIX.len()..].to_owned()))
            }
            path => Ok(PolicyChoice::Weights(PathBuf::from(path))),
        }
    }
}

impl TryFrom<String> for PolicyChoice {
    type Error = String;
    fn try_from(s: String) -> Result<PolicyChoice, String> {
        s.parse()
    }
}

impl From<PolicyChoice> for String {
    fn from(p: PolicyChoice) -> String {
        match p {
            PolicyChoice::RuleBased => "rule-based".into(),
            PolicyChoice::GridOnly => "grid-only".into(),
            PolicyChoice::Weights(path) => path.display().to_string(),
            PolicyChoice::Remote(url) => format!("{REMOTE_POLICY_PREFIX}{url}"),
        }
    }
}

/// Reconnect delays: exponential from `base_ms` up to `max_ms`, with seeded
/// jitter; `max_attempts` consecutive failures end the run (unset = forever).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReconnectConfig {
    pub base_ms: u64,
    pub max_ms: u64,
    pub max_attempts: Option<u32>,
}

impl Default for ReconnectConfig {
    fn default() -> Self {
        ReconnectConfig { base_ms: 200, max_ms: 10_000, max_attempts: None }
    }
}

/// Everything an agent-node needs to run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AgentConfig {
    /// The market-node's gRPC URL (`http://host:port`, or `https://host:port`
    /// for a TLS market, which needs `tls_ca`, or `local://NAME` for a
    /// market in this process).
    pub market: String,
    /// PEM CA certificate(s) to trust for an `https://` market. Required for
    /// https: this build carries no system or webpki root store.
    pub tls_ca: Option<PathBuf>,
    /// Server name to verify instead of the market URL's host.
    pub tls_domain: Option<String>,
    /// Node name shown in the market's logs and status (1..=64 characters).
    pub name: String,
    /// Number of prosumers this node hosts (1..=100000).
    pub prosumers: u32,
    pub policy: PolicyChoice,
    /// The dataset the prosumers' load and PV come from; it must be the market's.
    pub dataset: DatasetKind,
    /// The CSV file of a `citylearn-csv` or `ausgrid-csv` dataset.
    pub data_file: Option<PathBuf>,
    /// Community generator settings (shares, sizes, seed); `n_prosumers` is
    /// ignored: the market assigns the id range.
    pub community: CommunityConfig,
    /// Agent bearer token; required unless `insecure_no_auth`.
    pub token: Option<Secret>,
    pub insecure_no_auth: bool,
    /// Where to serve `GET /metrics`; unset = no metrics server.
    pub metrics_listen: Option<SocketAddr>,
    pub json_logs: bool,
    /// actix arbiters (threads) the prosumer actors are spread over, one
    /// contiguous id block each.
    pub actor_threads: usize,
    /// Where the node keeps its session (id, secret, id range) across
    /// process restarts: `session.json`, readable by the owner only. A
    /// restarted node resumes it and gets its id range back within the
    /// market's lease grace. Unset: a restarted node registers afresh.
    pub state_dir: Option<PathBuf>,
    pub reconnect: ReconnectConfig,
    /// Compress the node's messages with gzip (off by default: on a LAN it
    /// costs more CPU than the bytes it saves; useful over slow links).
    pub gzip: bool,
    /// How long a shutdown waits for the current slot's clearing, ms.
    pub drain_timeout_ms: u64,
    /// TCP connect timeout towards the market, ms.
    pub connect_timeout_ms: u64,
    /// The trainer's gRPC URL (`http://host:port`, `https://host:port` for a
    /// TLS trainer, which needs `learner_tls_ca`, or `local://NAME` for a
    /// trainer in this process). When set, the node
    /// learns: its actors sample from the trainer's current policy, stream
    /// their experience back and swap weights between slots (`policy` is
    /// then ignored).
    pub learner: Option<String>,
    /// PEM CA certificate(s) to trust for an `https://` learner.
    pub learner_tls_ca: Option<PathBuf>,
    /// Server name to verify instead of the learner URL's host.
    pub learner_tls_domain: Option<String>,
    /// Slots per rollout pushed to the trainer (1..=10000).
    pub rollout_slots: usize,
    /// Synchronous learning: longest wait for the next policy version after
    /// a rollout before acting on with the current one, ms.
    pub learner_wait_ms: u64,
    /// With `policy: remote:URL`: how long one slot's call (connecting
    /// included) may take before the slot falls back to the rule-based
    /// action, ms (10..=600000). The market holds the slot meanwhile, for at
    /// most its `max_hold_ms` (60 s by default): keep this below that.
    pub remote_policy_timeout_ms: u64,
    /// PEM CA certificate(s) to trust for an `https://` remote policy.
    pub remote_policy_tls_ca: Option<PathBuf>,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            market: "http://127.0.0.1:50051".into(),
            tls_ca: None,
            tls_domain: None,
            name: "agent-node".into(),
            prosumers: 100,
            policy: PolicyChoice::RuleBased,
            dataset: DatasetKind::Bundled,
            data_file: None,
            community: CommunityConfig::default(),
            token: None,
            insecure_no_auth: false,
            metrics_listen: None,
            json_logs: false,
            actor_threads: std::thread::available_parallelism().map_or(2, |n| n.get()).min(8),
            state_dir: None,
            reconnect: ReconnectConfig::default(),
            gzip: false,
            drain_timeout_ms: 10_000,
            connect_timeout_ms: 5_000,
            learner: None,
            learner_tls_ca: None,
            learner_tls_domain: None,
            rollout_slots: 48,
            learner_wait_ms: 600_000,
            remote_policy_timeout_ms: 30_000,
            remote_policy_tls_ca: None,
        }
    }
}

impl AgentConfig {
    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<(), AgentError> {
        let bad = AgentError::config;
        self.market_target().check()?;
        match self.learner_target() {
            Some(learner) => learner.check()?,
            None if self.learner_tls_ca.is_some() || self.learner_tls_domain.is_some() => {
                return Err(bad(
                    "learner_tls_ca",
                    "is only used with a learner URL (--learner)".into(),
                ))
            }
            None => {}
        }
        if !(1..=10_000).contains(&self.rollout_slots) {
            return Err(bad(
                "rollout_slots",
                format!("must lie in 1..=10000, got {}", self.rollout_slots),
            ));
        }
        if !(100..=86_400_000).contains(&self.learner_wait_ms) {
            return Err(bad(
                "learner_wait_ms",
                format!("must lie in 100..=86400000, got {}", self.learner_wait_ms),
            ));
        }
        peergrid_core::node_name::check_node_name(&self.name, "name").map_err(field_error)?;
        self.dataset_source()?;
        if let PolicyChoice::Weights(path) = &self.policy {
            if path.extension().is_none_or(|e| e != "safetensors") {
                return Err(bad(
                    "policy",
                    format!(
                        "must be rule-based, grid-only, remote:URL or a .safetensors policy (the trainer's format), got {}",
                        path.display()
                    ),
                ));
            }
        }
        self.validate_remote_policy()?;
        if !(1..=MAX_PROSUMERS).contains(&self.prosumers) {
            return Err(bad(
                "prosumers",
                format!("must lie in 1..={MAX_PROSUMERS}, got {}", self.prosumers),
            ));
        }
        self.community.validate().map_err(|e| bad("community", e.to_string()))?;
        if !(1..=MAX_ACTOR_THREADS).contains(&self.actor_threads) {
            return Err(bad(
                "actor_threads",
                format!("must lie in 1..={MAX_ACTOR_THREADS}, got {}", self.actor_threads),
            ));
        }
        // The token itself was validated when it became a `Secret`.
        match (&self.token, self.insecure_no_auth) {
            (Some(_), true) => return Err(bad("token", "set a token or --insecure-no-auth, not both".into())),
            (None, false) => {
                return Err(bad(
                    "token",
                    format!("is required: pass --token, set {TOKEN_ENV} or {TOKEN_FILE_ENV}, or run with --insecure-no-auth"),
                ))
            }
            _ => {}
        }
        if self.state_dir.as_ref().is_some_and(|d| d.as_os_str().is_empty()) {
            return Err(bad("state_dir", "must be a directory path, got an empty one".into()));
        }
        let r = &self.reconnect;
        if r.base_ms == 0 || r.base_ms > r.max_ms || r.max_ms > 3_600_000 {
            return Err(bad(
                "reconnect.base_ms",
                format!("need 0 < base_ms ≤ max_ms ≤ 3600000, got {} and {}", r.base_ms, r.max_ms),
            ));
        }
        if self.connect_timeout_ms == 0 || self.connect_timeout_ms > 600_000 {
            return Err(bad(
                "connect_timeout_ms",
                format!("must lie in 1..=600000, got {}", self.connect_timeout_ms),
            ));
        }
        if self.drain_timeout_ms > 600_000 {
            return Err(bad(
                "drain_timeout_ms",
                format!("must be ≤ 600000, got {}", self.drain_timeout_ms),
            ));
        }
        Ok(())
    }

    /// The remote policy's settings: its URL and CA fit (as dialled), no
    /// learner beside it, a timeout in range.
    fn validate_remote_policy(&self) -> Result<(), AgentError> {
        let bad = AgentError::config;
        match self.remote_policy_target() {
            Some(target) => {
                if target.url.is_empty() {
                    return Err(bad(
                        "policy",
                        "remote: needs the policy service's URL, e.g. remote:http://127.0.0.1:50071".into(),
                    ));
                }
                target.check()?;
                if self.learner.is_some() {
                    return Err(bad(
                        "policy",
                        "a remote policy cannot be combined with a learner (--learner): one of them decides the actions".into(),
                    ));
                }
            }
            None if self.remote_policy_tls_ca.is_some() => {
                return Err(bad(
                    "remote_policy_tls_ca",
                    "is only used with a remote policy (--policy remote:https://…)".into(),
                ))
            }
            None => {}
        }
        if !(10..=600_000).contains(&self.remote_policy_timeout_ms) {
            return Err(bad(
                "remote_policy_timeout_ms",
                format!("must lie in 10..=600000, got {}", self.remote_policy_timeout_ms),
            ));
        }
        Ok(())
    }

    /// Where the remote policy is and how to trust it, with `policy: remote:URL`.
    pub fn remote_policy_target(&self) -> Option<Target<'_>> {
        match &self.policy {
            PolicyChoice::Remote(url) => Some(Target {
                url,
                ca: self.remote_policy_tls_ca.as_deref(),
                domain: None,
                names: REMOTE_POLICY_SETTINGS,
            }),
            _ => None,
        }
    }

    /// The dataset `dataset` and `data_file` name, checked.
    pub fn dataset_source(&self) -> Result<DatasetSource, AgentError> {
        DatasetSource::new(self.dataset, self.data_file.clone()).map_err(field_error)
    }

    /// Where the market is and how to trust it.
    pub fn market_target(&self) -> Target<'_> {
        Target {
            url: &self.market,
            ca: self.tls_ca.as_deref(),
            domain: self.tls_domain.as_deref(),
            names: MARKET_SETTINGS,
        }
    }

    /// Where the trainer is and how to trust it, when the node learns.
    pub fn learner_target(&self) -> Option<Target<'_>> {
        self.learner.as_deref().map(|url| Target {
            url,
            ca: self.learner_tls_ca.as_deref(),
            domain: self.learner_tls_domain.as_deref(),
            names: LEARNER_SETTINGS,
        })
    }

    /// The configuration as one JSON line with the token redacted.
    pub fn redacted_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| format!("<unprintable config: {e}>"))
    }
}

/// A core error about a setting, as a configuration error naming it.
fn field_error(e: peergrid_core::CoreError) -> AgentError {
    match e {
        peergrid_core::CoreError::InvalidField { field, reason } => {
            AgentError::Config { field, reason }
        }
        other => AgentError::Core(other),
    }
}

/// The command line. Every option can also come from the config file; most
/// from the environment too.
#[derive(Debug, Default, Parser)]
#[command(
    name = "peergrid-agent-node",
    version,
    about = "Hosts K prosumer actors and trades for them on a peergrid market-node."
)]
pub struct AgentArgs {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// JSON config file (fields of the config; flags and environment override it).
    #[arg(long, env = "PEERGRID_AGENT_CONFIG")]
    pub config: Option<PathBuf>,
    /// Market-node gRPC URL, e.g. http://127.0.0.1:50051 (https:// needs --tls-ca).
    #[arg(long, env = "PEERGRID_MARKET")]
    pub market: Option<String>,
    /// PEM CA certificate to trust for an https:// market.
    #[arg(long, env = "PEERGRID_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// Verify the market's certificate for this name instead of the URL's host.
    #[arg(long, env = "PEERGRID_TLS_DOMAIN")]
    pub tls_domain: Option<String>,
    /// Number of prosumers to host.
    #[arg(long, env = "PEERGRID_AGENT_PROSUMERS")]
    pub prosumers: Option<u32>,
    /// The run's seed (`PEERGRID_SEED`, as `peergrid run --seed`): here it
    /// seeds the community generator (overrides the community file's seed).
    #[arg(long, env = "PEERGRID_SEED")]
    pub seed: Option<u64>,
    /// rule-based, grid-only, remote:URL (an external PolicyService, e.g.
    /// remote:http://127.0.0.1:50071), or the path of a .safetensors policy (the trainer's format).
    #[arg(long, env = "PEERGRID_AGENT_POLICY")]
    pub policy: Option<String>,
    /// With --policy remote:URL: longest wait for one slot's actions before
    /// playing the rule-based action instead, ms [default: 30000].
    #[arg(long, env = "PEERGRID_REMOTE_POLICY_TIMEOUT_MS")]
    pub remote_policy_timeout_ms: Option<u64>,
    /// PEM CA certificate to trust for an https:// remote policy.
    #[arg(long, env = "PEERGRID_REMOTE_POLICY_TLS_CA")]
    pub remote_policy_tls_ca: Option<PathBuf>,
    /// Community config JSON (shares, sizes, seed).
    #[arg(long)]
    pub community: Option<PathBuf>,
    #[command(flatten)]
    pub dataset: DatasetArgs,
    /// Node name for the market's logs and the trainer's rollouts; unique per
    /// node [default: $HOSTNAME, else agent-node].
    #[arg(long, env = "PEERGRID_AGENT_NAME")]
    pub name: Option<String>,
    /// Agent bearer token (prefer PEERGRID_AGENT_TOKEN or PEERGRID_AGENT_TOKEN_FILE: flags show in `ps`).
    #[arg(long)]
    pub token: Option<String>,
    /// Send no token (only against a market started with --insecure-no-auth).
    #[arg(long)]
    pub insecure_no_auth: bool,
    /// Serve Prometheus metrics on this address, e.g. 0.0.0.0:9102.
    #[arg(long, env = "PEERGRID_AGENT_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    #[command(flatten)]
    pub logs: LogArgs,
    /// Threads the prosumer actors run on (default: the number of cores, at most 8).
    #[arg(long, env = "PEERGRID_AGENT_ACTOR_THREADS")]
    pub actor_threads: Option<usize>,
    /// Keep the session (id, secret, id range) in DIR/session.json and resume
    /// it after a restart (the same prosumer id range comes back within the
    /// market's lease grace).
    #[arg(long, env = "PEERGRID_AGENT_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// Give up after this many consecutive failed reconnects (default: never).
    #[arg(long)]
    pub max_reconnects: Option<u32>,
    /// Gzip outgoing messages (for slow links; off by default).
    #[arg(long)]
    pub gzip: bool,
    /// Learn from this trainer (http://host:port, https:// with --learner-tls-ca): sample from its policy, stream experience back.
    #[arg(long, env = "PEERGRID_LEARNER")]
    pub learner: Option<String>,
    /// PEM CA certificate to trust for an https:// learner.
    #[arg(long, env = "PEERGRID_LEARNER_TLS_CA")]
    pub learner_tls_ca: Option<PathBuf>,
    /// Verify the learner's certificate for this name instead of the URL's host.
    #[arg(long, env = "PEERGRID_LEARNER_TLS_DOMAIN")]
    pub learner_tls_domain: Option<String>,
    /// Slots per rollout sent to the trainer [default: 48].
    #[arg(long, env = "PEERGRID_AGENT_ROLLOUT_SLOTS")]
    pub rollout_slots: Option<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Subcommand)]
pub enum Command {
    /// Connect and register (default).
    Run,
    /// Validate the configuration, print it (redacted) and exit.
    CheckConfig,
    /// Ask the market for its status with the agent token; exit 0 if it answers.
    Health,
}

impl AgentArgs {
    /// Defaults ← file ← environment/flags, validated; reads the environment
    /// for the token.
    pub fn into_config(self) -> Result<AgentConfig, AgentError> {
        self.into_config_with(|name| std::env::var(name).ok())
    }

    /// [`into_config`](Self::into_config) with the environment supplied by `env`.
    pub fn into_config_with(
        self,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<AgentConfig, AgentError> {
        let mut cfg = match &self.config {
            Some(path) => read_json::<AgentConfig>(path, "config")?,
            None => AgentConfig::default(),
        };
        if let Some(path) = &self.community {
            cfg.community = read_json(path, "community")?;
        }
        if let Some(seed) = self.seed {
            cfg.community.seed = seed;
        }
        if let Some(v) = self.market {
            cfg.market = v;
        }
        if self.tls_ca.is_some() {
            cfg.tls_ca = self.tls_ca;
        }
        if self.tls_domain.is_some() {
            cfg.tls_domain = self.tls_domain;
        }
        if let Some(v) = self.prosumers {
            cfg.prosumers = v;
        }
        if let Some(v) = self.policy {
            cfg.policy = v.parse().map_err(|e: String| AgentError::config("policy", e))?;
        }
        self.dataset.apply(&mut cfg.dataset, &mut cfg.data_file).map_err(field_error)?;
        match self.name {
            Some(v) => cfg.name = v,
            // Unnamed replicas (`docker compose --scale`) must not share one
            // name: the trainer takes one rollout per node name and version.
            // The container's host name is unique, so it is the fallback.
            None if cfg.name == AgentConfig::default().name => {
                if let Some(host) = env("HOSTNAME").filter(|h| {
                    !h.is_empty()
                        && h.chars().count() <= peergrid_core::node_name::MAX_NODE_NAME_CHARS
                }) {
                    cfg.name = host;
                }
            }
            None => {}
        }
        if let Some(token) = token_from(self.token, &env)? {
            cfg.token = Some(token);
        }
        cfg.insecure_no_auth |= self.insecure_no_auth;
        if self.metrics_listen.is_some() {
            cfg.metrics_listen = self.metrics_listen;
        }
        cfg.json_logs = self.logs.json(cfg.json_logs);
        if let Some(v) = self.actor_threads {
            cfg.actor_threads = v;
        }
        if self.state_dir.is_some() {
            cfg.state_dir = self.state_dir;
        }
        if self.max_reconnects.is_some() {
            cfg.reconnect.max_attempts = self.max_reconnects;
        }
        if self.gzip {
            cfg.gzip = true;
        }
        if self.learner.as_deref().is_some_and(|l| !l.is_empty()) {
            cfg.learner = self.learner;
        }
        if self.learner_tls_ca.is_some() {
            cfg.learner_tls_ca = self.learner_tls_ca;
        }
        if self.learner_tls_domain.is_some() {
            cfg.learner_tls_domain = self.learner_tls_domain;
        }
        if let Some(v) = self.rollout_slots {
            cfg.rollout_slots = v;
        }
        if let Some(v) = self.remote_policy_timeout_ms {
            cfg.remote_policy_timeout_ms = v;
        }
        if self.remote_policy_tls_ca.is_some() {
            cfg.remote_policy_tls_ca = self.remote_policy_tls_ca;
        }
        cfg.validate()?;
        Ok(cfg)
    }
}

/// The token from `--token`, else `PEERGRID_AGENT_TOKEN`, else the file named
/// by `PEERGRID_AGENT_TOKEN_FILE` (`peergrid_runtime::load_token`: both
/// variables set is an error, and every token is checked for length).
fn token_from(
    flag: Option<String>,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<Option<Secret>, AgentError> {
    let named = |e: peergrid_runtime::RuntimeError| AgentError::config("token", e.to_string());
    match flag {
        Some(t) => Secret::new("--token", t).map(Some).map_err(named),
        None => load_token_with(TOKEN_ENV, env).map_err(named),
    }
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path, field: &str) -> Result<T, AgentError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| AgentError::config(field, format!("cannot read {}: {e}", path.display())))?;
    serde_json::from_str(&text)
        .map_err(|e| AgentError::config(field, format!("{}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "agent-secret-0123456789";

    fn args(argv: &[&str]) -> AgentArgs {
        AgentArgs::try_parse_from(
            std::iter::once("peergrid-agent-node").chain(argv.iter().copied()),
        )
        .unwrap()
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn field_of(e: AgentError) -> String {
        match e {
            AgentError::Config { field, .. } => field,
            other => panic!("not a config error: {other}"),
        }
    }

    #[test]
    fn flags_build_a_valid_config_and_the_token_never_prints() {
        let cfg = args(&[
            "--market",
            "http://10.0.0.5:50051",
            "--prosumers",
            "2500",
            "--seed",
            "7",
            "--token",
            TOKEN,
        ])
        .into_config_with(no_env)
        .unwrap();
        assert_eq!(cfg.market, "http://10.0.0.5:50051");
        assert_eq!(cfg.prosumers, 2500);
        assert_eq!(cfg.community.seed, 7);
        assert_eq!(cfg.policy, PolicyChoice::RuleBased);
        let printed = format!("{} {:?}", cfg.redacted_json(), cfg);
        assert!(!printed.contains(TOKEN) && printed.contains("<redacted>"), "{printed}");
    }

    #[test]
    fn https_market_with_a_ca_is_accepted() {
        let cfg = args(&[
            "--insecure-no-auth",
            "--market",
            "https://10.0.0.5:50051",
            "--tls-ca",
            "ca.pem",
            "--tls-domain",
            "market",
        ])
        .into_config_with(no_env)
        .unwrap();
        assert_eq!(
            (cfg.tls_ca, cfg.tls_domain.as_deref()),
            (Some(PathBuf::from("ca.pem")), Some("market"))
        );
    }

    #[test]
    fn an_https_learner_with_a_ca_is_accepted() {
        let argv = [
            "--insecure-no-auth",
            "--learner",
            "https://trainer:50061",
            "--learner-tls-ca",
            "ca.pem",
        ];
        let cfg = args(&[&argv[..], &["--learner-tls-domain", "trainer.internal"]].concat())
            .into_config_with(no_env)
            .unwrap();
        let target = cfg.learner_target().unwrap();
        assert_eq!(
            (target.ca, target.domain),
            (Some(Path::new("ca.pem")), Some("trainer.internal"))
        );
        assert!(target.is_tls() && !cfg.market_target().is_tls());
    }

    #[test]
    fn a_short_token_names_the_minimum_without_echoing_it() {
        let short = |name: &str| (name == TOKEN_ENV).then(|| "hunter2".to_string());
        let e = args(&[]).into_config_with(short).unwrap_err().to_string();
        assert!(
            e.contains(TOKEN_ENV) && e.contains("at least 16") && !e.contains("hunter2"),
            "{e}"
        );
    }

    #[test]
    fn token_comes_from_env_or_file_but_not_both() {
        let env = |name: &str| (name == TOKEN_ENV).then(|| TOKEN.to_string());
        assert_eq!(args(&[]).into_config_with(env).unwrap().token.unwrap().expose(), TOKEN);
        let both = |name: &str| {
            Some(if name == TOKEN_ENV { TOKEN.to_string() } else { "/nonexistent".to_string() })
        };
        assert_eq!(field_of(args(&[]).into_config_with(both).unwrap_err()), "token");
        let file =
            std::env::temp_dir().join(format!("peergrid-agent-token-{}", std::process::id()));
        std::fs::write(&file, format!("{TOKEN}\n")).unwrap();
        let path = file.display().to_string();
        let from_file = move |name: &str| (name == TOKEN_FILE_ENV).then(|| path.clone());
        assert_eq!(args(&[]).into_config_with(from_file).unwrap().token.unwrap().expose(), TOKEN);
        std::fs::remove_file(file).unwrap();
    }

    #[test]
    fn validation_errors_name_the_field() {
        let cases: &[(&[&str], &str)] = &[
            (&["--insecure-no-auth", "--prosumers", "0"], "prosumers"),
            (&["--insecure-no-auth", "--prosumers", "100001"], "prosumers"),
            (&["--insecure-no-auth", "--market", "ftp://x:1"], "market"),
            (&["--insecure-no-auth", "--market", "https://x:1"], "tls_ca"),
            (&["--insecure-no-auth", "--tls-ca", "ca.pem"], "tls_ca"),
            (
                &[
                    "--insecure-no-auth",
                    "--market",
                    "https://x:1",
                    "--tls-ca",
                    "ca.pem",
                    "--tls-domain",
                    "",
                ],
                "tls_domain",
            ),
            (&["--insecure-no-auth", "--market", "127.0.0.1:50051"], "market"),
            (&["--insecure-no-auth", "--market", "local://"], "market"),
            (&["--insecure-no-auth", "--market", "local://two words"], "market"),
            (&["--insecure-no-auth", "--market", "local://market", "--tls-ca", "ca.pem"], "tls_ca"),
            (&["--insecure-no-auth", "--learner", "local://a/b"], "learner"),
            (&["--insecure-no-auth", "--learner", "ftp://trainer:1"], "learner"),
            (&["--insecure-no-auth", "--learner", "https://trainer:1"], "learner_tls_ca"),
            (
                &[
                    "--insecure-no-auth",
                    "--learner",
                    "http://trainer:1",
                    "--learner-tls-ca",
                    "ca.pem",
                ],
                "learner_tls_ca",
            ),
            (&["--insecure-no-auth", "--learner-tls-ca", "ca.pem"], "learner_tls_ca"),
            (
                &[
                    "--insecure-no-auth",
                    "--learner",
                    "https://t:1",
                    "--learner-tls-ca",
                    "ca.pem",
                    "--learner-tls-domain",
                    "",
                ],
                "learner_tls_domain",
            ),
            (&["--insecure-no-auth", "--name", ""], "name"),
            (&["--insecure-no-auth", "--actor-threads", "0"], "actor_threads"),
            (&["--insecure-no-auth", "--policy", ""], "policy"),
            (&["--insecure-no-auth", "--policy", "w.json"], "policy"),
            (&["--insecure-no-auth", "--policy", "remote:"], "policy"),
            (&["--insecure-no-auth", "--policy", "remote:ftp://policy:1"], "policy"),
            (&["--insecure-no-auth", "--policy", "remote:127.0.0.1:50071"], "policy"),
            (
                &["--insecure-no-auth", "--policy", "remote:https://policy:1"],
                "remote_policy_tls_ca",
            ),
            (
                &["--insecure-no-auth", "--policy", "remote:http://p:1", "--learner", "http://t:1"],
                "policy",
            ),
            (&["--insecure-no-auth", "--remote-policy-tls-ca", "ca.pem"], "remote_policy_tls_ca"),
            (
                &[
                    "--insecure-no-auth",
                    "--policy",
                    "remote:http://p:1",
                    "--remote-policy-tls-ca",
                    "ca.pem",
                ],
                "remote_policy_tls_ca",
            ),
            (
                &[
                    "--insecure-no-auth",
                    "--policy",
                    "remote:http://p:1",
                    "--remote-policy-timeout-ms",
                    "0",
                ],
                "remote_policy_timeout_ms",
            ),
            (
                &["--insecure-no-auth", "--remote-policy-timeout-ms", "600001"],
                "remote_policy_timeout_ms",
            ),
            (&["--insecure-no-auth", "--dataset", "ausgrid-csv"], "data_file"),
            (&["--insecure-no-auth", "--data-file", "homes.csv"], "data_file"),
            (&[], "token"),
            (&["--token", "short"], "token"),
            (&["--token", TOKEN, "--insecure-no-auth"], "token"),
            (&["--insecure-no-auth", "--config", "/nonexistent/agent.json"], "config"),
            (&["--insecure-no-auth", "--community", "/nonexistent/community.json"], "community"),
        ];
        for (argv, field) in cases {
            let e = args(argv).into_config_with(no_env).unwrap_err();
            let text = e.to_string();
            assert_eq!(field_of(e), *field, "{argv:?}: {text}");
        }
        let csv =
            args(&["--insecure-no-auth", "--dataset", "ausgrid-csv", "--data-file", "homes.csv"]);
        let source = csv.into_config_with(no_env).unwrap().dataset_source().unwrap();
        assert_eq!(
            source,
            DatasetSource::AusgridCsv("homes.csv".into()),
            "the same flags as `peergrid run`"
        );
        let local = args(&[
            "--insecure-no-auth",
            "--market",
            "local://market-1",
            "--learner",
            "local://trainer-1",
        ]);
        local.into_config_with(no_env).expect("in-process URLs are valid");
        let mut cfg = AgentConfig { insecure_no_auth: true, ..AgentConfig::default() };
        cfg.community.share_ev = 2.0;
        let e = cfg.validate().unwrap_err().to_string();
        assert!(e.contains("community") && e.contains("share_ev"), "{e}");
        cfg = AgentConfig { insecure_no_auth: true, ..AgentConfig::default() };
        cfg.reconnect.base_ms = 0;
        assert_eq!(field_of(cfg.validate().unwrap_err()), "reconnect.base_ms");
    }

    #[test]
    fn a_remote_policy_comes_from_flags_env_or_the_file() {
        let cfg = args(&[
            "--insecure-no-auth",
            "--policy",
            "remote:http://127.0.0.1:50071",
            "--remote-policy-timeout-ms",
            "250",
        ])
        .into_config_with(no_env)
        .unwrap();
        assert_eq!(cfg.policy, PolicyChoice::Remote("http://127.0.0.1:50071".into()));
        assert_eq!(cfg.remote_policy_timeout_ms, 250);
        let target = cfg.remote_policy_target().expect("a remote policy has a target");
        assert_eq!((target.url, target.is_tls()), ("http://127.0.0.1:50071", false));
        assert!(
            cfg.redacted_json().contains(r#""policy":"remote:http://127.0.0.1:50071""#),
            "{}",
            cfg.redacted_json()
        );
        let tls = args(&[
            "--insecure-no-auth",
            "--policy",
            "remote:https://policy:50071",
            "--remote-policy-tls-ca",
            "ca.pem",
        ])
        .into_config_with(no_env)
        .unwrap();
        assert_eq!(tls.remote_policy_target().unwrap().ca, Some(Path::new("ca.pem")));
        assert_eq!(AgentConfig::default().remote_policy_timeout_ms, 30_000);
        assert!(AgentConfig::default().remote_policy_target().is_none());
        let dir = std::env::temp_dir()
            .join(format!("peergrid-agent-remote-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("agent.json");
        std::fs::write(
            &file,
            r#"{"policy": "remote:local://policy-1", "remote_policy_timeout_ms": 5000}"#,
        )
        .unwrap();
        let f = file.display().to_string();
        let cfg = args(&["--insecure-no-auth", "--config", &f]).into_config_with(no_env).unwrap();
        assert_eq!(
            (cfg.policy, cfg.remote_policy_timeout_ms),
            (PolicyChoice::Remote("local://policy-1".into()), 5000)
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn file_then_flags_and_policy_paths() {
        let dir =
            std::env::temp_dir().join(format!("peergrid-agent-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("agent.json");
        std::fs::write(&file, r#"{"prosumers": 40, "name": "from-file", "policy": "grid-only", "community": {"seed": 3}}"#)
            .unwrap();
        let f = file.display().to_string();
        let cfg = args(&["--insecure-no-auth", "--config", &f, "--name", "from-flag"])
            .into_config_with(no_env)
            .unwrap();
        assert_eq!((cfg.prosumers, cfg.name.as_str(), cfg.community.seed), (40, "from-flag", 3));
        // Without a name anywhere, the host name (a container's id) names the node.
        let host = |name: &str| (name == "HOSTNAME").then(|| "3f2c9a1b7d4e".to_string());
        assert_eq!(
            args(&["--insecure-no-auth"]).into_config_with(host).unwrap().name,
            "3f2c9a1b7d4e"
        );
        assert_eq!(
            args(&["--insecure-no-auth"]).into_config_with(no_env).unwrap().name,
            "agent-node"
        );
        assert_eq!(
            args(&["--insecure-no-auth", "--name", "n1"]).into_config_with(host).unwrap().name,
            "n1"
        );
        assert_eq!(
            args(&["--insecure-no-auth", "--config", &f]).into_config_with(host).unwrap().name,
            "from-file"
        );
        assert_eq!(cfg.policy, PolicyChoice::GridOnly);
        let cfg = args(&[
            "--insecure-no-auth",
            "--config",
            &f,
            "--seed",
            "9",
            "--policy",
            "w.safetensors",
        ])
        .into_config_with(no_env)
        .unwrap();
        assert_eq!(cfg.community.seed, 9);
        assert_eq!(cfg.policy, PolicyChoice::Weights("w.safetensors".into()));
        // The JSON weights format is gone: a config file naming one is refused.
        std::fs::write(&file, r#"{"policy": "weights.json"}"#).unwrap();
        let e = args(&["--insecure-no-auth", "--config", &f]).into_config_with(no_env).unwrap_err();
        assert!(e.to_string().contains(".safetensors"), "{e}");
        assert_eq!(field_of(e), "policy");
        std::fs::write(&file, r#"{"prosumerz": 40}"#).unwrap();
        let e = args(&["--insecure-no-auth", "--config", &f]).into_config_with(no_env).unwrap_err();
        assert!(e.to_string().contains("prosumerz"), "{e}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
