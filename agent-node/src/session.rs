//! The node's conversation with the market: register, join, the slot loop,
//! and reconnecting.
//!
//! [`Node`] owns everything that must survive a lost connection: the
//! prosumer actors (whose households hold battery state and the report of
//! the slot they played), the id range and session id the market gave us,
//! and the number of the slot played but not yet settled — only its
//! number: `SlotCleared` describes itself (grpc.rs decodes it whole), so
//! nothing of the sent batch is needed to apply it.
//! [`Node::run`] loops: connect → `Register` (resuming our session id, so
//! the same id range comes back) → `Session` with `Join` → serve slots until
//! the stream ends. A retryable failure waits an exponential backoff
//! ([`Backoff`], seeded jitter) and tries again; the backoff resets once a
//! session is established.
//!
//! Per slot: `SlotOpen` → every actor plays → one `OrderBatch` (reports
//! sorted by id); `SlotCleared` (already decoded and validated) → each
//! actor gets its settlement or settles locally (missing, offline). When a rollout is due in synchronous
//! learning the node first sends `Hold` (the market keeps the slot open for
//! it), pushes the rollout and waits for the next version. A `BatchRefused`
//! (late, invalid) is counted and logged; the session goes on. With a
//! remote policy (`--policy remote:URL`, [`RemotePolicy`]) the node sends
//! `Hold` too, then asks every actor for its observation, asks the service
//! for all the actions in one call and plays the slot with them (the
//! rule-based action if the call fails or times out); each settlement's
//! outcomes go to the service with the next call. Timing never
//! ends the node: it stops on an operator's stop, or on an error retrying
//! cannot fix (configuration, credentials, an incompatible market).
//!
//! With `state_dir` the session (id, secret, id range) is kept in
//! `session.json`, so a restarted process resumes it. A resume the market
//! refuses (lease expired and the range taken, unknown session) falls back
//! to a fresh registration: new ids, new households.
//!
//! Edge cases, all from the rule "a household plays each slot at most once
//! and settles everything it played":
//! - a `SlotOpen` for the slot we played but that was never cleared (the
//!   market re-opened it after our reconnect) re-sends the same batch (kept
//!   by the transport's [`Outbox`], never read back here);
//! - a `SlotOpen` for a later slot while one is pending settles the pending
//!   one locally first (the market moved on without us);
//! - a `SlotOpen` for a slot at or before the last one played is ignored;
//! - shutdown waits up to `drain_timeout_ms` for the pending slot's
//!   clearing, then settles what is left locally.

use std::sync::Arc;
use std::time::{Duration, Instant};

use peergrid_core::data::Dataset;
use peergrid_core::observation::OpenSlot;
use peergrid_core::prosumer::{generate_range, CommunityConfig, ProsumerSpec};
use peergrid_core::settlement::{ClearedSlot, Settlement};
use peergrid_core::units::ProsumerId;
use peergrid_runtime::{Backoff, Shutdown};
use tracing::{debug, info, info_span, warn, Instrument};

use crate::actors::{ActorState, ProsumerReturn, Prosumers, SettleSummary};
use crate::config::AgentConfig;
use crate::error::AgentError;
use crate::grpc::{
    Inbound, MarketClient, Outbox, Refusal, Registration, Resume, SessionReceiver, SessionSender,
};
use crate::learning::Learning;
use crate::metrics::AgentMetrics;
use crate::policy::PolicySource;
use crate::remote::RemotePolicy;

/// What a run did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AgentReport {
    /// The market's session id (pass it as `--resume-session` to resume).
    pub session_id: Option<String>,
    /// The hosted ids `first_prosumer_id..first_prosumer_id + returns.len()`.
    pub first_prosumer_id: Option<ProsumerId>,
    /// Slots whose batch was sent.
    pub slots_played: u64,
    /// Slots whose clearing reached the actors.
    pub slots_cleared: u64,
    pub reconnects: u64,
    /// Remote policy: slots played with the service's actions, and slots
    /// played with the rule-based action instead (0 without a remote policy).
    pub remote_policy_calls: u64,
    pub remote_policy_fallbacks: u64,
    /// Episode return of each hosted prosumer, by id.
    pub returns: Vec<ProsumerReturn>,
}

/// Why a session ended without an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    Shutdown,
    MarketClosed,
}

/// The prosumers of the id range the market assigned.
struct Hosted {
    registration: Registration,
    specs: Vec<ProsumerSpec>,
    prosumers: Prosumers,
}

pub(crate) struct Node {
    cfg: AgentConfig,
    ds: Arc<Dataset>,
    policy: PolicySource,
    metrics: AgentMetrics,
    hosted: Option<Hosted>,
    /// The slot played and sent whose clearing we wait for.
    pending: Option<u64>,
    /// The transport's copy of that slot's batch, for re-sending it.
    outbox: Outbox,
    last_played: Option<u64>,
    report: AgentReport,
    learning: Option<Learning>,
    /// The session to resume on the next connect (from `state_dir` at start).
    saved: Option<Resume>,
    /// With `policy: remote:URL`: the service that decides the actions.
    remote: Option<RemotePolicy>,
}

const SESSION_FILE: &str = "session.json";
const HOUSEHOLDS_FILE: &str = "households.json";
/// With `state_dir`, the households' state is saved every this many settled slots (and at the end).
const SAVE_EVERY_SLOTS: u64 = 24;

/// The households of one id range, as saved in `households.json`.
#[derive(serde::Serialize, serde::Deserialize)]
struct SavedHouseholds {
    first_prosumer_id: ProsumerId,
    prosumer_count: u32,
    /// By prosumer id, ascending.
    actors: Vec<ActorState>,
}

/// The saved households of exactly `specs`, if `dir` holds them and every
/// state fits its prosumer; otherwise `None`, with the reason logged.
fn load_households(dir: &std::path::Path, specs: &[ProsumerSpec]) -> Option<Vec<ActorState>> {
    let path = dir.join(HOUSEHOLDS_FILE);
    let text = std::fs::read_to_string(&path).ok()?;
    let saved: SavedHouseholds = match serde_json::from_str(&text) {
        Ok(s) => s,
        Err(e) => {
            warn!(path = %path.display(), "ignoring an unreadable households file: {e}");
            return None;
        }
    };
    let first = specs.first().map_or(0, |s| s.id);
    if (saved.first_prosumer_id, saved.prosumer_count as usize) != (first, specs.len())
        || saved.actors.len() != specs.len()
    {
        info!(path = %path.display(), "the saved households are of another id range; starting new ones");
        return None;
    }
    for (spec, state) in specs.iter().zip(&saved.actors) {
        let fits = state.ret.prosumer_id == spec.id
            && state.household.is_none_or(|h| {
                peergrid_core::household::Household::restore(spec.clone(), h).is_ok()
            });
        if !fits {
            warn!(path = %path.display(), prosumer = spec.id, "ignoring saved households that do not fit prosumer {}", spec.id);
            return None;
        }
    }
    Some(saved.actors)
}

/// Writes `dir/name` atomically, readable by the owner only.
fn save_file(dir: &std::path::Path, name: &str, text: &str) -> Result<(), AgentError> {
    let fail = |e: std::io::Error| {
        AgentError::config("state_dir", format!("cannot write {}: {e}", dir.display()))
    };
    std::fs::create_dir_all(dir).map_err(fail)?;
    let tmp = dir.join(format!("{name}.tmp"));
    {
        use std::io::Write;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&tmp).map_err(fail)?;
        file.write_all(text.as_bytes()).map_err(fail)?;
        file.sync_all().map_err(fail)?;
    }
    std::fs::rename(&tmp, dir.join(name)).map_err(fail)
}

/// Reads `dir/session.json`, if any. A file that does not parse is reported
/// and ignored (the node registers afresh).
fn load_session(dir: &std::path::Path) -> Option<Resume> {
    let path = dir.join(SESSION_FILE);
    let text = std::fs::read_to_string(&path).ok()?;
    match serde_json::from_str::<Resume>(&text) {
        Ok(r) => Some(r),
        Err(e) => {
            warn!(path = %path.display(), "ignoring an unreadable session file: {e}");
            None
        }
    }
}

/// Writes `dir/session.json` (it holds the session's secret: owner only).
fn save_session(dir: &std::path::Path, resume: &Resume) -> Result<(), AgentError> {
    let text = serde_json::to_string(resume).map_err(|e| AgentError::protocol(e.to_string()))?;
    save_file(dir, SESSION_FILE, &text)
}

/// Statuses of a refused resume that a fresh registration fixes: the
/// session is unknown (its lease expired), its range is taken, or the
/// secret does not match (the market re-created it for someone else).
fn resume_refused(code: tonic::Code) -> bool {
    matches!(
        code,
        tonic::Code::NotFound | tonic::Code::FailedPrecondition | tonic::Code::PermissionDenied
    )
}

impl Node {
    pub(crate) fn new(
        cfg: AgentConfig,
        ds: Arc<Dataset>,
        policy: PolicySource,
        metrics: AgentMetrics,
    ) -> Node {
        let saved = cfg.state_dir.as_deref().and_then(load_session);
        if let Some(r) = &saved {
            info!(session_id = %r.session_id, first_prosumer_id = r.first_prosumer_id, "resuming the saved session");
        }
        let remote = cfg.remote_policy_target().map(|target| {
            info!(
                url = target.url,
                timeout_ms = cfg.remote_policy_timeout_ms,
                "the remote policy decides every slot's actions"
            );
            RemotePolicy::new(&cfg, metrics.clone())
        });
        Node {
            saved,
            remote,
            cfg,
            ds,
            policy,
            metrics,
            hosted: None,
            pending: None,
            outbox: Outbox::default(),
            last_played: None,
            report: AgentReport::default(),
            learning: None,
        }
    }

    /// Learn from the trainer: `learning` must have given the policy source.
    pub(crate) fn with_learning(mut self, learning: Learning) -> Node {
        self.learning = Some(learning);
        self
    }

    /// Serves the market until shutdown, until the market ends the stream,
    /// or until a failure that retrying cannot fix; then settles what is
    /// pending and returns the report.
    pub(crate) async fn run(mut self, mut shutdown: Shutdown) -> Result<AgentReport, AgentError> {
        if let Some(remote) = self.remote.as_mut() {
            remote.stop_waiting_on(shutdown.clone());
        }
        let r = &self.cfg.reconnect;
        let jitter_seed = peergrid_core::rng::derive_seed(self.cfg.community.seed, &self.cfg.name);
        let mut backoff =
            Backoff::new(Duration::from_millis(r.base_ms), Duration::from_millis(r.max_ms), 2.0)
                .with_jitter(jitter_seed);
        let outcome = loop {
            if shutdown.is_shutdown() {
                break Ok(());
            }
            match self.connect_and_serve(&mut backoff, &mut shutdown).await {
                Ok(End::Shutdown) => break Ok(()),
                Ok(End::MarketClosed) => {
                    info!("the market ended the session");
                    break Ok(());
                }
                Err(e) if e.is_retryable() && shutdown.is_shutdown() => {
                    // The market went away while we were stopping too (an
                    // embedded run stops both at once): nothing to retry.
                    debug!(error = %e, "session ended during shutdown");
                    break Ok(());
                }
                Err(e) if e.is_retryable() => {
                    if self.cfg.reconnect.max_attempts.is_some_and(|max| backoff.attempts() >= max)
                    {
                        break Err(e);
                    }
                    let delay = backoff.next_delay();
                    self.report.reconnects += 1;
                    self.metrics.reconnects.inc();
                    warn!(error = %e, delay_ms = delay.as_millis() as u64, attempt = backoff.attempts(), "session lost; reconnecting");
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = shutdown.recv() => break Ok(()),
                    }
                }
                Err(e) => break Err(e),
            }
        };
        let finished = self.finish().await;
        outcome?;
        finished
    }

    async fn connect_and_serve(
        &mut self,
        backoff: &mut Backoff,
        shutdown: &mut Shutdown,
    ) -> Result<End, AgentError> {
        let mut client = tokio::select! {
            c = MarketClient::connect(&self.cfg) => c?,
            _ = shutdown.recv() => return Ok(End::Shutdown),
        };
        // After a first registration we know our range, so a market that
        // restarted (and forgot us) can re-create the session with it.
        let resume = match &self.hosted {
            Some(h) => Some(h.registration.resume()),
            None => self.saved.clone(),
        };
        let registration = match client
            .register(&self.cfg.name, self.cfg.prosumers, resume.as_ref())
            .await
        {
            Err(AgentError::Rpc(status)) if resume.is_some() && resume_refused(status.code()) => {
                warn!(code = ?status.code(), "the market cannot resume our session ({}); registering as a new node", status.message());
                self.saved = None;
                client.register(&self.cfg.name, self.cfg.prosumers, None).await?
            }
            other => other?,
        };
        if let Some(dir) = &self.cfg.state_dir {
            save_session(dir, &registration.resume())?;
        }
        let market_next_slot = registration.next_slot;
        self.host(registration).await?;
        if self.last_played.is_some_and(|last| market_next_slot <= last) {
            // The market restarted and counts slots afresh: our pending slot
            // will never clear there, and its slot numbers start below ours.
            warn!(
                last_played = self.last_played,
                market_next_slot,
                "the market restarted; settling locally and following its slot numbers"
            );
            if self.pending.is_some() {
                self.settle_pending_locally().await?;
            }
            self.last_played = None;
        }
        let hosted = self.hosted.as_ref().expect("host() sets it");
        let (tx, rx) = client.open_session(&hosted.registration.resume(), &hosted.specs).await?;
        backoff.reset();
        info!(
            session_id = %hosted.registration.session_id,
            first_prosumer_id = hosted.registration.first_prosumer_id,
            prosumers = hosted.registration.prosumer_count,
            next_slot = hosted.registration.next_slot,
            "joined the market"
        );
        self.serve(tx, rx, shutdown).await
    }

    /// Adopts a registration: the first one creates the actors; later ones
    /// (reconnects) give the same id range back, or — when the market could
    /// not resume us — a new range, whose new households replace ours.
    async fn host(&mut self, reg: Registration) -> Result<(), AgentError> {
        if reg.slot_minutes != self.ds.slot_minutes {
            return Err(AgentError::Incompatible(format!(
                "the market runs {}-minute slots, dataset '{}' has {}",
                reg.slot_minutes, self.ds.name, self.ds.slot_minutes
            )));
        }
        if !reg.dataset.is_empty() && reg.dataset != self.ds.name {
            return Err(AgentError::Incompatible(format!(
                "the market runs dataset '{}', this node loaded '{}' (check --dataset and --seed)",
                reg.dataset, self.ds.name
            )));
        }
        if reg.prosumer_count != self.cfg.prosumers {
            warn!(
                asked = self.cfg.prosumers,
                assigned = reg.prosumer_count,
                "the market assigned another prosumer count"
            );
        }
        if self.hosted.as_ref().is_some_and(|h| h.registration.range() != reg.range()) {
            let old = self.hosted.as_ref().map(|h| h.registration.range());
            warn!(old = ?old, new = ?reg.range(), "the market gave us a new id range; our households leave and new ones start");
            self.settle_pending_locally().await?;
            self.last_played = None;
            self.hosted = None;
        }
        if let Some(h) = self.hosted.as_mut() {
            if h.registration.reward_weights != reg.reward_weights {
                warn!("the market's reward weights changed on reconnect; keeping the first ones");
            }
            h.registration = reg;
            return Ok(());
        }
        // generate_range validates the community; n_prosumers only has to
        // cover the range (a prosumer does not depend on the community size).
        let community = CommunityConfig {
            n_prosumers: (reg.first_prosumer_id as usize + reg.prosumer_count as usize).max(1),
            ..self.cfg.community.clone()
        };
        let specs =
            generate_range(&self.ds, &community, reg.first_prosumer_id, reg.prosumer_count)?;
        let weights = Arc::new(reg.reward_weights.clone());
        let prosumers = Prosumers::spawn(
            &specs,
            &self.ds,
            &self.policy,
            &weights,
            self.cfg.actor_threads,
            self.metrics.actor_restarts.clone(),
        )?;
        if let Some(states) = self.cfg.state_dir.as_deref().and_then(|d| load_households(d, &specs))
        {
            let n = prosumers.restore(&states).await?;
            info!(households = n, "households continue from their saved state");
        }
        self.metrics.prosumers.set(prosumers.len() as i64);
        self.report.session_id = Some(reg.session_id.clone());
        self.report.first_prosumer_id = Some(reg.first_prosumer_id);
        info!(
            prosumers = specs.len(),
            actor_threads = prosumers.threads(),
            policy = self.policy.name(),
            dataset = %self.ds.name,
            "started one actor per prosumer"
        );
        self.hosted = Some(Hosted { registration: reg, specs, prosumers });
        Ok(())
    }

    async fn serve(
        &mut self,
        tx: SessionSender,
        mut rx: SessionReceiver,
        shutdown: &mut Shutdown,
    ) -> Result<End, AgentError> {
        loop {
            let next = if shutdown.is_shutdown() {
                if self.pending.is_none() {
                    return Ok(End::Shutdown);
                }
                // Finish the current slot: wait (bounded) for its clearing.
                match tokio::time::timeout(
                    Duration::from_millis(self.cfg.drain_timeout_ms),
                    rx.next(),
                )
                .await
                {
                    Ok(next) => next?,
                    Err(_) => {
                        warn!(
                            "no clearing before the drain timeout; settling the last slot locally"
                        );
                        return Ok(End::Shutdown);
                    }
                }
            } else {
                tokio::select! {
                    next = rx.next() => next?,
                    _ = shutdown.recv() => continue,
                }
            };
            match next {
                None => return Ok(End::MarketClosed),
                Some(Inbound::Open(open)) => {
                    let span = info_span!("slot", slot = open.slot, data_slot = open.ctx.data_slot);
                    self.on_open(open, &tx).instrument(span).await?;
                }
                Some(Inbound::Cleared(cleared)) => {
                    let span = info_span!("clearing", slot = cleared.slot);
                    self.on_cleared(cleared).instrument(span).await?;
                    if shutdown.is_shutdown() {
                        return Ok(End::Shutdown);
                    }
                }
                Some(Inbound::Refused(r)) => self.on_refused(r),
            }
        }
    }

    async fn on_open(&mut self, open: OpenSlot, tx: &SessionSender) -> Result<(), AgentError> {
        let started = Instant::now();
        if let Some(pending) = self.pending {
            if pending == open.slot {
                debug!("slot re-opened after a reconnect; sending the same batch again");
                if !tx.resend_batch(pending, &self.outbox).await? {
                    // Cannot happen (the batch is kept while its slot is
                    // pending); the households still settle what they played.
                    warn!(pending, "the pending slot's batch is not kept; settling it locally");
                    self.settle_pending_locally().await?;
                }
                return Ok(());
            }
            if open.slot < pending {
                warn!(pending, "stale SlotOpen ignored");
                return Ok(());
            }
            warn!(
                pending,
                "the market moved on before clearing our last slot; settling it locally"
            );
            self.settle_pending_locally().await?;
        }
        if self.last_played.is_some_and(|last| open.slot <= last) {
            warn!(last_played = self.last_played, "SlotOpen for a slot already played; ignored");
            return Ok(());
        }
        let hosted = self
            .hosted
            .as_ref()
            .ok_or_else(|| AgentError::protocol("SlotOpen before registration"))?;
        if let Some(learning) = self.learning.as_mut() {
            let newer = if learning.due(open.slot) {
                if learning.is_sync() {
                    // We are about to wait for the learner: the market holds
                    // the slot for us instead of playing on without us.
                    tx.send_hold(open.slot, "policy").await?;
                    self.metrics.holds.inc();
                }
                let parts = hosted
                    .prosumers
                    .prepare_and_collect(open.slot, &open.ctx, &open.adjustments)
                    .await?;
                let waited = Instant::now();
                let newer = learning.exchange(parts).await;
                if learning.is_sync() {
                    self.metrics.policy_wait_seconds.observe(waited.elapsed().as_secs_f64());
                }
                newer
            } else {
                learning.newer()
            };
            if let Some(l) = newer {
                hosted.prosumers.set_model(&l).await?;
                self.metrics.policy_version.set(l.version as i64);
                debug!(version = l.version, "acting with a new policy version");
            }
            learning.count_step(open.slot);
        }
        let actions = match self.remote.as_mut() {
            Some(remote) if remote.ready() => {
                // The call may take a while: the market holds the slot for
                // us instead of playing on without our households.
                tx.send_hold(open.slot, "remote-policy").await?;
                self.metrics.holds.inc();
                let observations =
                    hosted.prosumers.observe(open.slot, &open.ctx, &open.adjustments).await?;
                remote.act(open.slot, hosted.prosumers.ids(), observations).await
            }
            Some(remote) => {
                remote.skip(open.slot);
                None
            }
            None => None,
        };
        let reports =
            hosted.prosumers.play_with(open.slot, &open.ctx, &open.adjustments, actions).await?;
        let sent = reports.len();
        // From here the households have played this slot: it must be settled
        // even if sending fails (the outbox keeps the batch either way).
        self.last_played = Some(open.slot);
        self.pending = Some(open.slot);
        tx.send_batch(open.slot, reports, &mut self.outbox).await?;
        self.report.slots_played += 1;
        self.metrics.slots_played.inc();
        self.metrics.batch_build_seconds.observe(started.elapsed().as_secs_f64());
        debug!(reports = sent, elapsed_us = started.elapsed().as_micros() as u64, "batch sent");
        Ok(())
    }

    async fn on_cleared(&mut self, cleared: ClearedSlot) -> Result<(), AgentError> {
        let Some(pending) = self.pending.take() else {
            warn!("SlotCleared without a pending slot; ignored");
            return Ok(());
        };
        if cleared.slot != pending {
            self.pending = Some(pending);
            if cleared.slot < pending {
                warn!(pending, "stale SlotCleared ignored");
                return Ok(());
            }
            // The market cleared a later slot: ours was skipped (we lagged
            // and messages were dropped). Settle it locally and go on.
            warn!(
                pending,
                cleared = cleared.slot,
                "SlotCleared for a later slot; settling ours locally"
            );
            return self.settle_pending_locally().await;
        }
        if self.hosted.is_none() {
            return Err(AgentError::protocol("SlotCleared before registration"));
        }
        let settlements: Vec<(ProsumerId, Settlement)> =
            cleared.settlements.iter().map(|h| (h.prosumer_id, h.settlement)).collect();
        self.outbox.clear();
        let summary = self.settle(pending, &settlements).await?;
        self.report.slots_cleared += 1;
        if self.report.slots_cleared % SAVE_EVERY_SLOTS == 0 {
            self.save_households().await?;
        }
        self.metrics.slots_settled.inc();
        self.metrics.local_settlements.inc_by(summary.local as u64);
        self.metrics.mean_reward.set(summary.mean_reward());
        debug!(
            settled = summary.settled,
            local = summary.local,
            missing = cleared.missing.len(),
            mean_reward = summary.mean_reward(),
            "slot settled"
        );
        Ok(())
    }

    /// The market refused a batch or hold: nothing of it was stored. The
    /// slot's households settle with the grid when its clearing (or the
    /// next slot) arrives, as for any missing report.
    fn on_refused(&mut self, r: Refusal) {
        self.metrics.batches_refused.inc();
        warn!(slot = r.slot, reason = %r.reason, "the market refused our message: {}", r.message);
    }

    async fn settle_pending_locally(&mut self) -> Result<(), AgentError> {
        self.outbox.clear();
        let (Some(slot), Some(_)) = (self.pending.take(), self.hosted.as_ref()) else {
            return Ok(());
        };
        let summary = self.settle(slot, &[]).await?;
        self.metrics.local_settlements.inc_by(summary.local as u64);
        Ok(())
    }

    /// Settles slot `slot` (the market's settlements by id, everyone else
    /// locally); with a remote policy, keeps the outcomes for its next call.
    async fn settle(
        &mut self,
        slot: u64,
        settlements: &[(ProsumerId, Settlement)],
    ) -> Result<SettleSummary, AgentError> {
        let h = self
            .hosted
            .as_ref()
            .ok_or_else(|| AgentError::protocol("settling before registration"))?;
        match self.remote.as_mut() {
            Some(remote) => {
                let (summary, outcomes) = h.prosumers.settle_and_report(slot, settlements).await?;
                remote.settled(slot, outcomes);
                Ok(summary)
            }
            None => h.prosumers.settle(slot, settlements).await,
        }
    }

    /// With `state_dir`: saves every household's state and return (between
    /// slots), so a restarted process continues them.
    async fn save_households(&self) -> Result<(), AgentError> {
        let (Some(dir), Some(h)) = (self.cfg.state_dir.as_deref(), self.hosted.as_ref()) else {
            return Ok(());
        };
        let saved = SavedHouseholds {
            first_prosumer_id: h.registration.first_prosumer_id,
            prosumer_count: h.registration.prosumer_count,
            actors: h.prosumers.snapshot().await?,
        };
        let text =
            serde_json::to_string(&saved).map_err(|e| AgentError::protocol(e.to_string()))?;
        save_file(dir, HOUSEHOLDS_FILE, &text)
    }

    /// Settles what is pending and collects the returns.
    async fn finish(mut self) -> Result<AgentReport, AgentError> {
        self.settle_pending_locally().await?;
        self.save_households().await?;
        if let Some(h) = &self.hosted {
            self.report.returns = h.prosumers.returns().await?;
        }
        if let Some(remote) = &self.remote {
            (self.report.remote_policy_calls, self.report.remote_policy_fallbacks) =
                remote.counts();
        }
        info!(
            slots_played = self.report.slots_played,
            slots_cleared = self.report.slots_cleared,
            reconnects = self.report.reconnects,
            "agent-node finished"
        );
        Ok(self.report)
    }
}
