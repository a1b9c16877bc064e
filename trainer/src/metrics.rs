//! The trainer's Prometheus metrics (names get the registry's `peergrid_`
//! prefix): `trainer_policy_version`, `trainer_updates_total`,
//! `trainer_update_seconds`, `trainer_samples_total`,
//! `trainer_stale_batches_total`, `trainer_rejected_batches_total`,
//! `trainer_discarded_updates_total`, `trainer_awaited_rollouts_total`, `trainer_samples_per_second`, `trainer_policy_lag`,
//! `trainer_mean_episode_return`.

use std::sync::atomic::AtomicU64;

use peergrid_runtime::Metrics;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;

#[derive(Clone, Debug)]
pub struct TrainerMetrics {
    pub version: Gauge,
    pub updates: Counter,
    pub update_seconds: Histogram,
    pub samples: Counter,
    pub batches_stale: Counter,
    pub batches_rejected: Counter,
    /// Updates undone because they produced non-finite parameters or statistics.
    pub updates_discarded: Counter,
    /// Updates interrupted (and undone) by a shutdown.
    pub updates_interrupted: Counter,
    /// Rollouts a node announced as it began them (`BeginRollout`) that a
    /// synchronous round waits for.
    pub rollouts_awaited: Counter,
    pub samples_per_s: Gauge<f64, AtomicU64>,
    pub policy_lag: Gauge<f64, AtomicU64>,
    pub mean_episode_return: Gauge<f64, AtomicU64>,
    /// Rollouts by node and outcome ("accepted", "stale"): the share of each
    /// node's experience the learner used.
    pub rollouts: Family<RolloutLabel, Counter>,
}

/// Labels of [`TrainerMetrics::rollouts`].
pub(crate) type RolloutLabel = [(&'static str, String); 2];

impl TrainerMetrics {
    pub fn register(metrics: &mut Metrics) -> TrainerMetrics {
        let samples_per_s = Gauge::<f64, AtomicU64>::default();
        let policy_lag = Gauge::<f64, AtomicU64>::default();
        let mean_episode_return = Gauge::<f64, AtomicU64>::default();
        let rollouts = Family::<RolloutLabel, Counter>::default();
        let m = TrainerMetrics {
            rollouts: rollouts.clone(),
            version: metrics.gauge("trainer_policy_version", "Newest published policy version"),
            updates: metrics.counter("trainer_updates", "PPO updates done"),
            update_seconds: metrics.histogram(
                "trainer_update_seconds",
                "Wall time of one PPO update, seconds",
                [0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0],
            ),
            samples: metrics.counter("trainer_samples", "Experience samples accepted"),
            batches_stale: metrics.counter("trainer_stale_batches", "Experience batches dropped as too old"),
            batches_rejected: metrics.counter("trainer_rejected_batches", "Experience batches rejected as invalid"),
            updates_discarded: metrics.counter(
                "trainer_discarded_updates",
                "PPO updates undone because they produced non-finite parameters or statistics",
            ),
            updates_interrupted: metrics.counter(
                "trainer_interrupted_updates",
                "PPO updates interrupted and undone by a shutdown (their rollouts are pushed again after a restart)",
            ),
            rollouts_awaited: metrics.counter(
                "trainer_awaited_rollouts",
                "Rollouts a node announced as it began them (BeginRollout) that a synchronous round waits for",
            ),
            samples_per_s: samples_per_s.clone(),
            policy_lag: policy_lag.clone(),
            mean_episode_return: mean_episode_return.clone(),
        };
        let r = metrics.registry_mut();
        r.register(
            "trainer_samples_per_second",
            "Sample-gradients per second of the last update",
            samples_per_s,
        );
        r.register(
            "trainer_policy_lag",
            "Mean version lag of the last update's samples",
            policy_lag,
        );
        r.register(
            "trainer_mean_episode_return",
            "Mean episode (day) return of the last update",
            mean_episode_return,
        );
        r.register("trainer_rollouts", "Rollouts by node and outcome (accepted, stale)", rollouts);
        m
    }

    /// Metrics registered in a throw-away registry (tests, embedded runs without /metrics).
    pub fn unregistered() -> TrainerMetrics {
        TrainerMetrics::register(&mut Metrics::new())
    }
}
