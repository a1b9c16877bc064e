//! The agent-node's Prometheus metrics, registered once at start-up in the
//! process registry of `peergrid-runtime` (served by `serve_metrics` when
//! `--metrics-listen` is set). Handles are atomics: cloning is cheap and
//! updating never blocks the slot loop.

use std::sync::atomic::AtomicU64;

use peergrid_runtime::Metrics;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};

#[derive(Clone, Debug)]
pub(crate) struct AgentMetrics {
    /// Slots whose batch was sent.
    pub slots_played: Counter,
    /// Slots whose settlements reached the actors.
    pub slots_settled: Counter,
    /// SlotOpen received → OrderBatch handed to the stream, seconds.
    pub batch_build_seconds: Histogram,
    /// Mean reward of the node's prosumers in the last settled slot.
    pub mean_reward: Gauge<f64, AtomicU64>,
    /// Prosumer-slots settled locally with the grid (missing, offline, lost).
    pub local_settlements: Counter,
    /// Reconnect attempts after a lost or failed session.
    pub reconnects: Counter,
    /// Prosumers hosted.
    pub prosumers: Gauge,
    /// Learning: the policy version the actors act with.
    pub policy_version: Gauge,
    /// Batches (or holds) the market refused in-stream: late, invalid...
    pub batches_refused: Counter,
    /// Slots this node asked the market to hold while it waited for the learner.
    pub holds: Counter,
    /// Seconds waited for the next policy version (synchronous learning).
    pub policy_wait_seconds: Histogram,
}

impl AgentMetrics {
    pub(crate) fn register(m: &mut Metrics) -> AgentMetrics {
        let mean_reward = Gauge::<f64, AtomicU64>::default();
        m.registry_mut().register(
            "agent_mean_reward",
            "Mean reward of the hosted prosumers in the last settled slot",
            mean_reward.clone(),
        );
        AgentMetrics {
            slots_played: m.counter("agent_slots_played", "Slots played (batch sent)"),
            slots_settled: m.counter("agent_slots_settled", "Slots settled"),
            // 0.1 ms .. ~3.3 s
            batch_build_seconds: m.histogram(
                "agent_batch_build_seconds",
                "SlotOpen received to OrderBatch sent",
                exponential_buckets(0.0001, 2.0, 16),
            ),
            mean_reward,
            local_settlements: m.counter("agent_local_settlements", "Prosumer-slots settled locally with the grid"),
            reconnects: m.counter("agent_reconnects", "Reconnects to the market"),
            prosumers: m.gauge("agent_prosumers", "Prosumers hosted by this node"),
            policy_version: m.gauge("agent_policy_version", "Policy version the actors act with (learning)"),
            batches_refused: m.counter("agent_batches_refused", "Batches or holds the market refused (late, invalid...)"),
            holds: m.counter("agent_holds", "Slots held at the market while waiting for the learner"),
            policy_wait_seconds: m.histogram(
                "agent_policy_wait_seconds",
                "Synchronous learning: rollout pushed to next policy version received",
                exponential_buckets(0.001, 2.0, 18),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_show_up_in_the_exposition() {
        let mut registry = Metrics::new();
        let m = AgentMetrics::register(&mut registry);
        m.slots_played.inc();
        m.mean_reward.set(-0.25);
        m.batch_build_seconds.observe(0.002);
        let text = registry.encode();
        assert!(text.contains("peergrid_agent_slots_played_total 1"), "{text}");
        assert!(text.contains("peergrid_agent_mean_reward -0.25"), "{text}");
        assert!(text.contains("peergrid_agent_batch_build_seconds_count 1"), "{text}");
    }
}
