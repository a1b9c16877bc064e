//! `TestCluster`: a market-node and agent-nodes on ephemeral loopback ports,
//! seeded, with real gRPC between them (the same code as the binaries, run
//! in-process so a test can kill and restart nodes and read their reports).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use peergrid_agent_node::{AgentConfig, AgentReport, PolicyChoice, Secret};
use peergrid_core::data::Dataset;
use peergrid_core::simulation::SimConfig;
use peergrid_market_node::{ClockMode, MarketConfig, MarketHandle, MarketSettings};
use peergrid_proto::pb::control::v1 as control;
use peergrid_proto::pb::market::v1 as market;
use peergrid_runtime::auth::{BearerInterceptor, Tokens};
use peergrid_runtime::{Shutdown, ShutdownController, Target};
use tokio::task::JoinHandle;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

pub const AGENT_TOKEN: &str = "agent-token-for-tests-0123456789";
pub const OPERATOR_TOKEN: &str = "operator-token-for-tests-0123456789";

/// How to start a cluster.
#[derive(Clone, Debug)]
pub struct ClusterBuilder {
    /// Prosumers per agent-node.
    pub nodes: Vec<u32>,
    pub seed: u64,
    pub start_slot: u64,
    pub max_slots: Option<u64>,
    pub deadline_ms: u64,
    pub sim: SimConfig,
    pub policy: PolicyChoice,
    /// Start clearing once every node has joined; otherwise only on `Start`/`Step`.
    pub auto_start: bool,
    /// Serve the market over TLS with the test-only certificate of
    /// `tests/fixtures/tls`; the agent-nodes and test clients trust its CA.
    pub tls: bool,
    /// The trainer's URL: agent-nodes learn from it (an `https://` trainer
    /// serves the fixture certificate: the nodes trust the fixture CA).
    pub learner: Option<String>,
    /// Slots per rollout when learning.
    pub rollout_slots: usize,
    /// With `policy: PolicyChoice::Remote`: the agent-nodes' `remote_policy_timeout_ms`.
    pub remote_policy_timeout_ms: u64,
    /// The market's longest hold of a slot for a node, ms.
    pub max_hold_ms: u64,
}

/// A file of the test-only TLS fixtures (`tests/fixtures/tls/NAME`).
pub fn tls_fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/tls").join(name)
}

impl Default for ClusterBuilder {
    fn default() -> Self {
        ClusterBuilder {
            nodes: vec![8, 8],
            seed: 7,
            start_slot: 0,
            max_slots: None,
            deadline_ms: 2_000,
            sim: SimConfig::default(),
            policy: PolicyChoice::RuleBased,
            auto_start: true,
            tls: false,
            learner: None,
            rollout_slots: 48,
            remote_policy_timeout_ms: AgentConfig::default().remote_policy_timeout_ms,
            max_hold_ms: MarketSettings::default().max_hold_ms,
        }
    }
}

struct Agent {
    shutdown: ShutdownController,
    task: JoinHandle<Result<AgentReport>>,
}

pub struct TestCluster {
    market: Option<MarketHandle>,
    market_shutdown: ShutdownController,
    agents: Vec<Option<Agent>>,
    builder: ClusterBuilder,
    market_task_shutdown: Shutdown,
    ds: Arc<Dataset>,
}

impl ClusterBuilder {
    pub fn nodes(mut self, nodes: &[u32]) -> Self {
        self.nodes = nodes.to_vec();
        self
    }

    pub fn tls(mut self) -> Self {
        self.tls = true;
        self
    }

    pub fn max_slots(mut self, n: u64) -> Self {
        self.max_slots = Some(n);
        self
    }

    /// Starts the market (it waits until every node of the builder has
    /// joined before the first slot) and the agent-nodes.
    pub async fn start(self, ds: Arc<Dataset>) -> Result<TestCluster> {
        let (market, market_shutdown, shutdown) =
            self.start_market(ds.clone(), "127.0.0.1:0".parse()?).await?;
        let mut cluster = TestCluster {
            market: Some(market),
            market_shutdown,
            agents: Vec::new(),
            builder: self.clone(),
            market_task_shutdown: shutdown,
            ds,
        };
        for (i, &k) in self.nodes.iter().enumerate() {
            cluster.spawn_agent(&format!("node-{i}"), k, None);
            // Register in order, so node i gets the i-th id range.
            cluster.wait_for_prosumers(self.nodes[..=i].iter().sum()).await?;
        }
        Ok(cluster)
    }

    async fn start_market(
        &self,
        ds: Arc<Dataset>,
        listen: std::net::SocketAddr,
    ) -> Result<(MarketHandle, ShutdownController, Shutdown)> {
        let settings = MarketSettings {
            listen,
            metrics_listen: Some("127.0.0.1:0".parse()?),
            start_slot: self.start_slot,
            mode: ClockMode::Fast,
            deadline_ms: self.deadline_ms,
            min_prosumers: if self.auto_start { self.nodes.iter().sum() } else { 10_000_000 },
            max_slots: self.max_slots,
            max_hold_ms: self.max_hold_ms,
            tls_cert: self.tls.then(|| tls_fixture("server.pem")),
            tls_key: self.tls.then(|| tls_fixture("server.key")),
            ..MarketSettings::default()
        };
        let tokens = Tokens::new(Some(AGENT_TOKEN.into()), Some(OPERATOR_TOKEN.into()))?;
        let config = MarketConfig::new(settings, self.sim.clone(), tokens)?;
        let market_shutdown = ShutdownController::new();
        let shutdown = market_shutdown.subscribe();
        let market = peergrid_market_node::start_with_dataset(config, ds, shutdown.clone()).await?;
        Ok((market, market_shutdown, shutdown))
    }
}

impl TestCluster {
    /// `https://127.0.0.1:PORT` with TLS (the fixture certificate names the IP), else `http://…`.
    pub fn market_url(&self) -> String {
        self.market().url().to_owned()
    }

    /// A connected channel to the market, trusting the fixture CA with TLS.
    pub async fn channel(&self) -> Result<Channel> {
        let (url, ca) = (self.market_url(), self.builder.tls.then(|| tls_fixture("ca.pem")));
        let target = Target {
            url: &url,
            ca: ca.as_deref(),
            domain: None,
            names: peergrid_agent_node::config::MARKET_SETTINGS,
        };
        Ok(target.connect(|endpoint| endpoint).await?)
    }

    /// The config of an agent-node of this cluster.
    pub fn agent_config(
        &self,
        name: &str,
        prosumers: u32,
        state_dir: Option<PathBuf>,
    ) -> AgentConfig {
        let mut config = AgentConfig {
            market: self.market_url(),
            name: name.into(),
            prosumers,
            policy: self.builder.policy.clone(),
            token: Some(Secret::new("agent token", AGENT_TOKEN).expect("a valid test token")),
            actor_threads: 1,
            state_dir,
            tls_ca: self.builder.tls.then(|| tls_fixture("ca.pem")),
            learner: self.builder.learner.clone(),
            learner_tls_ca: self
                .builder
                .learner
                .as_deref()
                .is_some_and(|u| u.starts_with("https://"))
                .then(|| tls_fixture("ca.pem")),
            rollout_slots: self.builder.rollout_slots,
            remote_policy_timeout_ms: self.builder.remote_policy_timeout_ms,
            ..AgentConfig::default()
        };
        config.community.seed = self.builder.seed;
        config.reconnect.base_ms = 50;
        config.reconnect.max_ms = 500;
        config
    }

    /// The running market-node.
    pub fn market(&self) -> &MarketHandle {
        self.market.as_ref().expect("a market is running between restarts")
    }

    /// Stops the market-node (it finishes its open slot) and starts a fresh
    /// one, with no memory of the old, on the same address: a container
    /// restart. The agent-nodes reconnect and resume their sessions.
    pub async fn restart_market(&mut self) -> Result<()> {
        let old = self.market.take().context("no market running")?;
        let addr = old.grpc_addr.context("the test market listens on TCP")?;
        self.market_shutdown.trigger();
        old.join().await?;
        let (market, controller, shutdown) =
            self.builder.start_market(self.ds.clone(), addr).await?;
        self.market = Some(market);
        self.market_shutdown = controller;
        self.market_task_shutdown = shutdown;
        Ok(())
    }

    /// Starts an agent-node; returns its index for [`kill_agent`](Self::kill_agent).
    pub fn spawn_agent(&mut self, name: &str, prosumers: u32, state_dir: Option<PathBuf>) -> usize {
        let config = self.agent_config(name, prosumers, state_dir);
        let shutdown = ShutdownController::new();
        let s = shutdown.subscribe();
        let task = tokio::spawn(async move { peergrid_agent_node::run(config, s).await });
        self.agents.push(Some(Agent { shutdown, task }));
        self.agents.len() - 1
    }

    /// Stops agent-node `i` (as SIGTERM would) and returns its report.
    pub async fn stop_agent(&mut self, i: usize) -> Result<AgentReport> {
        let agent = self.agents[i].take().context("agent already stopped")?;
        agent.shutdown.trigger();
        agent.task.await.context("agent task panicked")?
    }

    /// Whether agent-node `i` is still running (it did not stop or fail on its own).
    pub fn agent_running(&self, i: usize) -> bool {
        self.agents[i].as_ref().is_some_and(|a| !a.task.is_finished())
    }

    /// Kills agent-node `i` abruptly (its task is aborted mid-slot).
    pub async fn kill_agent(&mut self, i: usize) {
        if let Some(agent) = self.agents[i].take() {
            agent.task.abort();
            let _ = agent.task.await;
        }
    }

    pub async fn market_client(
        &self,
    ) -> Result<
        market::market_service_client::MarketServiceClient<
            InterceptedService<Channel, BearerInterceptor>,
        >,
    > {
        let channel = self.channel().await?;
        Ok(market::market_service_client::MarketServiceClient::with_interceptor(
            channel,
            BearerInterceptor::new(OPERATOR_TOKEN)?,
        ))
    }

    pub async fn control_client(
        &self,
    ) -> Result<
        control::control_service_client::ControlServiceClient<
            InterceptedService<Channel, BearerInterceptor>,
        >,
    > {
        let channel = self.channel().await?;
        Ok(control::control_service_client::ControlServiceClient::with_interceptor(
            channel,
            BearerInterceptor::new(OPERATOR_TOKEN)?,
        ))
    }

    pub async fn status(&self) -> Result<market::StatusResponse> {
        Ok(self.market_client().await?.status(market::StatusRequest {}).await?.into_inner())
    }

    /// Polls until at least `n` prosumers are connected (bounded: 30 s).
    pub async fn wait_for_prosumers(&self, n: u32) -> Result<()> {
        self.wait_until(|s| s.prosumers >= n, &format!("{n} prosumers")).await
    }

    /// Polls until the market's next slot is at least `slot` (bounded: 60 s).
    pub async fn wait_for_slot(&self, slot: u64) -> Result<market::StatusResponse> {
        self.wait_until(|s| s.slot >= slot, &format!("slot {slot}")).await?;
        self.status().await
    }

    async fn wait_until(
        &self,
        done: impl Fn(&market::StatusResponse) -> bool,
        what: &str,
    ) -> Result<()> {
        for _ in 0..1200 {
            if let Ok(s) = self.status().await {
                if done(&s) {
                    return Ok(());
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        anyhow::bail!("timed out waiting for {what}")
    }

    /// Waits for the market's `max_slots`, then stops everything; returns the agents' reports.
    pub async fn finish(self) -> Result<(market::StatusResponse, Vec<AgentReport>)> {
        tokio::time::timeout(Duration::from_secs(120), self.market().finished())
            .await
            .context("market did not finish in time")?;
        self.stop().await
    }

    /// Stops every agent-node (as SIGTERM would), then the market; returns
    /// the market's last status and the agents' reports.
    pub async fn stop(mut self) -> Result<(market::StatusResponse, Vec<AgentReport>)> {
        let status = self.status().await?;
        let mut reports = Vec::new();
        for i in 0..self.agents.len() {
            if self.agents[i].is_some() {
                reports.push(self.stop_agent(i).await?);
            }
        }
        self.market_shutdown.trigger();
        drop(self.market_task_shutdown);
        if let Some(market) = self.market.take() {
            market.join().await?;
        }
        Ok((status, reports))
    }
}
