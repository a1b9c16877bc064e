//! The command line ([`AgentArgs`]) and how it becomes an [`AgentConfig`]:
//! defaults, then the `--config` file, then environment and flags.

use super::*;

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
    /// `--config` (fields of [`AgentConfig`]), `--metrics-listen`, the log
    /// format and `--insecure-no-auth` (send no token: only against a
    /// market started with it), as every node has them
    /// (`peergrid_runtime::node_args`).
    #[command(flatten)]
    pub node: NodeArgs<AgentNode>,
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
        let mut cfg: AgentConfig = self.node.read_config()?;
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
        cfg.insecure_no_auth |= self.node.auth.insecure_no_auth;
        self.node.apply(&mut cfg.metrics_listen, &mut cfg.json_logs);
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
        None => load_token_with(Tokens::AGENT_ENV, env).map_err(named),
    }
}
