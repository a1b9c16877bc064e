//! Learning: the node's side of the trainer.
//!
//! A background task follows the trainer's `SubscribePolicy` stream
//! (reconnecting with backoff, e.g. across a trainer restart) and keeps the
//! newest [`Learned`] version in a `watch` channel. The session asks
//! [`Learning::due`] before each slot. Rollouts end on the market's slot
//! grid — at every slot that is a multiple of `rollout_slots` — so every
//! node of a cluster pushes for the same slot and the synchronous learner
//! can wait for all of them (a node that joined mid-rollout pushes a
//! shorter first rollout). Then it prepares the slot (so the bootstrap value uses the very
//! observation the actors will act on), assembles the step-major
//! [`Rollout`], pushes it and — in synchronous mode — waits for the next
//! version before acting. Trainer failures never end the market session:
//! a rollout that cannot be delivered is dropped (logged, counted) and the
//! actors keep acting with the version they have.

use std::time::Duration;

use peergrid_core::experience::{Rollout, RolloutStart};
use peergrid_core::observation::OBS_DIM;
use peergrid_core::policy::{MlpModel, ACT_DIM};
use peergrid_runtime::{Backoff, Shutdown};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::actors::ActorRollout;
use crate::config::AgentConfig;
use crate::error::AgentError;
use crate::grpc::{LearnerClient, PolicyStream, PushReply, Pushed};
use crate::policy::Learned;

pub struct Learning {
    cfg: AgentConfig,
    url: String,
    client: Option<LearnerClient>,
    versions: watch::Receiver<Option<Learned>>,
    current: Learned,
    sync: bool,
    steps: usize,
    first_slot: u64,
    task: tokio::task::JoinHandle<()>,
    shutdown: Shutdown,
    /// Rollouts the trainer accepted.
    pub pushed: u64,
    /// Rollouts the trainer dropped as stale.
    pub stale: u64,
}

impl Drop for Learning {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn learned(w: peergrid_core::policy::weights::PolicyWeights) -> Result<Learned, AgentError> {
    let version = w.version;
    Ok(Learned { model: std::sync::Arc::new(MlpModel::new(w.net, w.normaliser)?), version })
}

/// Follows the policy stream: `first` (the start-up subscription, kept
/// open so that the trainer never sees this node unsubscribed in between),
/// then a fresh subscription after every failure.
async fn follow(
    cfg: AgentConfig,
    url: String,
    tx: watch::Sender<Option<Learned>>,
    first: PolicyStream,
    mut shutdown: Shutdown,
) {
    let mut backoff = Backoff::new(
        Duration::from_millis(cfg.reconnect.base_ms),
        Duration::from_millis(cfg.reconnect.max_ms),
        2.0,
    );
    let mut first = Some(first);
    loop {
        let session = async {
            let mut stream = match first.take() {
                Some(stream) => stream,
                None => LearnerClient::connect(&cfg, &url).await?.subscribe(&cfg.name, 0).await?,
            };
            while let Some(w) = stream.next().await? {
                backoff.reset();
                let l = learned(w)?;
                debug!(version = l.version, "policy version received");
                tx.send_replace(Some(l));
            }
            Ok::<(), AgentError>(())
        };
        tokio::select! {
            r = session => match r {
                Ok(()) => warn!("the trainer closed the policy stream; resubscribing"),
                Err(e) => warn!("policy stream from the trainer failed: {e}; resubscribing"),
            },
            _ = shutdown.recv() => return,
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff.next_delay()) => {}
            _ = shutdown.recv() => return,
        }
    }
}

impl Learning {
    /// Connects to the trainer, learns its mode, subscribes, and waits (at
    /// most `learner_wait_ms`) for the first version.
    pub async fn start(cfg: &AgentConfig, shutdown: Shutdown) -> Result<Learning, AgentError> {
        let url = cfg.learner.clone().ok_or_else(|| AgentError::config("learner", "is not set"))?;
        let wait = Duration::from_millis(cfg.learner_wait_ms);
        let started = tokio::time::Instant::now();
        let mut backoff = Backoff::new(
            Duration::from_millis(cfg.reconnect.base_ms),
            Duration::from_millis(cfg.reconnect.max_ms),
            2.0,
        );
        let (mut client, sync) = loop {
            let attempt = async {
                let mut c = LearnerClient::connect(cfg, &url).await?;
                let sync = c.is_sync().await?;
                Ok::<_, AgentError>((c, sync))
            };
            match attempt.await {
                Ok(x) => break x,
                Err(e) if e.is_retryable() && started.elapsed() < wait => {
                    warn!("trainer at {url} not ready: {e}; retrying");
                    tokio::time::sleep(backoff.next_delay()).await;
                }
                Err(e) => return Err(e),
            }
        };
        let mut first = client.subscribe(&cfg.name, 0).await?;
        let current = match tokio::time::timeout(
            wait.saturating_sub(started.elapsed()),
            first.next(),
        )
        .await
        {
            Ok(Ok(Some(w))) => learned(w)?,
            Ok(Ok(None)) => {
                return Err(AgentError::protocol(
                    "the trainer closed the policy stream before sending a policy",
                ))
            }
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                return Err(AgentError::Connect {
                    url,
                    reason: "no policy version before learner_wait_ms".into(),
                })
            }
        };
        let (tx, versions) = watch::channel(Some(current.clone()));
        let task = tokio::spawn(follow(cfg.clone(), url.clone(), tx, first, shutdown.clone()));
        info!(%url, version = current.version, sync, rollout_slots = cfg.rollout_slots, "learning from the trainer");
        Ok(Learning {
            cfg: cfg.clone(),
            url,
            client: Some(client),
            versions,
            current,
            sync,
            steps: 0,
            first_slot: 0,
            task,
            shutdown,
            pushed: 0,
            stale: 0,
        })
    }

    /// The version the actors act with.
    pub fn current(&self) -> &Learned {
        &self.current
    }

    /// The newest version the trainer's policy stream has announced (the
    /// actors may still act with an older one until the next exchange).
    pub fn newest_version(&self) -> Option<u64> {
        self.versions.borrow().as_ref().map(|l| l.version)
    }

    /// A slot was played: one more step in every actor's buffer.
    pub fn count_step(&mut self, slot: u64) {
        if self.steps == 0 {
            self.first_slot = slot;
            if self.sync {
                self.begin_rollout(slot);
            }
        }
        self.steps += 1;
    }

    /// Synchronous mode: tells the trainer, without holding up the slot,
    /// that a rollout with the current version begins at `slot` and ends on
    /// the next slot of the rollout grid (see [`Learning::due`]), so that
    /// it waits for this rollout even when it is the node's first, instead
    /// of updating without it and dropping it as stale. Advisory: a failure
    /// (or a trainer without `BeginRollout`) costs at most that rollout.
    fn begin_rollout(&self, slot: u64) {
        let Some(mut client) = self.client.clone() else {
            debug!(slot, "no learner connection: the rollout's beginning is not announced");
            return;
        };
        let grid = self.cfg.rollout_slots as u64;
        let start = RolloutStart {
            node_name: self.cfg.name.clone(),
            policy_version: self.current.version,
            first_slot: slot,
            end_slot: (slot / grid + 1) * grid,
        };
        tokio::spawn(async move {
            match tokio::time::timeout(Duration::from_secs(5), client.begin_rollout(&start)).await {
                Ok(Ok(awaited)) => debug!(
                    version = start.policy_version,
                    end_slot = start.end_slot,
                    awaited,
                    "rollout begun"
                ),
                Ok(Err(e)) => debug!("the rollout's beginning was not announced: {e}"),
                Err(_) => debug!("the rollout's beginning was not announced within 5 s"),
            }
        });
    }

    /// Whether a rollout ends before `slot` is played: `slot` is on the
    /// rollout grid (or, after the market's slot numbers jumped, the
    /// rollout is full) and there are steps to send.
    pub fn due(&self, slot: u64) -> bool {
        self.steps > 0
            && (slot % self.cfg.rollout_slots as u64 == 0 || self.steps >= self.cfg.rollout_slots)
    }

    /// Synchronous learning: the node waits for the next version after each rollout.
    pub fn is_sync(&self) -> bool {
        self.sync
    }

    /// A newer version, if one arrived since the last call: in
    /// asynchronous mode at any slot; in synchronous mode only before the
    /// node's first rollout begins (it may have started while a round was
    /// closing), so that the rollout is acted with the trainer's current
    /// version, not stale from the start.
    pub fn newer(&mut self) -> Option<Learned> {
        if self.sync && self.steps > 0 {
            return None;
        }
        let latest = self.versions.borrow_and_update().clone()?;
        (latest.version != self.current.version).then(|| {
            self.current = latest.clone();
            latest
        })
    }

    /// Sends the collected rollout; in synchronous mode waits for the next
    /// version. Returns the version to act with from now on if it changed.
    pub async fn exchange(&mut self, parts: Vec<ActorRollout>) -> Option<Learned> {
        let rollout =
            assemble(&self.cfg.name, self.current.version, self.first_slot, self.steps, parts);
        self.steps = 0;
        let Some(rollout) = rollout else { return self.newer() };
        // Mark what we have seen, so that waiting below sees only newer versions.
        self.versions.borrow_and_update();
        let started = tokio::time::Instant::now();
        let pushed = self.push(&rollout).await;
        debug!(
            version = rollout.policy_version,
            first_slot = rollout.first_slot,
            steps = rollout.steps,
            verdict = ?pushed.as_ref().map_err(|e| e.to_string()),
            push_ms = started.elapsed().as_millis() as u64,
            "rollout pushed"
        );
        let act_version = match pushed {
            Ok(reply) => self.count(reply),
            Err(e) => {
                warn!(samples = rollout.samples(), "rollout not delivered to the trainer: {e}");
                None
            }
        };
        if self.sync {
            return self.wait_for_next(&rollout, act_version).await;
        }
        self.newer()
    }

    /// Synchronous mode: waits (at most `learner_wait_ms`) for the version
    /// to act with next: `target` as the trainer answered the push (or
    /// newer; or older than ours — a trainer resumed from an earlier
    /// checkpoint), or without an answer any version other than the current
    /// one. The target may be here already: after a stale rollout with no
    /// round open it is the trainer's current version, which may have
    /// arrived before we pushed. When the trainer republishes our version
    /// — it restarted and resubscribed us, so the rollout we pushed (or
    /// failed to push while it stopped) may be lost — the rollout is pushed
    /// again; a trainer that already has it refuses the duplicate.
    async fn wait_for_next(
        &mut self,
        rollout: &Rollout,
        mut target: Option<u64>,
    ) -> Option<Learned> {
        let deadline =
            tokio::time::Instant::now() + Duration::from_millis(self.cfg.learner_wait_ms);
        let mut shutdown = self.shutdown.clone();
        let current = self.current.version;
        let wanted = |v: u64, target: Option<u64>| {
            v != current && target.is_none_or(|t| v >= t || v < current)
        };
        if let Some(l) = self.arrived(target, wanted) {
            return Some(l);
        }
        loop {
            let changed = tokio::select! {
                r = tokio::time::timeout_at(deadline, self.versions.changed()) => r,
                _ = shutdown.recv() => {
                    debug!("shutting down while waiting for a policy version");
                    return None;
                }
            };
            match changed {
                Ok(Ok(())) => {
                    debug!(newest = ?self.newest_version(), "the policy stream changed while waiting")
                }
                Ok(Err(_)) => return None,
                Err(_) => {
                    warn!(
                        version = self.current.version,
                        "no new policy version in time; acting on with the current one"
                    );
                    return None;
                }
            }
            let Some(latest) = self.versions.borrow_and_update().clone() else { continue };
            if wanted(latest.version, target) {
                self.current = latest.clone();
                return Some(latest);
            }
            if latest.version != current {
                // Between ours and the target: the round we wait for is still open.
                continue;
            }
            info!(
                version = latest.version,
                "the trainer republished our version (it restarted): pushing the rollout again"
            );
            match self.push(rollout).await {
                Ok(reply) => {
                    target = self.count(reply);
                    if let Some(l) = self.arrived(target, wanted) {
                        return Some(l);
                    }
                }
                Err(e) => debug!("rollout not re-delivered: {e}"),
            }
        }
    }

    /// Counts a delivered rollout; the version the trainer says to act with next.
    fn count(&mut self, reply: PushReply) -> Option<u64> {
        match reply.verdict {
            Pushed::Accepted => self.pushed += 1,
            Pushed::Stale => self.stale += 1,
        }
        reply.act_version
    }

    /// With a known `target`, adopts the newest version if it is the one
    /// to act with. Not marked seen: a republish that happened during the
    /// push still wakes the wait for a change.
    fn arrived(
        &mut self,
        target: Option<u64>,
        wanted: impl Fn(u64, Option<u64>) -> bool,
    ) -> Option<Learned> {
        let latest = self
            .versions
            .borrow()
            .clone()
            .filter(|l| target.is_some() && wanted(l.version, target))?;
        self.current = latest.clone();
        Some(latest)
    }

    /// Pushes `rollout`, once more on a fresh connection if the first try
    /// found the connection gone (`UNAVAILABLE`: e.g. the trainer closed it
    /// as idle just as the rollout was sent, so the trainer never saw it).
    async fn push(&mut self, rollout: &Rollout) -> Result<PushReply, AgentError> {
        let mut retried = false;
        loop {
            if self.client.is_none() {
                self.client = Some(LearnerClient::connect(&self.cfg, &self.url).await?);
            }
            let client = self.client.as_mut().expect("just connected");
            let result = client.push(rollout).await;
            let Err(e) = result else { return result };
            // Reconnect for the next try or the next rollout.
            self.client = None;
            match &e {
                AgentError::Rpc(status)
                    if status.code() == tonic::Code::Unavailable && !retried =>
                {
                    debug!(
                        "the learner connection was gone ({}); pushing again on a new one",
                        status.message()
                    );
                    retried = true;
                }
                _ => return Err(e),
            }
        }
    }
}

/// The step-major rollout of the actors' parts, or `None` if there are no
/// steps. Every part should cover the `expected` slots the node played
/// since the last rollout; one that does not (its actor panicked and
/// restarted mid-rollout, dropping the steps since its last good state, or
/// handed over nothing the rollout before) is left out — logged with its
/// prosumer — and the rollout goes on with the others. Should no part have
/// the expected length, the parts of the most common one are kept.
pub fn assemble(
    node: &str,
    version: u64,
    first_slot: u64,
    expected: usize,
    mut parts: Vec<ActorRollout>,
) -> Option<Rollout> {
    let steps = if parts.iter().any(|p| p.steps.len() == expected) {
        expected
    } else {
        common_length(&parts)?
    };
    if steps == 0 {
        return None;
    }
    let before = parts.len();
    parts.retain(|p| {
        let fits = p.steps.len() == steps;
        if !fits {
            warn!(
                prosumer = p.prosumer_id,
                steps = p.steps.len(),
                expected = steps,
                "an actor's part of the rollout has another length (it restarted after a panic); leaving it out"
            );
        }
        fits
    });
    if parts.len() < before {
        warn!(
            left_out = before - parts.len(),
            kept = parts.len(),
            "rollout assembled without some prosumers"
        );
    }
    let p = parts.len();
    let n = steps * p;
    let mut r = Rollout {
        node_name: node.to_owned(),
        policy_version: version,
        first_slot,
        steps,
        prosumer_ids: parts.iter().map(|a| a.prosumer_id).collect(),
        observations: Vec::with_capacity(n * OBS_DIM),
        actions: Vec::with_capacity(n * ACT_DIM),
        log_probs: Vec::with_capacity(n),
        values: Vec::with_capacity(n),
        rewards: Vec::with_capacity(n),
        dones: Vec::with_capacity(n),
        bootstrap_values: parts.iter().map(|a| a.bootstrap_value).collect(),
        costs: Vec::with_capacity(n),
        grid_import_kwh: Vec::with_capacity(n),
    };
    for t in 0..steps {
        for part in &parts {
            let s = &part.steps[t];
            r.observations.extend_from_slice(&s.features);
            r.actions.extend_from_slice(&s.action);
            r.log_probs.push(s.log_prob);
            r.values.push(s.value);
            r.rewards.push(s.reward);
            r.dones.push(s.done);
            r.costs.push(s.cost);
            r.grid_import_kwh.push(s.grid_import_kwh);
        }
    }
    Some(r)
}

/// The most common part length (the longer on a tie); `None` without parts.
fn common_length(parts: &[ActorRollout]) -> Option<usize> {
    let mut counts = std::collections::BTreeMap::<usize, usize>::new();
    for p in parts {
        *counts.entry(p.steps.len()).or_default() += 1;
    }
    counts.into_iter().max_by_key(|&(len, n)| (n, len)).map(|(len, _)| len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actors::Step;

    #[test]
    fn assemble_is_step_major_and_validates() {
        let part = |id: u32| ActorRollout {
            prosumer_id: id,
            steps: (0..3)
                .map(|t| Step { reward: (id * 10 + t) as f32, done: t == 2, ..Step::default() })
                .collect(),
            bootstrap_value: id as f32,
        };
        let r = assemble("n", 2, 7, 3, vec![part(4), part(5)]).unwrap();
        r.validate().unwrap();
        assert_eq!(r.rewards, vec![40.0, 50.0, 41.0, 51.0, 42.0, 52.0]);
        assert_eq!(r.dones, vec![false, false, false, false, true, true]);
        assert_eq!(
            (r.bootstrap_values.clone(), r.first_slot, r.policy_version),
            (vec![4.0, 5.0], 7, 2)
        );
        assert!(assemble("n", 2, 7, 3, vec![]).is_none());
        let empty = |id| ActorRollout { prosumer_id: id, steps: vec![], bootstrap_value: 0.0 };
        assert!(assemble("n", 2, 7, 0, vec![empty(4), empty(5)]).is_none());
    }

    #[test]
    fn a_part_of_another_length_is_left_out_and_the_rest_assembled() {
        let part = |id: u32, steps: u32| ActorRollout {
            prosumer_id: id,
            steps: (0..steps)
                .map(|t| Step { reward: (id * 10 + t) as f32, ..Step::default() })
                .collect(),
            bootstrap_value: id as f32,
        };
        // Short (restarted mid-rollout) and long (handed over nothing last time).
        let r =
            assemble("n", 2, 7, 3, vec![part(4, 3), part(5, 2), part(6, 3), part(7, 6)]).unwrap();
        r.validate().unwrap();
        assert_eq!(r.prosumer_ids, vec![4, 6]);
        assert_eq!(r.steps, 3);
        assert_eq!(r.rewards, vec![40.0, 60.0, 41.0, 61.0, 42.0, 62.0]);
        assert_eq!(r.bootstrap_values, vec![4.0, 6.0]);
        // The expected length wins over the most common one ...
        let r = assemble("n", 2, 7, 3, vec![part(4, 6), part(5, 6), part(6, 3)]).unwrap();
        assert_eq!((r.prosumer_ids.clone(), r.steps), (vec![6], 3));
        // ... and without it, the most common (the longer on a tie) is kept.
        let r = assemble("n", 2, 7, 9, vec![part(4, 2), part(5, 3), part(6, 2)]).unwrap();
        assert_eq!((r.prosumer_ids.clone(), r.steps), (vec![4, 6], 2));
        let r = assemble("n", 2, 7, 9, vec![part(4, 2), part(5, 3)]).unwrap();
        assert_eq!((r.prosumer_ids.clone(), r.steps), (vec![5], 3));
    }
}
