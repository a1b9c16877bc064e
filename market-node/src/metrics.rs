//! The market's Prometheus metrics, registered once at start-up in a
//! `peergrid_runtime::Metrics` registry and served by `serve_metrics`.
//!
//! The handles are atomics: the clock updates the slot metrics, the gRPC
//! layer counts rejected requests by reason. Names (with the `peergrid_`
//! prefix the registry adds): `market_slots_cleared_total`,
//! `market_orders_total`, `market_matched_kwh_total`,
//! `market_clearing_seconds`, `market_missing_reports_total`,
//! `market_rejected_requests_total{reason}`, `market_connected_nodes`,
//! `market_connected_prosumers`; membership and holds:
//! `market_absent_reports_total`, `market_absent_prosumers`,
//! `market_leases_expired_total`, `market_holds_total`,
//! `market_holds_expired_total`, `market_hold_seconds`,
//! `market_batches_refused_total{reason}`, `market_node_messages_dropped_total`.

use std::sync::atomic::AtomicU64;

use peergrid_runtime::Metrics;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use tonic::Code;

/// Label set of a rejection: `reason` is the gRPC code in snake case.
pub(crate) type ReasonLabel = [(&'static str, &'static str); 1];

#[derive(Clone, Debug)]
pub struct MarketMetrics {
    pub slots_cleared: Counter,
    pub orders: Counter,
    pub matched_kwh: Counter<f64, AtomicU64>,
    pub clearing_seconds: Histogram,
    pub missing_reports: Counter,
    pub rejected: Family<ReasonLabel, Counter>,
    pub connected_nodes: Gauge,
    pub connected_prosumers: Gauge,
    pub absent_reports: Counter,
    pub absent_prosumers: Gauge,
    pub leases_expired: Counter,
    pub holds: Counter,
    pub holds_expired: Counter,
    pub hold_seconds: Histogram,
    pub batches_refused: Family<RefusalLabel, Counter>,
    pub node_messages_dropped: Counter,
}

/// Label set of a refused batch: `reason` is "late", "invalid", ...
pub(crate) type RefusalLabel = [(&'static str, &'static str); 1];

impl MarketMetrics {
    pub fn register(metrics: &mut Metrics) -> MarketMetrics {
        let matched_kwh = Counter::<f64, AtomicU64>::default();
        let rejected = Family::<ReasonLabel, Counter>::default();
        let batches_refused = Family::<RefusalLabel, Counter>::default();
        let m = MarketMetrics {
            slots_cleared: metrics.counter("market_slots_cleared", "Market slots cleared"),
            orders: metrics.counter("market_orders", "Limit orders cleared"),
            matched_kwh: matched_kwh.clone(),
            clearing_seconds: metrics.histogram(
                "market_clearing_seconds",
                "Time to clear and settle one slot, seconds",
                [0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0],
            ),
            missing_reports: metrics.counter(
                "market_missing_reports",
                "Expected prosumer reports that missed their slot",
            ),
            rejected: rejected.clone(),
            connected_nodes: metrics.gauge("market_connected_nodes", "Agent-nodes connected"),
            connected_prosumers: metrics
                .gauge("market_connected_prosumers", "Prosumers hosted by connected agent-nodes"),
            absent_reports: metrics.counter(
                "market_absent_reports",
                "Prosumer-slots of nodes within their lease but without a stream (not missing)",
            ),
            absent_prosumers: metrics.gauge(
                "market_absent_prosumers",
                "Prosumers of nodes within their lease but without a stream",
            ),
            leases_expired: metrics.counter(
                "market_leases_expired",
                "Registrations whose lease expired (households left)",
            ),
            holds: metrics
                .counter("market_holds", "Slots held open for nodes waiting on the learner"),
            holds_expired: metrics
                .counter("market_holds_expired", "Node holds cut short at max_hold_ms"),
            hold_seconds: metrics.histogram(
                "market_hold_seconds",
                "How long a held slot stayed open past its deadline, seconds",
                [0.01, 0.05, 0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0],
            ),
            batches_refused: batches_refused.clone(),
            node_messages_dropped: metrics.counter(
                "market_node_messages_dropped",
                "Messages to a lagging node skipped (its queue was full)",
            ),
        };
        let registry = metrics.registry_mut();
        registry.register("market_matched_kwh", "P2P energy matched, kWh", matched_kwh);
        registry.register("market_rejected_requests", "Requests rejected, by reason", rejected);
        registry.register(
            "market_batches_refused",
            "Batches and holds refused in-stream (session kept), by reason",
            batches_refused,
        );
        m
    }

    /// Counts a batch refused in-stream.
    pub fn refuse(&self, reason: &'static str) {
        self.batches_refused.get_or_create(&[("reason", reason)]).inc();
    }

    /// Counts a rejected request under the reason its status code names.
    pub fn reject(&self, code: Code) {
        self.rejected.get_or_create(&[("reason", reason(code))]).inc();
    }
}

fn reason(code: Code) -> &'static str {
    match code {
        Code::InvalidArgument => "invalid_argument",
        Code::FailedPrecondition => "failed_precondition",
        Code::PermissionDenied => "permission_denied",
        Code::Unauthenticated => "unauthenticated",
        Code::ResourceExhausted => "resource_exhausted",
        Code::NotFound => "not_found",
        Code::Internal => "internal",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejections_are_labelled_by_reason() {
        let mut metrics = Metrics::new();
        let m = MarketMetrics::register(&mut metrics);
        m.reject(Code::PermissionDenied);
        m.reject(Code::PermissionDenied);
        m.matched_kwh.inc_by(1.5);
        let text = metrics.encode();
        assert!(
            text.contains(
                "peergrid_market_rejected_requests_total{reason=\"permission_denied\"} 2"
            ),
            "{text}"
        );
        assert!(text.contains("peergrid_market_matched_kwh_total 1.5"), "{text}");
    }
}
