//! The actix system the prosumer actors live in: `n` arbiters (one thread
//! each, `--actor-threads`) and the system thread that owns them.
//!
//! actix needs a `System` registered on the thread that creates arbiters,
//! and a node runs inside tokio (several nodes may share one process, as in
//! the tests and the embedded run), so each node gets its own system on a
//! thread of its own, which only waits for the stop. CPU-heavy policies
//! (the MLP) therefore never run on the tokio workers that own the gRPC
//! stream. Dropping an [`ActorSystem`] stops the arbiters (after the
//! message in hand) and joins every thread.

use std::thread::JoinHandle;

use actix::{Arbiter, ArbiterHandle, System};

use crate::error::AgentError;

pub(crate) struct ActorSystem {
    system: System,
    arbiters: Vec<ArbiterHandle>,
    thread: Option<JoinHandle<()>>,
}

impl ActorSystem {
    /// Starts a system with `n` arbiters (at least one).
    pub(crate) fn start(n: usize) -> Result<ActorSystem, AgentError> {
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("prosumers".into())
            .spawn(move || {
                let runner = System::new();
                let arbiters: Vec<Arbiter> =
                    match (0..n.max(1)).map(|_| Arbiter::try_new()).collect() {
                        Ok(arbiters) => arbiters,
                        Err(e) => {
                            let _ = tx.send(Err(e));
                            return;
                        }
                    };
                let handles = arbiters.iter().map(Arbiter::handle).collect();
                if tx.send(Ok((System::current(), handles))).is_err() {
                    return;
                }
                // Until `System::stop`, which also stops every arbiter.
                let _ = runner.run();
                for arbiter in arbiters {
                    let _ = arbiter.join();
                }
            })
            .map_err(cannot_start)?;
        match rx.recv() {
            Ok(Ok((system, arbiters))) => {
                Ok(ActorSystem { system, arbiters, thread: Some(thread) })
            }
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(cannot_start(e))
            }
            Err(_) => {
                let _ = thread.join();
                Err(AgentError::Actors("the actor system's thread stopped while starting".into()))
            }
        }
    }

    pub(crate) fn arbiters(&self) -> &[ArbiterHandle] {
        &self.arbiters
    }
}

fn cannot_start(e: std::io::Error) -> AgentError {
    AgentError::Actors(format!("cannot start an actor thread: {e}"))
}

impl Drop for ActorSystem {
    fn drop(&mut self) {
        self.system.stop();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
