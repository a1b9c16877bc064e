//! peergrid trainer: the central PPO learner.
//!
//! Agent-nodes stream experience batches in (`PushExperience`); the learner
//! thread (`learner`) runs PPO updates on tch (`ppo`) and publishes each
//! new policy version, which every node receives on its `SubscribePolicy`
//! stream as one safetensors blob. Checkpoints ([`checkpoint`]) and
//! TensorBoard event files go under the run directory.
//!
//! This is the only crate of the workspace that links libtorch; no tch type
//! leaves it (weights cross as bytes in the pure-Rust format of
//! `peergrid_core::policy::weights`).

// Public: what the binary, the CLI and the end-to-end tests use; the
// learner's, PPO's and the error's public types are re-exported below.
pub mod checkpoint;
pub mod config;
pub(crate) mod error;
pub mod grpc;
#[cfg(test)]
mod hardening_tests;
pub(crate) mod learner;
pub(crate) mod metrics;
pub(crate) mod ppo;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use peergrid_runtime::{
    serve_metrics_if_configured, Acceptor, ConnectionMetrics, GrpcListener, Metrics, ServeOptions,
    Shutdown, Tokens,
};
use tokio::sync::watch;

pub use config::TrainerConfig;
pub use error::TrainerError;
pub use learner::{LearnerHandle, LearnerSettings, Mode, Published, UpdateRecord};
pub use ppo::PpoConfig;

/// A running trainer.
pub struct TrainerHandle {
    /// The bound gRPC port; `None` when serving in-process (`local_name`).
    pub grpc_addr: Option<SocketAddr>,
    pub metrics_addr: Option<SocketAddr>,
    pub learner: LearnerHandle,
    url: String,
    /// Turns `true` when the trainer's task ends; dropped if it panicked.
    done: watch::Receiver<bool>,
    join: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl TrainerHandle {
    /// The URL agent-nodes learn from: `http://ADDR` (`https://ADDR` with
    /// TLS), or `local://NAME` in this process.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Resolves once the trainer stopped: after its shutdown fired and the
    /// server drained, or on its own (the learner thread died; the server
    /// then stops serving). [`join`](Self::join) says which. The same shape
    /// as `MarketHandle::finished` and `AgentHandle::finished`.
    pub async fn finished(&self) {
        let mut done = self.done.clone();
        // An error means the sender is gone: the task ended without a word.
        let _ = done.wait_for(|done| *done).await;
    }

    /// Whether the trainer has stopped.
    pub fn is_finished(&self) -> bool {
        *self.done.borrow() || self.join.is_finished()
    }

    /// Waits for the trainer to stop (after the shutdown signal, or once the
    /// learner thread died): the server drains, the learner writes its final
    /// checkpoint. An error, naming the panic, if the learner thread died.
    pub async fn join(self) -> anyhow::Result<()> {
        self.join.await.context("trainer task panicked")?
    }
}

/// Starts the trainer: the learner thread (fresh, or from the latest
/// checkpoint with `config.resume`), the gRPC server (on `config.listen`,
/// or in-process with `config.local_name`) and /metrics.
pub async fn start(
    config: TrainerConfig,
    tokens: Tokens,
    shutdown: Shutdown,
) -> anyhow::Result<TrainerHandle> {
    config.validate()?;
    let tokens = tokens.require_configured()?;
    let device = config.device.resolve()?;
    if device != tch::Device::Cpu {
        tracing::info!(?device, "training on CUDA");
    }
    let limits = config.connection_limits()?;
    let mut registry = Metrics::new();
    let metrics = metrics::TrainerMetrics::register(&mut registry);
    // TLS material is read and checked before anything binds, so a bad file
    // is a start-up error naming it.
    let tls = peergrid_runtime::tls::server_tls_pair(
        config.tls_cert.as_deref(),
        config.tls_key.as_deref(),
    )?;
    let acceptor = Acceptor::new(limits, ConnectionMetrics::register(&mut registry), tls);
    let outputs = learner::Outputs {
        checkpoint_dir: config.checkpoint_dir(),
        tensorboard_dir: config.tensorboard_dir(),
    };
    let (learner, thread) = learner::spawn(
        config.ppo.clone(),
        config.learner.clone(),
        outputs,
        config.resume,
        device,
        metrics.clone(),
    )?;
    let (metrics_addr, metrics_task) =
        serve_metrics_if_configured(config.metrics_listen, Arc::new(registry), shutdown.clone())
            .await?;
    let tls = config.tls_cert.is_some();
    let listener = GrpcListener::bind(config.listen, config.local_name.as_deref()).await?;
    let (grpc_addr, url) = (listener.tcp_addr(), listener.url(tls));
    let params = grpc::ServeParams {
        options: ServeOptions {
            acceptor,
            drain: std::time::Duration::from_millis(config.shutdown_timeout_ms),
        },
        tokens: Arc::new(tokens),
        metrics,
        shutdown: shutdown.clone(),
    };
    let server = tokio::spawn(grpc::serve(listener, learner.clone(), params));
    tracing::info!(%url, tls, metrics_addr = ?metrics_addr, mode = config.learner.mode.name(), "trainer listening");
    // On the shutdown signal the learner stops learning at once, while the
    // server drains: an update in progress (seconds to minutes on a large
    // cluster) would otherwise hold the stop for its whole length.
    let interrupter = learner.clone();
    let mut signal = shutdown.clone();
    tokio::spawn(async move {
        signal.recv().await;
        interrupter.interrupt();
    });
    let stopper = learner.clone();
    let (done_tx, done) = watch::channel(false);
    let join = tokio::spawn(async move {
        // Set however the task ends, the error paths included.
        let _done = DoneOnDrop(done_tx);
        server.await.context("server task panicked")??;
        stopper.stop().await?;
        let died = stopper.death();
        tokio::task::spawn_blocking(move || thread.join()).await?.map_err(|_| {
            anyhow::anyhow!(
                "the learner thread panicked: {}",
                died.unwrap_or_else(|| "no message".to_owned())
            )
        })?;
        if let Some(task) = metrics_task {
            task.await.context("metrics task panicked")?;
        }
        Ok(())
    });
    Ok(TrainerHandle { grpc_addr, metrics_addr, learner, url, done, join })
}

/// Marks the trainer's task ended when dropped, on every return path.
struct DoneOnDrop(watch::Sender<bool>);

impl Drop for DoneOnDrop {
    fn drop(&mut self) {
        self.0.send_replace(true);
    }
}
