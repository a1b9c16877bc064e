//! The command line every node shares, and its one layered merge.
//!
//! A node's settings come from four layers, lowest first: its defaults, a
//! JSON file (`--config`), environment variables, flags. Clap already gives
//! a flag precedence over the variable of the same setting, so what each
//! node does is: start from its defaults, replace them with the file's
//! ([`NodeArgs::read_config`]), then with whatever the command line or the
//! environment gave ([`NodeArgs::apply`], [`ServerArgs::apply`]): a setting
//! given there replaces the file's, one not given leaves it alone.
//!
//! - [`NodeArgs`], in every node: `--config`, `--metrics-listen`, the
//!   log format ([`LogArgs`]) and authentication ([`AuthArgs`]).
//! - [`ServerArgs`], in the nodes that serve gRPC (market, trainer):
//!   `--listen`, `--tls-cert`/`--tls-key`, `--shutdown-timeout-ms` and the
//!   connection limits ([`ConnectionArgs`]).
//!
//! A node's own variables are `PEERGRID_<NODE>_<FIELD>` ([`NodeEnv`]), so
//! `--metrics-listen` is `PEERGRID_MARKET_METRICS_LISTEN` for the market
//! and `PEERGRID_AGENT_METRICS_LISTEN` for an agent-node; a setting a whole
//! deployment shares has no node in its name (`PEERGRID_SHUTDOWN_TIMEOUT_MS`,
//! `PEERGRID_INSECURE_NO_AUTH`, `PEERGRID_LOG_FORMAT`, the connection limits).
//! Tokens are not flags of a server (a flag shows in `ps`): every binary
//! reads `PEERGRID_AGENT_TOKEN` and `PEERGRID_OPERATOR_TOKEN`, or the files
//! their `_FILE` variants name, with the one loader [`crate::load_token`];
//! a server through [`AuthArgs::server_tokens`].

use std::marker::PhantomData;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

use crate::connections::ConnectionArgs;
use crate::{LogArgs, RuntimeError, Tokens};

/// The names of one node's own variables: `PEERGRID_<NODE>_<FIELD>`.
pub trait NodeEnv {
    /// `--config`.
    const CONFIG: &'static str;
    /// `--metrics-listen`.
    const METRICS_LISTEN: &'static str;
    /// `--listen` (gRPC servers).
    const LISTEN: &'static str;
    /// `--tls-cert` (gRPC servers).
    const TLS_CERT: &'static str;
    /// `--tls-key` (gRPC servers).
    const TLS_KEY: &'static str;
}

/// Declares the marker type of a node, with its variables named after it.
macro_rules! node_env {
    ($(#[$doc:meta])* $name:ident = $node:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        pub struct $name;

        impl NodeEnv for $name {
            const CONFIG: &'static str = concat!("PEERGRID_", $node, "_CONFIG");
            const METRICS_LISTEN: &'static str = concat!("PEERGRID_", $node, "_METRICS_LISTEN");
            const LISTEN: &'static str = concat!("PEERGRID_", $node, "_LISTEN");
            const TLS_CERT: &'static str = concat!("PEERGRID_", $node, "_TLS_CERT");
            const TLS_KEY: &'static str = concat!("PEERGRID_", $node, "_TLS_KEY");
        }
    };
}

node_env!(
    /// The market-node: `PEERGRID_MARKET_…`.
    MarketNode = "MARKET"
);
node_env!(
    /// The trainer: `PEERGRID_TRAINER_…`.
    TrainerNode = "TRAINER"
);
node_env!(
    /// An agent-node: `PEERGRID_AGENT_…`.
    AgentNode = "AGENT"
);

/// What every node's command line has (`#[command(flatten)]`).
#[derive(Clone, Debug, Default, clap::Args)]
pub struct NodeArgs<N: NodeEnv> {
    /// JSON config file (the node's README shows its fields); the
    /// environment and flags override it.
    #[arg(long, env = N::CONFIG)]
    pub config: Option<PathBuf>,
    /// Serve Prometheus `GET /metrics` on this address, e.g. 0.0.0.0:9102 (off when unset).
    #[arg(long, env = N::METRICS_LISTEN)]
    pub metrics_listen: Option<SocketAddr>,
    #[command(flatten)]
    pub logs: LogArgs,
    #[command(flatten)]
    pub auth: AuthArgs,
    /// Which node's variables these are.
    #[arg(skip)]
    pub node: PhantomData<N>,
}

/// Authentication, the same flag and variable in every node
/// (`#[command(flatten)]` in [`NodeArgs`]).
#[derive(Clone, Debug, Default, clap::Args)]
pub struct AuthArgs {
    /// Run without authentication (local demos only): a server checks no
    /// token, an agent-node sends none.
    #[arg(long, env = "PEERGRID_INSECURE_NO_AUTH")]
    pub insecure_no_auth: bool,
}

impl AuthArgs {
    /// The tokens a server checks: both roles' from their variables (or
    /// `_FILE`s), read by [`Tokens::from_lookup`]; with `--insecure-no-auth`,
    /// none. A variable that is set is checked either way, so a malformed
    /// one is refused rather than ignored. Whether none at all may start is
    /// the node's to decide ([`Tokens::require_configured`]) once its config
    /// file has been read.
    pub fn server_tokens_with(
        &self,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Tokens, RuntimeError> {
        let tokens = Tokens::from_lookup(lookup)?;
        Ok(if self.insecure_no_auth { Tokens::insecure_no_auth() } else { tokens })
    }

    /// [`server_tokens_with`](Self::server_tokens_with) the process environment.
    pub fn server_tokens(&self) -> Result<Tokens, RuntimeError> {
        self.server_tokens_with(|name| std::env::var(name).ok())
    }
}

impl<N: NodeEnv> NodeArgs<N> {
    /// The `--config` file as a `T` (the node's defaults beneath what it
    /// names), or `T::default()` without one. Errors name `config`.
    pub fn read_config<T: DeserializeOwned + Default>(&self) -> Result<T, RuntimeError> {
        match &self.config {
            Some(path) => read_json(path, "config"),
            None => Ok(T::default()),
        }
    }

    /// Overrides a node's settings with what was given: the metrics address
    /// if set, JSON logs as [`LogArgs::json`] decides over the file's choice.
    pub fn apply(&self, metrics_listen: &mut Option<SocketAddr>, json_logs: &mut bool) {
        replace_if_given(metrics_listen, self.metrics_listen.map(Some));
        *json_logs = self.logs.json(*json_logs);
    }
}

/// What a gRPC server node's command line adds (`#[command(flatten)]`).
#[derive(Clone, Debug, Default, clap::Args)]
pub struct ServerArgs<N: NodeEnv> {
    /// gRPC listen address [default: 127.0.0.1:50051 for the market,
    /// 127.0.0.1:50061 for the trainer].
    #[arg(long, env = N::LISTEN)]
    pub listen: Option<SocketAddr>,
    /// Serve gRPC over TLS with this PEM certificate chain (needs --tls-key).
    #[arg(long, env = N::TLS_CERT)]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = N::TLS_KEY)]
    pub tls_key: Option<PathBuf>,
    /// After SIGTERM, ms open calls get before the server abandons them [default: 10000].
    #[arg(long, env = "PEERGRID_SHUTDOWN_TIMEOUT_MS")]
    pub shutdown_timeout_ms: Option<u64>,
    #[command(flatten)]
    pub connections: ConnectionArgs,
    /// Which node's variables these are.
    #[arg(skip)]
    pub node: PhantomData<N>,
}

/// Where a server node keeps the settings [`ServerArgs`] overrides.
#[derive(Debug)]
pub struct ServerSettings<'a> {
    pub listen: &'a mut SocketAddr,
    pub tls_cert: &'a mut Option<PathBuf>,
    pub tls_key: &'a mut Option<PathBuf>,
    pub shutdown_timeout_ms: &'a mut u64,
    pub max_connections: &'a mut Option<usize>,
    pub handshake_timeout_ms: &'a mut u64,
    pub idle_timeout_ms: &'a mut u64,
}

impl<N: NodeEnv> ServerArgs<N> {
    /// Overrides a server's settings with every one that was given.
    pub fn apply(&self, s: ServerSettings<'_>) {
        replace_if_given(s.listen, self.listen);
        replace_if_given(s.tls_cert, self.tls_cert.clone().map(Some));
        replace_if_given(s.tls_key, self.tls_key.clone().map(Some));
        replace_if_given(s.shutdown_timeout_ms, self.shutdown_timeout_ms);
        let c = &self.connections;
        replace_if_given(s.max_connections, c.max_connections.map(Some));
        replace_if_given(s.handshake_timeout_ms, c.handshake_timeout_ms);
        replace_if_given(s.idle_timeout_ms, c.idle_timeout_ms);
    }
}

/// The layering rule: a value that was given replaces the one beneath it.
pub fn replace_if_given<T>(setting: &mut T, given: Option<T>) {
    if let Some(value) = given {
        *setting = value;
    }
}

/// The JSON file `path` as a `T`; errors name the setting `name` and the file.
pub fn read_json<T: DeserializeOwned>(path: &Path, name: &str) -> Result<T, RuntimeError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| RuntimeError::config(name, format!("cannot read {}: {e}", path.display())))?;
    serde_json::from_str(&text)
        .map_err(|e| RuntimeError::config(name, format!("{}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Secret;
    use clap::{CommandFactory, Parser};

    #[derive(Debug, Parser)]
    struct Server {
        #[command(flatten)]
        node: NodeArgs<MarketNode>,
        #[command(flatten)]
        server: ServerArgs<MarketNode>,
    }

    #[derive(Debug, Parser)]
    struct Agent {
        #[command(flatten)]
        node: NodeArgs<AgentNode>,
    }

    fn parse<P: Parser>(argv: &[&str]) -> P {
        P::try_parse_from(["node"].iter().chain(argv)).unwrap()
    }

    #[test]
    fn variables_are_named_after_the_node_and_the_field() {
        assert_eq!(MarketNode::LISTEN, "PEERGRID_MARKET_LISTEN");
        assert_eq!(MarketNode::TLS_KEY, "PEERGRID_MARKET_TLS_KEY");
        assert_eq!(TrainerNode::METRICS_LISTEN, "PEERGRID_TRAINER_METRICS_LISTEN");
        assert_eq!(AgentNode::CONFIG, "PEERGRID_AGENT_CONFIG");
        let command = Server::command();
        let env = |id: &str| {
            let arg = command.get_arguments().find(|a| a.get_id() == id).expect("an argument");
            arg.get_env().map(|e| e.to_string_lossy().into_owned())
        };
        assert_eq!(env("listen").as_deref(), Some("PEERGRID_MARKET_LISTEN"));
        assert_eq!(env("metrics_listen").as_deref(), Some("PEERGRID_MARKET_METRICS_LISTEN"));
        assert_eq!(env("tls_cert").as_deref(), Some("PEERGRID_MARKET_TLS_CERT"));
        assert_eq!(env("shutdown_timeout_ms").as_deref(), Some("PEERGRID_SHUTDOWN_TIMEOUT_MS"));
        assert_eq!(env("insecure_no_auth").as_deref(), Some("PEERGRID_INSECURE_NO_AUTH"));
        let agent = Agent::command();
        let config = agent.get_arguments().find(|a| a.get_id() == "config").unwrap();
        assert_eq!(config.get_env().unwrap(), "PEERGRID_AGENT_CONFIG");
        let insecure = agent.get_arguments().find(|a| a.get_id() == "insecure_no_auth").unwrap();
        assert_eq!(insecure.get_env().unwrap(), "PEERGRID_INSECURE_NO_AUTH", "in every node");
    }

    #[test]
    fn a_server_reads_both_tokens_with_the_one_loader() {
        let (agent, operator) = ("agent-token-0123456789", "operator-token-0123456789");
        let env = |name: &str| match name {
            "PEERGRID_AGENT_TOKEN" => Some(agent.to_owned()),
            "PEERGRID_OPERATOR_TOKEN" => Some(operator.to_owned()),
            _ => None,
        };
        let secure: Server = parse(&[]);
        let tokens = secure.node.auth.server_tokens_with(env).unwrap();
        assert_eq!(tokens.agent().map(Secret::expose), Some(agent));
        assert_eq!(tokens.operator().map(Secret::expose), Some(operator));
        let none = secure.node.auth.server_tokens_with(|_| None).unwrap();
        let e = none.require_configured().unwrap_err().to_string();
        assert!(
            e.starts_with("invalid tokens: no token configured: set PEERGRID_AGENT_TOKEN")
                && e.contains("--insecure-no-auth"),
            "{e}"
        );
        let insecure: Server = parse(&["--insecure-no-auth"]);
        let open = insecure.node.auth.server_tokens_with(|_| None).unwrap();
        assert!(open.is_insecure() && open.require_configured().is_ok());
        // A malformed variable is refused, not ignored, even when insecure.
        let short = |name: &str| (name == "PEERGRID_OPERATOR_TOKEN").then(|| "hunter2".to_owned());
        let e = insecure.node.auth.server_tokens_with(short).unwrap_err().to_string();
        assert!(e.contains("PEERGRID_OPERATOR_TOKEN") && e.contains("at least 16"), "{e}");
    }

    #[test]
    fn defaults_then_file_then_environment_then_flags() {
        #[derive(Default, serde::Deserialize)]
        #[serde(default)]
        struct File {
            listen: Option<SocketAddr>,
            tls_cert: Option<PathBuf>,
            idle_timeout_ms: Option<u64>,
            json_logs: bool,
        }
        let dir = std::env::temp_dir().join(format!("peergrid-node-args-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("node.json");
        let file = r#"{"listen": "127.0.0.1:1001", "tls_cert": "file.pem",
                       "idle_timeout_ms": 3001, "json_logs": true}"#;
        std::fs::write(&path, file).unwrap();
        // No other test reads these variables (and nextest runs each test
        // in a process of its own).
        let env = [
            ("PEERGRID_MARKET_CONFIG", path.to_str().unwrap()),
            ("PEERGRID_MARKET_LISTEN", "127.0.0.1:1002"),
            ("PEERGRID_MARKET_TLS_CERT", "env.pem"),
        ];
        for (name, value) in env {
            std::env::set_var(name, value);
        }
        let args: Server = parse(&["--listen", "127.0.0.1:1003"]);
        for (name, _) in env {
            std::env::remove_var(name);
        }
        let file: File = args.node.read_config().expect("the file the variable names");
        let mut listen = "127.0.0.1:1000".parse().unwrap();
        let (mut tls_cert, mut tls_key) = (None, Some(PathBuf::from("default.key")));
        let (mut shutdown_ms, mut max_connections) = (10_000, None);
        let (mut handshake_ms, mut idle_ms) = (2000, 3000);
        replace_if_given(&mut listen, file.listen);
        replace_if_given(&mut tls_cert, file.tls_cert.map(Some));
        replace_if_given(&mut idle_ms, file.idle_timeout_ms);
        args.server.apply(ServerSettings {
            listen: &mut listen,
            tls_cert: &mut tls_cert,
            tls_key: &mut tls_key,
            shutdown_timeout_ms: &mut shutdown_ms,
            max_connections: &mut max_connections,
            handshake_timeout_ms: &mut handshake_ms,
            idle_timeout_ms: &mut idle_ms,
        });
        assert_eq!(listen.to_string(), "127.0.0.1:1003", "the flag beats the variable");
        assert_eq!(tls_cert, Some("env.pem".into()), "the variable beats the file");
        assert_eq!(idle_ms, 3001, "the file beats the default");
        assert_eq!(tls_key, Some("default.key".into()), "not given: kept");
        assert_eq!((shutdown_ms, max_connections, handshake_ms), (10_000, None, 2000));
        let (mut metrics, mut json_logs) = (None, file.json_logs);
        args.node.apply(&mut metrics, &mut json_logs);
        assert_eq!((metrics, json_logs), (None, true), "the file's log format stands");
        let text: Server = parse(&["--log-format", "text", "--metrics-listen", "0.0.0.0:9"]);
        text.node.apply(&mut metrics, &mut json_logs);
        assert_eq!((metrics.map(|a| a.port()), json_logs), (Some(9), false));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn an_unreadable_or_malformed_file_is_named() {
        let missing = Path::new("/nonexistent/peergrid/node.json");
        let e = read_json::<serde_json::Value>(missing, "config").unwrap_err().to_string();
        assert!(
            e.starts_with("invalid config: cannot read /nonexistent/peergrid/node.json"),
            "{e}"
        );
        let dir = std::env::temp_dir().join(format!("peergrid-node-json-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("community.json");
        std::fs::write(&path, "{not json").unwrap();
        let e = read_json::<serde_json::Value>(&path, "community").unwrap_err().to_string();
        assert!(e.starts_with("invalid community: ") && e.contains("community.json"), "{e}");
        let none: Agent = parse(&[]);
        assert_eq!(none.node.read_config::<Vec<u8>>().unwrap(), Vec::<u8>::new(), "no file");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
