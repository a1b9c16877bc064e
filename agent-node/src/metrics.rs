//! The agent-node's Prometheus metrics, registered once at start-up in the
//! process registry of `peergrid-runtime` (served by `serve_metrics` when
//! `--metrics-listen` is set). Handles are atomics: cloning is cheap and
//! updating never blocks the slot loop.
//!
//! With a remote policy (`--policy remote:URL`):
//! `agent_remote_policy_calls_total` (slots played with the service's
//! actions), `agent_remote_policy_fallbacks_total{reason}` (slots played with
//! the rule-based action instead; `reason` is one of [`FALLBACK_REASONS`])
//! and `agent_remote_policy_seconds` (one call, connecting included).

use std::sync::atomic::AtomicU64;

use peergrid_runtime::Metrics;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};

/// Label set of a remote-policy fallback: `reason` is one of [`FALLBACK_REASONS`].
pub(crate) type FallbackLabel = [(&'static str, &'static str); 1];

/// Why a slot fell back to the rule-based action: the service did not
/// answer within `remote_policy_timeout_ms` (`timeout`), could not be
/// reached or is backing off after that (`unavailable`), answered with an
/// error status (`refused`), or answered something unusable — wrong slot,
/// ids or count, a non-finite value (`invalid`).
pub(crate) const FALLBACK_REASONS: [&str; 4] = ["timeout", "unavailable", "refused", "invalid"];

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
    /// Prosumer actors restarted after a panic (each lost one slot's report
    /// or settlement).
    pub actor_restarts: Counter,
    /// Learning: the policy version the actors act with.
    pub policy_version: Gauge,
    /// Batches (or holds) the market refused in-stream: late, invalid...
    pub batches_refused: Counter,
    /// Slots this node asked the market to hold while it waited for the
    /// learner or the remote policy.
    pub holds: Counter,
    /// Seconds waited for the next policy version (synchronous learning).
    pub policy_wait_seconds: Histogram,
    /// Remote policy: slots played with the service's actions.
    pub remote_policy_calls: Counter,
    /// Remote policy: slots played with the rule-based action instead, by reason.
    pub remote_policy_fallbacks: Family<FallbackLabel, Counter>,
    /// Remote policy: one call's duration (connecting included), seconds.
    pub remote_policy_seconds: Histogram,
}

impl AgentMetrics {
    pub(crate) fn register(m: &mut Metrics) -> AgentMetrics {
        let mean_reward = Gauge::<f64, AtomicU64>::default();
        m.registry_mut().register(
            "agent_mean_reward",
            "Mean reward of the hosted prosumers in the last settled slot",
            mean_reward.clone(),
        );
        let remote_policy_fallbacks = Family::<FallbackLabel, Counter>::default();
        m.registry_mut().register(
            "agent_remote_policy_fallbacks",
            "Slots played with the rule-based action because the remote policy timed out, was unavailable, refused or answered invalidly",
            remote_policy_fallbacks.clone(),
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
            local_settlements: m
                .counter("agent_local_settlements", "Prosumer-slots settled locally with the grid"),
            reconnects: m.counter("agent_reconnects", "Reconnects to the market"),
            prosumers: m.gauge("agent_prosumers", "Prosumers hosted by this node"),
            actor_restarts: m.counter(
                "agent_actor_restarts",
                "Prosumer actors restarted from their last good state after a panic",
            ),
            policy_version: m
                .gauge("agent_policy_version", "Policy version the actors act with (learning)"),
            batches_refused: m.counter(
                "agent_batches_refused",
                "Batches or holds the market refused (late, invalid...)",
            ),
            holds: m.counter(
                "agent_holds",
                "Slots held at the market while waiting for the learner or the remote policy",
            ),
            policy_wait_seconds: m.histogram(
                "agent_policy_wait_seconds",
                "Synchronous learning: rollout pushed to next policy version received",
                exponential_buckets(0.001, 2.0, 18),
            ),
            remote_policy_calls: m.counter(
                "agent_remote_policy_calls",
                "Slots played with the remote policy's actions",
            ),
            remote_policy_fallbacks,
            // 0.1 ms .. ~13 min
            remote_policy_seconds: m.histogram(
                "agent_remote_policy_seconds",
                "One remote policy call, connecting included",
                exponential_buckets(0.0001, 2.0, 24),
            ),
        }
    }

    /// Counts one fallback; `reason` is one of [`FALLBACK_REASONS`].
    pub(crate) fn count_fallback(&self, reason: &'static str) {
        debug_assert!(FALLBACK_REASONS.contains(&reason), "{reason}");
        self.remote_policy_fallbacks.get_or_create(&[("reason", reason)]).inc();
    }

    /// Fallbacks counted for `reason` so far.
    #[cfg(test)]
    pub(crate) fn fallbacks(&self, reason: &'static str) -> u64 {
        self.remote_policy_fallbacks.get_or_create(&[("reason", reason)]).get()
    }

    /// Metrics registered in a throw-away registry.
    #[cfg(test)]
    pub(crate) fn detached() -> AgentMetrics {
        AgentMetrics::register(&mut Metrics::new())
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
        m.count_fallback("timeout");
        m.count_fallback("timeout");
        m.count_fallback("invalid");
        let text = registry.encode();
        assert!(
            text.contains(r#"peergrid_agent_remote_policy_fallbacks_total{reason="timeout"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(r#"peergrid_agent_remote_policy_fallbacks_total{reason="invalid"} 1"#),
            "{text}"
        );
        assert_eq!((m.fallbacks("timeout"), m.fallbacks("unavailable")), (2, 0));
    }
}
