//! `TestCluster`: a market-node and agent-nodes on ephemeral loopback ports,
//! seeded, with real gRPC between them (the same code as the binaries, run
//! in-process so a test can kill and restart nodes and read their reports).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use peergrid_agent_node::{AgentConfig, AgentReport, PolicyChoice, Secret};
use peergrid_cluster::{Cluster, MarketClient};
use peergrid_core::data::Dataset;
use peergrid_core::simulation::SimConfig;
use peergrid_market_node::{ClockMode, MarketHandle, MarketSettings};
use peergrid_proto::pb::control::v1 as control;
use peergrid_proto::pb::market::v1 as market;
use peergrid_runtime::auth::BearerInterceptor;
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

/// A [`peergrid_cluster::Cluster`] with the test fixtures' tokens and TLS
/// files, and the waits the tests need.
pub struct TestCluster {
    cluster: Cluster,
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
    /// joined before the first slot) and the agent-nodes, in order.
    pub async fn start(self, ds: Arc<Dataset>) -> Result<TestCluster> {
        let market = MarketSettings {
            metrics_listen: Some("127.0.0.1:0".parse()?),
            start_slot: self.start_slot,
            mode: ClockMode::Fast,
            deadline_ms: self.deadline_ms,
            min_prosumers: 10_000_000,
            max_slots: self.max_slots,
            max_hold_ms: self.max_hold_ms,
            tls_cert: self.tls.then(|| tls_fixture("server.pem")),
            tls_key: self.tls.then(|| tls_fixture("server.key")),
            ..MarketSettings::default()
        };
        let mut agent = AgentConfig {
            policy: self.policy.clone(),
            actor_threads: 1,
            tls_ca: self.tls.then(|| tls_fixture("ca.pem")),
            learner: self.learner.clone(),
            learner_tls_ca: self
                .learner
                .as_deref()
                .is_some_and(|u| u.starts_with("https://"))
                .then(|| tls_fixture("ca.pem")),
            rollout_slots: self.rollout_slots,
            remote_policy_timeout_ms: self.remote_policy_timeout_ms,
            ..AgentConfig::default()
        };
        agent.community.seed = self.seed;
        agent.reconnect.base_ms = 50;
        agent.reconnect.max_ms = 500;
        let cluster = Cluster::builder(ds)
            .nodes(&self.nodes)
            .sim(self.sim.clone())
            .market(market)
            .start_when_joined(self.auto_start)
            .agent(agent)
            .tokens(
                Secret::new("agent token", AGENT_TOKEN)?,
                Secret::new("operator token", OPERATOR_TOKEN)?,
            )
            .start()
            .await?;
        Ok(TestCluster { cluster })
    }
}

impl TestCluster {
    /// `https://127.0.0.1:PORT` with TLS (the fixture certificate names the IP), else `http://…`.
    pub fn market_url(&self) -> String {
        self.cluster.market_url().to_owned()
    }

    /// A connected channel to the market, trusting the fixture CA with TLS.
    pub async fn channel(&self) -> Result<Channel> {
        self.cluster.channel().await
    }

    /// The config of an agent-node of this cluster.
    pub fn agent_config(
        &self,
        name: &str,
        prosumers: u32,
        state_dir: Option<PathBuf>,
    ) -> AgentConfig {
        AgentConfig { state_dir, ..self.cluster.agent_config(name, prosumers) }
    }

    /// The running market-node.
    pub fn market(&self) -> &MarketHandle {
        self.cluster.market()
    }

    /// Stops the market-node (it finishes its open slot) and starts a fresh
    /// one, with no memory of the old, on the same address: a container
    /// restart. The agent-nodes reconnect and resume their sessions.
    pub async fn restart_market(&mut self) -> Result<()> {
        self.cluster.restart_market().await
    }

    /// Starts an agent-node; returns its index for [`kill_agent`](Self::kill_agent).
    pub fn spawn_agent(&mut self, name: &str, prosumers: u32, state_dir: Option<PathBuf>) -> usize {
        let config = self.agent_config(name, prosumers, state_dir);
        self.cluster.spawn_agent_with(config)
    }

    /// Stops agent-node `i` (as SIGTERM would) and returns its report.
    pub async fn stop_agent(&mut self, i: usize) -> Result<AgentReport> {
        self.cluster.stop_agent(i).await
    }

    /// Whether agent-node `i` is still running (it did not stop or fail on its own).
    pub fn agent_running(&self, i: usize) -> bool {
        self.cluster.agent_running(i)
    }

    /// Kills agent-node `i` abruptly (its task is aborted mid-slot).
    pub async fn kill_agent(&mut self, i: usize) {
        // Killing a node that already stopped is no error for a test.
        let _ = self.cluster.kill_agent(i).await;
    }

    pub async fn market_client(&self) -> Result<MarketClient> {
        self.cluster.market_client().await
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
        self.cluster.status().await
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

    /// Stops every agent-node (as SIGTERM would: each finishes its open
    /// slot against the live market), then the market; returns the market's
    /// last status and the agents' reports.
    pub async fn stop(self) -> Result<(market::StatusResponse, Vec<AgentReport>)> {
        let status = self.status().await?;
        let report = self.cluster.drain().await?;
        Ok((status, report.agents))
    }
}
