//! Graceful shutdown: one signal every long-lived task listens to.
//!
//! As in mini-redis, with a `tokio::sync::watch` channel: the
//! [`ShutdownController`] owns the sender, every task owns a [`Shutdown`]
//! (a receiver clone). [`ShutdownController::trigger`] flips the value and
//! wakes every task; a task finishes its current unit of work (the slot,
//! the update), then returns. Whoever started a task waits for it through
//! its own handle (a node's `join()`), so no task is ever aborted mid-slot.

use std::future::Future;

use tokio::sync::watch;

/// Owned by `main`: triggers shutdown.
#[derive(Debug)]
pub struct ShutdownController {
    tx: watch::Sender<bool>,
}

/// Owned by each task: tells it when to stop. Clone it for sub-tasks.
#[derive(Clone, Debug)]
pub struct Shutdown {
    rx: watch::Receiver<bool>,
}

impl Default for ShutdownController {
    fn default() -> Self {
        ShutdownController::new()
    }
}

impl ShutdownController {
    pub fn new() -> ShutdownController {
        let (tx, _) = watch::channel(false);
        ShutdownController { tx }
    }

    /// A handle for a new task.
    pub fn subscribe(&self) -> Shutdown {
        Shutdown { rx: self.tx.subscribe() }
    }

    /// Tells every task to stop. Idempotent.
    pub fn trigger(&self) {
        self.tx.send_replace(true);
    }

    /// A node binary's wait: until SIGTERM / Ctrl-C ([`wait_for_signal`])
    /// or until `finished` (the node's handle's `finished()`: it stopped on
    /// its own), whichever comes first; then triggers the shutdown either
    /// way, so every task drains before the binary joins the node. An error
    /// (the shutdown triggered all the same) if the signal handlers cannot
    /// be installed.
    pub async fn stop_on_signal_or(
        &self,
        finished: impl Future<Output = ()>,
    ) -> std::io::Result<Stopping> {
        let stopping = tokio::select! {
            signal = wait_for_signal() => signal.map(|()| Stopping::Signal),
            () = finished => Ok(Stopping::Finished),
        };
        self.trigger();
        stopping
    }
}

/// Why a node's binary began to stop ([`ShutdownController::stop_on_signal_or`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stopping {
    /// SIGTERM or Ctrl-C arrived.
    Signal,
    /// The node stopped on its own.
    Finished,
}

impl Shutdown {
    /// Whether shutdown has been triggered.
    pub fn is_shutdown(&self) -> bool {
        *self.rx.borrow()
    }

    /// Resolves when shutdown is triggered (at once if it already was, or if
    /// the controller is gone, which also means nobody can keep us running).
    /// Cancel-safe: use it as a `tokio::select!` branch.
    pub async fn recv(&mut self) {
        // Err means the controller was dropped: treat as shutdown.
        let _ = self.rx.wait_for(|stop| *stop).await;
    }
}

/// Resolves on SIGTERM (what docker and Kubernetes send) or Ctrl-C / SIGINT.
/// Errors only if the signal handlers cannot be installed.
pub async fn wait_for_signal() -> std::io::Result<()> {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = term.recv() => Ok(()),
            ctrl_c = tokio::signal::ctrl_c() => ctrl_c,
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn every_task_stops_after_the_trigger_and_not_before() {
        let controller = ShutdownController::new();
        let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
        for id in 0..3 {
            let mut shutdown = controller.subscribe();
            let done = done_tx.clone();
            tokio::spawn(async move {
                assert!(!shutdown.is_shutdown());
                shutdown.recv().await;
                // Finish the current unit of work after the signal.
                tokio::time::sleep(Duration::from_millis(10 * id)).await;
                done.send(id).unwrap();
            });
        }
        drop(done_tx);
        let early = tokio::time::timeout(Duration::from_millis(30), done_rx.recv()).await;
        assert!(early.is_err(), "tasks are still running before the trigger");
        controller.trigger();
        controller.trigger();
        let mut finished = Vec::new();
        while let Some(id) = tokio::time::timeout(Duration::from_secs(5), done_rx.recv())
            .await
            .expect("every task stops")
        {
            finished.push(id);
        }
        finished.sort();
        assert_eq!(finished, [0, 1, 2]);
    }

    #[tokio::test]
    async fn a_node_that_finished_on_its_own_stops_its_tasks_too() {
        let controller = ShutdownController::new();
        let mut task = controller.subscribe();
        let stopping = controller.stop_on_signal_or(std::future::ready(())).await.unwrap();
        assert_eq!(stopping, Stopping::Finished);
        assert!(task.is_shutdown(), "the shutdown is triggered either way");
        task.recv().await;
    }

    #[tokio::test]
    async fn late_subscribers_see_a_past_trigger_and_a_dropped_controller_means_stop() {
        let controller = ShutdownController::new();
        controller.trigger();
        let mut late = controller.subscribe();
        assert!(late.is_shutdown());
        late.recv().await;

        let controller = ShutdownController::new();
        let mut orphan = controller.subscribe();
        drop(controller);
        tokio::time::timeout(Duration::from_secs(5), orphan.recv()).await.expect("recv returns");
    }
}
