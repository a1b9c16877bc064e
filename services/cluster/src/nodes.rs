//! A cluster's agent-nodes: start, stop as SIGTERM would, kill mid-slot.

use anyhow::{Context, Result};
use peergrid_agent_node::{AgentConfig, AgentHandle, AgentReport};
use peergrid_runtime::ShutdownController;

use crate::Cluster;

/// One running agent-node of a [`Cluster`], with its own shutdown.
pub struct AgentNode {
    stop: ShutdownController,
    handle: AgentHandle,
}

impl AgentNode {
    fn spawn(config: AgentConfig, ds: std::sync::Arc<peergrid_core::data::Dataset>) -> AgentNode {
        let stop = ShutdownController::new();
        let handle = peergrid_agent_node::start_with_dataset(config, ds, stop.subscribe());
        AgentNode { stop, handle }
    }

    /// Asks the node to stop after its open slot.
    pub(crate) fn trigger(&self) {
        self.stop.trigger();
    }

    /// Waits for the node to stop; its report, or why it failed.
    pub(crate) async fn join(self) -> Result<AgentReport> {
        self.handle.join().await
    }

    fn is_running(&self) -> bool {
        !self.handle.is_finished()
    }
}

impl Cluster {
    /// Starts an agent-node named `name` hosting `prosumers`, with the
    /// cluster's settings; returns its index for the other agent calls.
    pub fn spawn_agent(&mut self, name: &str, prosumers: u32) -> usize {
        let config = self.agent_config(name, prosumers);
        self.spawn_agent_with(config)
    }

    /// Starts an agent-node with `config` (from [`agent_config`](Self::agent_config),
    /// changed as a test needs); returns its index.
    pub fn spawn_agent_with(&mut self, config: AgentConfig) -> usize {
        self.agents.push(Some(AgentNode::spawn(config, std::sync::Arc::clone(&self.ds))));
        self.agents.len() - 1
    }

    /// Stops agent-node `i` as SIGTERM would (it finishes its open slot)
    /// and returns its report.
    pub async fn stop_agent(&mut self, i: usize) -> Result<AgentReport> {
        let agent = self.take_agent(i)?;
        agent.trigger();
        agent.join().await
    }

    /// Kills agent-node `i` abruptly: its task is aborted mid-slot.
    pub async fn kill_agent(&mut self, i: usize) -> Result<()> {
        let agent = self.take_agent(i)?;
        agent.handle.abort();
        // Its report is that it was aborted.
        let _ = agent.join().await;
        Ok(())
    }

    /// Whether agent-node `i` is still running (not stopped, killed, or
    /// ended on its own).
    pub fn agent_running(&self, i: usize) -> bool {
        self.agents.get(i).and_then(Option::as_ref).is_some_and(AgentNode::is_running)
    }

    /// The first agent-node that ended on its own (nobody stopped it):
    /// its index and why — its error, or that it stopped early.
    pub async fn ended_agent(&mut self) -> Option<(usize, anyhow::Error)> {
        let i = self.agents.iter().position(|a| a.as_ref().is_some_and(|a| !a.is_running()))?;
        let why = match self.take_agent(i).ok()?.join().await {
            Err(e) => e,
            Ok(report) => anyhow::anyhow!(
                "agent-node {i} stopped on its own after {} slots",
                report.slots_played
            ),
        };
        Some((i, why))
    }

    fn take_agent(&mut self, i: usize) -> Result<AgentNode> {
        self.agents
            .get_mut(i)
            .and_then(Option::take)
            .with_context(|| format!("agent-node {i} is not running (stopped, killed or unknown)"))
    }
}
