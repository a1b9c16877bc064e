//! peergrid-cluster: the whole system in one process, wired in one place.
//!
//! A [`Cluster`] is a market-node, optionally the trainer, and N
//! agent-nodes, each started through its crate's own `start` — the
//! code of the binaries — and talking real gRPC over loopback TCP or
//! in-process pipes ([`Transport`]). `peergrid run` trains on one and every
//! in-process end-to-end test starts one, so the start order, the shutdown
//! order and the tokens are written once:
//!
//! 1. the trainer (when learning), so nodes find their first policy;
//! 2. the market, which starts clearing once every node's prosumers joined;
//! 3. the agent-nodes, one at a time: each is waited for until its
//!    prosumers are connected, so node `i` gets the `i`-th id range and a
//!    seed gives the same households wherever they are hosted.
//!
//! [`Cluster::shutdown`] stops the agent-nodes and the market together (a
//! node finishes its open slot or stops waiting for a policy version; the
//! market waits at most its drain grace for missing reports, then closes
//! the sessions), then the trainer, which writes its final checkpoint;
//! [`Cluster::drain`] stops the agent-nodes first, against a live market.
//!
//! ```no_run
//! # async fn demo(ds: std::sync::Arc<peergrid_core::data::Dataset>) -> anyhow::Result<()> {
//! use peergrid_cluster::{Cluster, Transport};
//! let cluster = Cluster::builder(ds).nodes(&[50, 50]).transport(Transport::Local).start().await?;
//! let status = cluster.status().await?;
//! println!("{} prosumers connected", status.prosumers);
//! let report = cluster.shutdown().await?;
//! println!("{} agent-node reports", report.agents.len());
//! # Ok(()) }
//! ```

mod nodes;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use peergrid_agent_node::{AgentConfig, AgentReport};
use peergrid_core::data::Dataset;
use peergrid_core::simulation::SimConfig;
use peergrid_market_node::{MarketConfig, MarketHandle, MarketSettings};
use peergrid_proto::pb::market::v1 as market;
use peergrid_runtime::auth::{BearerInterceptor, Tokens};
use peergrid_runtime::{Secret, ShutdownController, Target};
use peergrid_trainer::config::TrainerConfig;
use peergrid_trainer::TrainerHandle;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

pub use nodes::AgentNode;

/// What carries the gRPC bytes between the nodes of a [`Cluster`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Transport {
    /// Real gRPC on ephemeral ports of 127.0.0.1, as between containers.
    #[default]
    Tcp,
    /// In-process byte pipes (`local://NAME`): the same services, HTTP/2
    /// and protobuf encoding, without the kernel's TCP stack.
    Local,
}

impl Transport {
    /// Unique in-process listener names of a market and a trainer (a
    /// process may run several clusters at once); `None` for TCP.
    fn local_names(self) -> (Option<String>, Option<String>) {
        static CLUSTERS: AtomicU64 = AtomicU64::new(0);
        match self {
            Transport::Tcp => (None, None),
            Transport::Local => {
                let n = CLUSTERS.fetch_add(1, Ordering::Relaxed);
                let pid = std::process::id();
                (
                    Some(format!("peergrid-cluster-{pid}-{n}-market")),
                    Some(format!("peergrid-cluster-{pid}-{n}-trainer")),
                )
            }
        }
    }
}

/// How long [`Cluster::start`](ClusterBuilder::start) waits for one
/// agent-node's prosumers to join before it gives up, naming the node.
const JOIN_TIMEOUT: Duration = Duration::from_secs(30);

/// How to start a [`Cluster`]: which nodes, which transport, the market's
/// and the agent-nodes' settings, and whether a trainer learns.
#[derive(Clone, Debug)]
pub struct ClusterBuilder {
    ds: Arc<Dataset>,
    sim: SimConfig,
    nodes: Vec<u32>,
    transport: Transport,
    market: MarketSettings,
    start_when_joined: bool,
    agent: AgentConfig,
    trainer: Option<TrainerConfig>,
    agent_token: Option<Secret>,
    operator_token: Option<Secret>,
}

impl ClusterBuilder {
    /// Prosumers per agent-node, one entry per node (default: two nodes of 8).
    pub fn nodes(mut self, prosumers: &[u32]) -> Self {
        self.nodes = prosumers.to_vec();
        self
    }

    /// What carries the bytes (default: loopback TCP).
    pub fn transport(mut self, transport: Transport) -> Self {
        self.transport = transport;
        self
    }

    /// The simulation's settings (tariff, grid, reward, slot range).
    pub fn sim(mut self, sim: SimConfig) -> Self {
        self.sim = sim;
        self
    }

    /// The market's settings. Its `listen` and `local_name` are the
    /// cluster's to choose (an ephemeral loopback port, or a pipe name);
    /// its `min_prosumers` too, unless [`start_when_joined`](Self::start_when_joined)
    /// is off.
    pub fn market(mut self, settings: MarketSettings) -> Self {
        self.market = settings;
        self
    }

    /// Start clearing once every node's prosumers joined (the default), or
    /// leave `min_prosumers` as the market settings say (a test that
    /// starts the clock itself sets it out of reach).
    pub fn start_when_joined(mut self, yes: bool) -> Self {
        self.start_when_joined = yes;
        self
    }

    /// The template of every agent-node's settings. Its `market`, `name`,
    /// `prosumers` and `token` are the cluster's to fill in; its `learner`
    /// too when the cluster has a trainer.
    pub fn agent(mut self, template: AgentConfig) -> Self {
        self.agent = template;
        self
    }

    /// Learn: start a trainer with these settings (its `listen` and
    /// `local_name` are the cluster's) and point every node at it.
    pub fn trainer(mut self, config: TrainerConfig) -> Self {
        self.trainer = Some(config);
        self
    }

    /// The agent and operator tokens (default: fresh random ones, never printed).
    pub fn tokens(mut self, agent: Secret, operator: Secret) -> Self {
        self.agent_token = Some(agent);
        self.operator_token = Some(operator);
        self
    }

    /// Only the agent token (the operator's stays a fresh random one): for
    /// a service outside the cluster that checks it, such as the remote
    /// policy agent-nodes call with `policy: remote:URL`.
    pub fn agent_token(mut self, agent: Secret) -> Self {
        self.agent_token = Some(agent);
        self
    }

    /// Starts the trainer (if any), the market, then the agent-nodes one
    /// at a time, each waited for until its prosumers have joined.
    pub async fn start(self) -> Result<Cluster> {
        let agent_token = match self.agent_token.clone() {
            Some(token) => token,
            None => fresh_secret("agent token")?,
        };
        let operator_token = match self.operator_token.clone() {
            Some(token) => token,
            None => fresh_secret("operator token")?,
        };
        let tokens = Tokens::from_secrets(Some(agent_token.clone()), Some(operator_token.clone()))?;
        let (market_name, trainer_name) = self.transport.local_names();
        let trainer = match self.trainer.clone() {
            Some(config) => Some(start_trainer(config, trainer_name, tokens.clone()).await?),
            None => None,
        };
        let mut settings = self.market.clone();
        settings.local_name = market_name;
        settings.listen = loopback();
        if self.start_when_joined {
            settings.min_prosumers = self.nodes.iter().sum();
        }
        let mut agent = self.agent.clone();
        agent.token = Some(agent_token.clone());
        if let Some((handle, _)) = &trainer {
            agent.learner = Some(handle.url().to_owned());
        }
        let mut cluster = Cluster {
            ds: self.ds,
            sim: self.sim,
            settings,
            tokens,
            agent_token,
            operator_token,
            market: None,
            market_stop: ShutdownController::new(),
            channel: std::sync::Mutex::new(None),
            trainer,
            agent,
            agents: Vec::new(),
        };
        cluster.start_market(None).await?;
        let mut joined = 0;
        for (i, &prosumers) in self.nodes.iter().enumerate() {
            let index = cluster.spawn_agent(&format!("node-{i}"), prosumers);
            joined += prosumers;
            cluster.wait_for_join(index, joined).await?;
        }
        Ok(cluster)
    }
}

/// `127.0.0.1:0`: an ephemeral loopback port.
fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// A fresh random token for an in-process cluster (never printed): the
/// wall clock and the process id, mixed.
fn fresh_secret(name: &str) -> Result<Secret> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let seed = peergrid_core::rng::derive_seed(nanos ^ u64::from(std::process::id()), name);
    let value = format!("{seed:016x}{:016x}", peergrid_core::rng::mix64(seed));
    Ok(Secret::new(name, value)?)
}

async fn start_trainer(
    mut config: TrainerConfig,
    local_name: Option<String>,
    tokens: Tokens,
) -> Result<(TrainerHandle, ShutdownController)> {
    config.listen = loopback();
    config.local_name = local_name;
    let stop = ShutdownController::new();
    let handle = peergrid_trainer::start(config, tokens, stop.subscribe()).await?;
    Ok((handle, stop))
}

/// A running [`Cluster`]'s market client, authorised with the operator token.
pub type MarketClient = market::market_service_client::MarketServiceClient<
    InterceptedService<Channel, BearerInterceptor>,
>;

/// A running system: the market, the trainer when learning, the agent-nodes.
pub struct Cluster {
    ds: Arc<Dataset>,
    sim: SimConfig,
    settings: MarketSettings,
    tokens: Tokens,
    agent_token: Secret,
    operator_token: Secret,
    market: Option<MarketHandle>,
    market_stop: ShutdownController,
    /// The channel [`channel`](Cluster::channel) dialled to the running
    /// market, reused by every client and status poll (a tonic channel
    /// reconnects by itself); cleared when the market restarts.
    channel: std::sync::Mutex<Option<Channel>>,
    trainer: Option<(TrainerHandle, ShutdownController)>,
    /// Every agent-node's settings but its name and size.
    agent: AgentConfig,
    agents: Vec<Option<AgentNode>>,
}

/// What a cluster's agent-nodes reported when it stopped, in start order
/// (nodes stopped or killed before were not asked again).
#[derive(Debug)]
pub struct ClusterReport {
    pub agents: Vec<AgentReport>,
}

impl Cluster {
    /// A builder over `ds` (the dataset every node plays, loaded once).
    pub fn builder(ds: Arc<Dataset>) -> ClusterBuilder {
        ClusterBuilder {
            ds,
            sim: SimConfig::default(),
            nodes: vec![8, 8],
            transport: Transport::Tcp,
            market: MarketSettings::default(),
            start_when_joined: true,
            agent: AgentConfig { actor_threads: 1, ..AgentConfig::default() },
            trainer: None,
            agent_token: None,
            operator_token: None,
        }
    }

    /// The running market-node.
    pub fn market(&self) -> &MarketHandle {
        self.market.as_ref().expect("a market runs between restarts")
    }

    /// The URL agent-nodes and clients dial the market at.
    pub fn market_url(&self) -> &str {
        self.market().url()
    }

    /// The trainer, when the cluster learns.
    pub fn trainer(&self) -> Option<&TrainerHandle> {
        self.trainer.as_ref().map(|(handle, _)| handle)
    }

    /// The token agent-nodes join and trade with.
    pub fn agent_token(&self) -> &Secret {
        &self.agent_token
    }

    /// The token that may control the market.
    pub fn operator_token(&self) -> &Secret {
        &self.operator_token
    }

    /// The settings an agent-node of this cluster named `name` and hosting
    /// `prosumers` would start with.
    pub fn agent_config(&self, name: &str, prosumers: u32) -> AgentConfig {
        AgentConfig {
            market: self.market_url().to_owned(),
            name: name.to_owned(),
            prosumers,
            ..self.agent.clone()
        }
    }

    /// A channel to the market, trusting the agent-nodes' CA when it
    /// serves TLS: dialled once per market and shared (clones of one
    /// HTTP/2 connection), so polling the status every few milliseconds
    /// does not open a connection each time.
    pub async fn channel(&self) -> Result<Channel> {
        if let Some(channel) = self.channel.lock().expect("not poisoned").clone() {
            return Ok(channel);
        }
        let target = Target {
            url: self.market_url(),
            ca: self.agent.tls_ca.as_deref(),
            domain: self.agent.tls_domain.as_deref(),
            names: peergrid_agent_node::config::MARKET_SETTINGS,
        };
        let channel = target.connect(|endpoint| endpoint).await?;
        *self.channel.lock().expect("not poisoned") = Some(channel.clone());
        Ok(channel)
    }

    /// A market client with the operator token.
    pub async fn market_client(&self) -> Result<MarketClient> {
        Ok(market::market_service_client::MarketServiceClient::with_interceptor(
            self.channel().await?,
            BearerInterceptor::new(self.operator_token.expose())?,
        ))
    }

    /// The market's status.
    pub async fn status(&self) -> Result<market::StatusResponse> {
        Ok(self.market_client().await?.status(market::StatusRequest {}).await?.into_inner())
    }

    async fn start_market(&mut self, listen: Option<SocketAddr>) -> Result<()> {
        let mut settings = self.settings.clone();
        if let Some(addr) = listen {
            settings.listen = addr;
        }
        let config = MarketConfig::new(settings, self.sim.clone(), self.tokens.clone())?;
        self.market_stop = ShutdownController::new();
        *self.channel.lock().expect("not poisoned") = None;
        let market = peergrid_market_node::start_with_dataset(
            config,
            Arc::clone(&self.ds),
            self.market_stop.subscribe(),
        )
        .await?;
        self.market = Some(market);
        Ok(())
    }

    /// Stops the market-node (it finishes its open slot) and starts a fresh
    /// one, with no memory of the old, on the same address: a container
    /// restart. The agent-nodes reconnect and resume their sessions.
    pub async fn restart_market(&mut self) -> Result<()> {
        let old = self.market.take().context("no market running")?;
        let addr = old.grpc_addr;
        self.market_stop.trigger();
        old.join().await?;
        self.start_market(addr).await
    }

    /// Waits until `prosumers` are connected; fails at once, with its
    /// error, when agent-node `index` stopped instead, and after
    /// [`JOIN_TIMEOUT`] naming what it waited for.
    async fn wait_for_join(&mut self, index: usize, prosumers: u32) -> Result<()> {
        let deadline = tokio::time::Instant::now() + JOIN_TIMEOUT;
        let mut last = None;
        loop {
            match self.status().await {
                Ok(s) if s.prosumers >= prosumers => return Ok(()),
                Ok(s) => last = Some(s.prosumers),
                Err(e) => tracing::debug!("market status while waiting for a join: {e:#}"),
            }
            if !self.agent_running(index) {
                let outcome = self.stop_agent(index).await;
                return Err(match outcome {
                    Err(e) => e.context(format!("agent-node {index} failed before joining")),
                    Ok(_) => anyhow::anyhow!("agent-node {index} stopped before joining"),
                });
            }
            if tokio::time::Instant::now() >= deadline {
                anyhow::bail!(
                    "agent-node {index}: waited {JOIN_TIMEOUT:?} for {prosumers} prosumers to \
                     join the market at {}; {} joined",
                    self.market_url(),
                    last.map_or("none had".to_owned(), |n| n.to_string())
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops every agent-node and the market together, then the trainer;
    /// returns the agent-nodes' reports. A node finishes its open slot or
    /// stops waiting for a policy version, the market waits at most its
    /// drain grace for missing reports: quick, and what a stopping system
    /// does. The first failure is returned after everything has stopped.
    pub async fn shutdown(self) -> Result<ClusterReport> {
        self.stop_all(false).await
    }

    /// Stops every agent-node first — each finishes its open slot against a
    /// live market, so every slot a node played was cleared — then the
    /// market, then the trainer. Slower than [`shutdown`](Self::shutdown)
    /// when a node waits for something; what a test that counts every
    /// report wants.
    pub async fn drain(self) -> Result<ClusterReport> {
        self.stop_all(true).await
    }

    async fn stop_all(mut self, agents_first: bool) -> Result<ClusterReport> {
        for agent in self.agents.iter().flatten() {
            agent.trigger();
        }
        let mut first_error = None;
        let mut agents = Vec::new();
        if !agents_first {
            self.market_stop.trigger();
            if let Some(market) = self.market.take() {
                if let Err(e) = market.join().await {
                    first_error.get_or_insert(e.context("market-node"));
                }
            }
        }
        for (i, agent) in self.agents.drain(..).enumerate() {
            let Some(agent) = agent else { continue };
            match agent.join().await {
                Ok(report) => agents.push(report),
                Err(e) => {
                    first_error.get_or_insert(e.context(format!("agent-node {i}")));
                }
            }
        }
        self.market_stop.trigger();
        if let Some(market) = self.market.take() {
            if let Err(e) = market.join().await {
                first_error.get_or_insert(e.context("market-node"));
            }
        }
        if let Some((trainer, stop)) = self.trainer.take() {
            stop.trigger();
            if let Err(e) = trainer.join().await {
                first_error.get_or_insert(e.context("trainer"));
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(ClusterReport { agents }),
        }
    }
}
