//! peergrid market-node: the clock and auctioneer of a distributed run.
//!
//! Per slot the market sends each connected agent-node one `SlotOpen`,
//! collects one `OrderBatch` per node (a `HouseholdReport` per prosumer),
//! clears all reports together with the domain core exactly as the
//! reference simulator does, and sends each node one `SlotCleared`.
//!
//! Modules, top to bottom: [`config`] (flags, file, env; validated),
//! [`grpc`] (the only file naming generated types: auth, wire ⇄ domain,
//! services), `clock` (the task owning the state; fast and real-time
//! pacing), `state` (pure membership, rounds, clearing, KPIs, balances),
//! `scenario` (operator events), `error` (the state's refusals, mapped
//! to the wire once in `grpc`), `metrics` (Prometheus). TLS, tokens
//! and dialling come from `peergrid_runtime`, as in every node.
//!
//! [`start`] runs everything in-process on the configured (or ephemeral)
//! ports and returns a [`MarketHandle`]; `main.rs` is a thin wrapper.

// Public: what the binary, the CLI and the end-to-end tests use. The rest
// is this crate's own (`unreachable_pub` keeps it so).
pub(crate) mod clock;
pub mod config;
pub(crate) mod error;
pub mod grpc;
pub(crate) mod metrics;
pub(crate) mod scenario;
pub(crate) mod state;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use peergrid_core::data::Dataset;
use peergrid_runtime::{
    serve_metrics_if_configured, Acceptor, ConnectionMetrics, GrpcListener, Metrics, ServeOptions,
    Shutdown,
};
use tokio::task::JoinHandle;

use clock::ClockHandle;
pub use config::{ClockMode, MarketConfig, MarketSettings};

use crate::metrics::MarketMetrics;
use crate::state::MarketState;

/// A running market.
pub struct MarketHandle {
    /// The bound gRPC port; `None` when serving in-process (`local_name`).
    pub grpc_addr: Option<SocketAddr>,
    pub metrics_addr: Option<SocketAddr>,
    url: String,
    clock: ClockHandle,
    join: JoinHandle<anyhow::Result<()>>,
}

impl MarketHandle {
    /// The URL agent-nodes connect to: `http://ADDR`, `https://ADDR` with
    /// TLS, or `local://NAME` in this process.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Resolves once the run reached `max_slots` (never without a limit).
    pub async fn finished(&self) {
        self.clock.finished().await
    }

    /// Whether the run reached `max_slots`: its last slot cleared.
    pub fn is_finished(&self) -> bool {
        self.clock.is_finished()
    }

    /// Waits until every task stopped (after the shutdown was triggered).
    pub async fn join(self) -> anyhow::Result<()> {
        self.join.await.context("market task panicked")?
    }
}

/// Starts the market: loads the dataset, binds the gRPC (and metrics)
/// listeners (port 0 picks a free port; `local_name` serves in-process
/// instead of TCP), spawns the clock and the server.
/// Everything stops after `shutdown` fires and the open slot has cleared.
pub async fn start(config: MarketConfig, shutdown: Shutdown) -> anyhow::Result<MarketHandle> {
    let source = config.settings.dataset_source()?;
    let ds = Arc::new(source.load().with_context(|| format!("loading dataset {source}"))?);
    start_with_dataset(config, ds, shutdown).await
}

/// [`start`] with a dataset the caller already loaded (tests share one).
pub async fn start_with_dataset(
    config: MarketConfig,
    ds: Arc<Dataset>,
    shutdown: Shutdown,
) -> anyhow::Result<MarketHandle> {
    let settings = config.settings.clone();
    let session_seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
        ^ u64::from(std::process::id());
    let state = MarketState::new(Arc::clone(&ds), config.sim.clone(), &settings, session_seed)?;
    // TLS material is read and checked before anything binds, so a bad file
    // is a start-up error naming it.
    let tls = peergrid_runtime::tls::server_tls_pair(
        settings.tls_cert.as_deref(),
        settings.tls_key.as_deref(),
    )?;
    let limits = config.connection_limits()?;

    let mut registry = Metrics::new();
    let metrics = MarketMetrics::register(&mut registry);
    let acceptor = Acceptor::new(limits, ConnectionMetrics::register(&mut registry), tls);
    let (metrics_addr, metrics_task) =
        serve_metrics_if_configured(settings.metrics_listen, Arc::new(registry), shutdown.clone())
            .await?;

    let listener = GrpcListener::bind(settings.listen, settings.local_name.as_deref()).await?;
    let tls = settings.tls_cert.is_some();
    let (grpc_addr, url) = (listener.tcp_addr(), listener.url(tls));
    let (clock, clock_task) = clock::spawn_clock(state, metrics.clone(), shutdown.clone());

    // The server stops once the clock has finished its last slot, so the
    // last SlotCleared still reaches the nodes.
    let clock_done = Arc::new(tokio::sync::Notify::new());
    let stop = {
        let clock_done = Arc::clone(&clock_done);
        let mut shutdown = shutdown.clone();
        async move {
            shutdown.recv().await;
            clock_done.notified().await;
        }
    };
    let params = grpc::ServeParams {
        options: ServeOptions {
            acceptor,
            drain: Duration::from_millis(settings.shutdown_timeout_ms),
        },
        clock: clock.clone(),
        tokens: Arc::new(config.tokens.clone()),
        metrics,
        max_batch: settings.max_batch,
        node_timeout: Duration::from_millis(settings.node_timeout_ms),
        shutdown: shutdown.clone(),
    };
    let server = tokio::spawn(grpc::serve(listener, params, stop));
    tracing::info!(%url, tls, max_connections = limits.max_connections, metrics_addr = ?metrics_addr, dataset = %ds.name, "market-node listening");

    let join = tokio::spawn(async move {
        let clock_result = clock_task.await;
        clock_done.notify_one();
        clock_result.context("clock task panicked")?;
        server.await.context("server task panicked")??;
        if let Some(task) = metrics_task {
            task.await.context("metrics task panicked")?;
        }
        drop(shutdown);
        Ok(())
    });
    Ok(MarketHandle { grpc_addr, metrics_addr, url, clock, join })
}
