//! The learner's rounds: which nodes it waits for, what it does with each
//! rollout (accept, drop as stale, refuse), when it updates, and the
//! thread's event loop that ties them together.

use super::*;

/// What the synchronous learner knows of one node.
#[derive(Clone, Debug, Default)]
pub(super) struct NodeTrack {
    /// Open policy streams.
    subscriptions: u32,
    /// End slot (first slot + steps) of its last rollout, accepted or
    /// stale; `None` before its first one or after it missed a round.
    pub(super) last_end: Option<u64>,
    /// The rollout it said it began (`BeginRollout`) and has not pushed yet.
    intent: Option<Intent>,
}

/// A rollout a node began: acting with `version` until slot `end`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Intent {
    version: u64,
    end: u64,
}

impl Learner {
    pub(super) fn run(mut self, rx: std::sync::mpsc::Receiver<Command>) {
        loop {
            let timeout = match (self.settings.mode, self.first_pending_at) {
                (Mode::Sync, Some(t)) => Duration::from_millis(self.settings.sync_timeout_ms)
                    .saturating_sub(t.elapsed())
                    .max(Duration::from_millis(1)),
                _ => Duration::from_secs(3600),
            };
            match rx.recv_timeout(timeout) {
                Ok(Command::Ingest(rollout, reply)) => {
                    if self.stopping.load(Ordering::Relaxed) {
                        // Stopping: nothing more is learned from (a node
                        // pushes it again to the resumed trainer).
                        let _ = reply.send((Err(Refusal::Stopped), 0));
                        continue;
                    }
                    let (node, end) =
                        (rollout.node_name.clone(), rollout.first_slot + rollout.steps as u64);
                    let verdict = self.ingest(*rollout);
                    let next = self.act_version(&verdict, &node, end);
                    let _ = reply.send((verdict, next));
                    if self.ready() {
                        self.update();
                    }
                }
                Ok(Command::Begin(start, reply)) => {
                    let _ = reply.send(self.begin(start));
                }
                Ok(Command::Subscription(node, open)) => {
                    self.subscription(node, open);
                    if self.ready() {
                        self.update();
                    }
                }
                Ok(Command::Stop(reply)) => {
                    let _ = reply.send(self.finish());
                    return;
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    if self.settings.mode == Mode::Sync
                        && !self.pending.is_empty()
                        && !self.max_reached()
                    {
                        let missed: Vec<String> = self.waiting_for();
                        warn!(
                            nodes = self.pending_nodes.len(),
                            min_nodes = self.settings.min_nodes,
                            missed = ?missed,
                            "sync timeout: updating with the rollouts that arrived"
                        );
                        // Nodes that missed the round are no longer waited
                        // for; their next rollout makes them live again.
                        for node in missed {
                            if let Some(t) = self.nodes.get_mut(&node) {
                                (t.last_end, t.intent) = (None, None);
                            }
                        }
                        self.update();
                    }
                }
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    if let Err(e) = self.finish() {
                        warn!("final checkpoint failed: {e}");
                    }
                    return;
                }
            }
        }
    }

    fn subscription(&mut self, node: String, open: bool) {
        let track = self.nodes.entry(node.clone()).or_default();
        if open {
            track.subscriptions += 1;
        } else {
            track.subscriptions = track.subscriptions.saturating_sub(1);
            if track.subscriptions == 0 {
                // Gone (or reconnecting): not waited for until it pushes again.
                self.nodes.remove(&node);
            }
        }
    }

    /// Sync: records that a subscribed node began a rollout; whether this
    /// round now waits for it (it acts with the current version and its
    /// rollout ends with the round's, or no rollout of the round is in).
    /// Unknown nodes are not recorded: only an open policy stream makes a
    /// node something to wait for.
    fn begin(&mut self, s: RolloutStart) -> bool {
        if self.settings.mode != Mode::Sync || self.max_reached() {
            return false;
        }
        let Some(track) = self.nodes.get_mut(&s.node_name).filter(|t| t.subscriptions > 0) else {
            debug!(node = %s.node_name, "a rollout began on a node without a policy stream: not awaited");
            return false;
        };
        let intent = Intent { version: s.policy_version, end: s.end_slot };
        track.intent = Some(intent);
        let awaited = intent.version == self.version
            && self.pending_end.is_none_or(|end| end == intent.end)
            && !self.pending_nodes.contains(&s.node_name);
        debug!(node = %s.node_name, version = intent.version, end = intent.end, awaited, "rollout begun");
        if awaited {
            self.metrics.rollouts_awaited.inc();
            self.status.lock().expect("status lock").rollouts_awaited += 1;
        }
        awaited
    }

    /// Sync: whether `t`'s rollout is due for the round ending at `end`:
    /// it has a policy stream and is in step (its last rollout ended before
    /// `end`) or said it acts with the current version until `end`.
    fn due_for(&self, t: &NodeTrack, end: u64) -> bool {
        t.subscriptions > 0
            && (t.last_end.is_some_and(|e| e < end)
                || t.intent == Some(Intent { version: self.version, end }))
    }

    /// Sync: the version a node should act with after this verdict on its
    /// rollout ending at slot `end`. Accepted: the next one (this round's
    /// update). Stale: the current one if nobody else's rollout is pending
    /// or due for this round — no update will follow, and waiting for one
    /// would hold the market until the hold expires — else the next one,
    /// so the node is in step again for the following round (acting with
    /// the current one would make its next rollout stale too).
    fn act_version(&self, verdict: &Result<Ingest, Refusal>, node: &str, end: u64) -> u64 {
        if self.settings.mode != Mode::Sync {
            return 0;
        }
        if self.max_reached() {
            return self.version;
        }
        match verdict {
            Ok(Ingest::Accepted { .. }) => self.version + 1,
            Ok(Ingest::Stale { .. }) => {
                let others_due =
                    self.nodes.iter().any(|(name, t)| name != node && self.due_for(t, end));
                if !self.pending.is_empty() || others_due {
                    self.version + 1
                } else {
                    self.version
                }
            }
            Err(_) => 0,
        }
    }

    /// Sync: nodes whose rollout for this round has not arrived — live ones
    /// (in step: their last rollout ended before this round's end) and
    /// those that said they began this round's rollout.
    fn waiting_for(&self) -> Vec<String> {
        let Some(end) = self.pending_end else { return Vec::new() };
        let mut missing: Vec<String> = self
            .nodes
            .iter()
            .filter(|(name, t)| self.due_for(t, end) && !self.pending_nodes.contains(*name))
            .map(|(name, _)| name.clone())
            .collect();
        missing.sort();
        missing
    }

    /// Remembers where a node's rollout ended (stale ones too: the node is
    /// in step from its next rollout on).
    fn track(&mut self, r: &Rollout, outcome: &'static str) {
        let end = r.first_slot + r.steps as u64;
        if let Some(t) = self.nodes.get_mut(&r.node_name) {
            (t.last_end, t.intent) = (Some(end), None);
        }
        self.metrics
            .rollouts
            .get_or_create(&[("node", r.node_name.clone()), ("outcome", outcome.to_owned())])
            .inc();
    }

    fn ingest(&mut self, r: Rollout) -> Result<Ingest, Refusal> {
        if r.policy_version > self.version {
            return Err(Refusal::UnknownVersion {
                version: r.policy_version,
                current: self.version,
            });
        }
        let lag = self.version - r.policy_version;
        let done = self.settings.max_updates.is_some_and(|m| self.updates_done >= m);
        let stale = done
            || match self.settings.mode {
                Mode::Sync => lag > 0,
                Mode::Async => {
                    lag > self.settings.max_policy_lag
                        || !self.normalisers.contains_key(&r.policy_version)
                }
            };
        if stale {
            self.metrics.batches_stale.inc();
            self.status.lock().expect("status lock").batches_stale += 1;
            self.track(&r, "stale");
            return Ok(Ingest::Stale { version: r.policy_version, current: self.version });
        }
        if self.settings.mode == Mode::Sync && self.pending_nodes.contains(&r.node_name) {
            return Err(Refusal::Duplicate { node: r.node_name, version: r.policy_version });
        }
        self.track(&r, "accepted");
        let end = r.first_slot + r.steps as u64;
        let round_end = *self.pending_end.get_or_insert(end);
        if round_end != end {
            warn!(node = %r.node_name, end, round_end, "a rollout ends on another slot than this round's (a node joined late or the market restarted)");
        }
        let samples = r.samples();
        self.pending_nodes.insert(r.node_name.clone());
        self.pending_samples += samples;
        self.lag_sum += lag as f64 * samples as f64;
        self.first_pending_at.get_or_insert_with(Instant::now);
        self.metrics.samples.inc_by(samples as u64);
        self.pending.push(r);
        Ok(Ingest::Accepted { samples })
    }

    fn ready(&self) -> bool {
        if self.settings.max_updates.is_some_and(|m| self.updates_done >= m) {
            return false;
        }
        match self.settings.mode {
            Mode::Sync => {
                !self.pending.is_empty()
                    && self.pending_nodes.len() >= self.settings.min_nodes
                    && self.waiting_for().is_empty()
            }
            Mode::Async => self.pending_samples >= self.settings.async_batch_samples,
        }
    }

    fn max_reached(&self) -> bool {
        self.settings.max_updates.is_some_and(|m| self.updates_done >= m)
    }
}
