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
use std::path::PathBuf;
use std::str::FromStr;

use clap::{Parser, Subcommand};
use peergrid_core::data::{DatasetKind, DatasetSource};
use peergrid_core::prosumer::CommunityConfig;
pub use peergrid_runtime::Secret;
use peergrid_runtime::{
    load_token_with, read_json, AgentNode, DatasetArgs, NodeArgs, SettingNames, Target, Tokens,
};
use serde::{Deserialize, Serialize};

use crate::error::AgentError;

/// Most prosumers one node may host (the market's bound on `prosumer_count`).
pub const MAX_PROSUMERS: u32 = 100_000;
/// Most actor threads one node may run.
pub const MAX_ACTOR_THREADS: usize = 64;
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
            (Some(_), true) => {
                return Err(bad("token", "set a token or --insecure-no-auth, not both".into()))
            }
            (None, false) => {
                return Err(bad(
                    "token",
                    format!(
                        "is required: pass --token, set {} or {}, or run with --insecure-no-auth",
                        Tokens::AGENT_ENV,
                        Tokens::AGENT_FILE_ENV
                    ),
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

mod args;
#[cfg(test)]
mod tests;

pub use args::{AgentArgs, Command};
