//! The learner: owns the PPO state on one dedicated thread and decides when
//! to update.
//!
//! gRPC handlers validate each experience batch (`peergrid_proto`) and hand
//! the resulting [`Rollout`] to this thread through a channel with a reply;
//! the thread answers `Accepted`, `Stale` or a rejection before anything is
//! ingested. Updates run here, off the tokio workers.
//!
//! **Synchronous mode** (default): version v is trained once a rollout for v
//! has arrived from every *live* node — subscribed to the policy stream and
//! in step with the others (its last rollout ended on an earlier slot than
//! this round's) — and from at least `min_nodes` nodes; or `sync_timeout`
//! after the first rollout, with what arrived (the nodes that missed it
//! leave the live set until they push again). A node whose subscription
//! ends leaves the set at once, so scaling the cluster adjusts it by
//! itself. A node's first rollout does not make it live: it is waited for
//! from its second rollout on — unless it said, as it began the rollout
//! (`BeginRollout`), that it acts with the current version until this
//! round's end slot: then it is waited for from its first rollout, so the
//! cluster's first round and a newcomer's lose nothing as stale. Rollouts are ordered by their first prosumer
//! id, so a seed gives the same update every run. A rollout for an older
//! version is stale (dropped, counted per node); one for a version not
//! published yet is rejected.
//!
//! **Asynchronous mode**: rollouts up to `max_policy_lag` versions old are
//! buffered and an update runs once `async_batch_samples` samples are in;
//! each rollout is normalised with the normaliser of the version that
//! produced it, and the PPO ratio is taken against its behaviour log-prob.
//!
//! After an update: the running observation statistics absorb the batch's
//! raw observations, version v+1 is published (a safetensors blob through a
//! `watch` channel every subscriber stream follows), TensorBoard scalars
//! are written, and every `checkpoint_every` updates a checkpoint.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use peergrid_core::experience::{Rollout, RolloutStart};
use peergrid_core::observation::OBS_DIM;
use peergrid_core::policy::weights::{to_safetensors, PolicyWeights};
use peergrid_core::policy::ObsNormaliser;
use peergrid_runtime::tfevents::EventWriter;
use serde::{Deserialize, Serialize};
use tokio::sync::{oneshot, watch};
use tracing::{debug, info, info_span, warn};

use crate::checkpoint::{self, Checkpoint};
use crate::error::TrainerError;
use crate::metrics::TrainerMetrics;
use crate::ppo::{Interrupted, Ppo, PpoConfig, RunningStats, UpdateStats};

/// How nodes and learner stay in step.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Nodes wait for v+1 after each rollout: exact on-policy PPO.
    #[default]
    Sync,
    /// Nodes keep acting; bounded policy lag.
    Async,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Sync => "sync",
            Mode::Async => "async",
        }
    }
}

/// When to update and what to keep.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LearnerSettings {
    pub mode: Mode,
    /// Sync: update only once at least this many distinct nodes sent a
    /// rollout for the version (besides waiting for every live node).
    pub min_nodes: usize,
    /// Sync: update with what has arrived this long after the first rollout
    /// of a version; live nodes that missed it stop being waited for.
    pub sync_timeout_ms: u64,
    /// Async: drop rollouts more than this many versions old.
    pub max_policy_lag: u64,
    /// Async: update once this many samples are buffered.
    pub async_batch_samples: usize,
    /// Write a checkpoint every this many updates (0 = only at shutdown).
    pub checkpoint_every: u64,
    /// libtorch intra-op threads (1 is fastest for this small MLP on 2 cores).
    pub torch_threads: usize,
    /// Stop learning after this many updates (later rollouts are dropped as
    /// stale): a run of exactly N updates whatever the timing.
    pub max_updates: Option<u64>,
}

impl Default for LearnerSettings {
    fn default() -> Self {
        LearnerSettings {
            mode: Mode::Sync,
            min_nodes: 1,
            sync_timeout_ms: 60_000,
            max_policy_lag: 2,
            async_batch_samples: 8_192,
            checkpoint_every: 10,
            torch_threads: 1,
            max_updates: None,
        }
    }
}

impl LearnerSettings {
    pub fn validate(&self) -> Result<(), TrainerError> {
        if self.min_nodes == 0 || self.min_nodes > 10_000 {
            return Err(TrainerError::config("min_nodes", "must be in 1..=10000"));
        }
        if !(100..=86_400_000).contains(&self.sync_timeout_ms) {
            return Err(TrainerError::config("sync_timeout_ms", "must be in 100..=86400000"));
        }
        if self.max_policy_lag > 1000 {
            return Err(TrainerError::config("max_policy_lag", "must be ≤ 1000"));
        }
        if self.async_batch_samples == 0 || self.async_batch_samples > 1 << 24 {
            return Err(TrainerError::config("async_batch_samples", "must be in 1..=16777216"));
        }
        if self.torch_threads == 0 || self.torch_threads > 256 {
            return Err(TrainerError::config("torch_threads", "must be in 1..=256"));
        }
        Ok(())
    }
}

/// A published policy version: the blob every subscriber receives.
#[derive(Clone, Debug, PartialEq)]
pub struct Published {
    pub version: u64,
    pub weights: Arc<Vec<u8>>,
    /// How often this version was announced again after a discarded
    /// update: subscribers receive it once more, and synchronous nodes
    /// push their rollout again for a fresh round.
    pub republished: u32,
}

/// A version is announced again after at most this many discarded updates
/// in a row; after that the learner waits for new experience (nodes then
/// act on at their `learner_wait_ms`) instead of spinning on data that
/// diverges every time.
pub(crate) const MAX_REPUBLISH: u32 = 3;

/// One update's record: the learning curve.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UpdateRecord {
    /// The version the update produced.
    pub version: u64,
    pub samples: usize,
    /// Mean return of the prosumer episodes (days) that ended in this batch; NaN if none did.
    pub mean_episode_return: f64,
    /// Mean community cost of one episode (Σ over the batch's prosumers); NaN if none ended.
    pub community_cost: f64,
    /// Mean community grid import of one episode, kWh; NaN if none ended.
    pub grid_import_kwh: f64,
    pub learn_seconds: f64,
    pub policy_lag: f64,
    pub stats: UpdateStats,
}

/// What the learner reports through `Status`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LearnerStatus {
    pub version: u64,
    pub updates_done: u64,
    pub samples_per_s: f64,
    pub policy_lag: f64,
    pub mode: Mode,
    pub samples_total: u64,
    pub batches_stale: u64,
    pub subscribers: u32,
    pub mean_episode_return: f64,
    /// Updates undone because they produced non-finite parameters or statistics.
    pub updates_discarded: u64,
    /// Rollouts announced with `BeginRollout` that a round waited for.
    pub rollouts_awaited: u64,
}

/// The learner's answer to one batch.
#[derive(Clone, Debug, PartialEq)]
pub enum Ingest {
    Accepted { samples: usize },
    Stale { version: u64, current: u64 },
}

/// Why a batch was refused (nothing of it was ingested).
#[derive(Clone, Debug, PartialEq)]
pub enum Refusal {
    UnknownVersion { version: u64, current: u64 },
    Duplicate { node: String, version: u64 },
    Stopped,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::UnknownVersion { version, current } => {
                write!(f, "policy_version {version} is unknown: the newest published version is {current}")
            }
            Refusal::Duplicate { node, version } => write!(f, "node '{node}' already sent its rollout for version {version}"),
            Refusal::Stopped => write!(f, "the learner is shutting down"),
        }
    }
}

/// A verdict and, in synchronous mode, the version the node should act
/// with next (`PushSummary.act_version`; 0 in asynchronous mode).
type Verdict = (Result<Ingest, Refusal>, u64);

enum Command {
    Ingest(Box<Rollout>, oneshot::Sender<Verdict>),
    /// A node began a rollout; the reply says whether it is awaited.
    Begin(RolloutStart, oneshot::Sender<bool>),
    /// A policy stream of `node` opened (`true`) or closed (`false`).
    Subscription(String, bool),
    Stop(oneshot::Sender<Result<(), TrainerError>>),
}

/// Where the learner writes.
#[derive(Clone, Debug, Default)]
pub(crate) struct Outputs {
    pub checkpoint_dir: Option<PathBuf>,
    pub tensorboard_dir: Option<PathBuf>,
}

/// The learner thread's handle: send batches, follow versions, read status.
#[derive(Clone)]
pub struct LearnerHandle {
    commands: std::sync::mpsc::Sender<Command>,
    published: watch::Receiver<Published>,
    status: Arc<Mutex<LearnerStatus>>,
    history: Arc<Mutex<Vec<UpdateRecord>>>,
    subscribers: Arc<std::sync::atomic::AtomicU32>,
    /// Set to the panic message if the learner thread dies.
    death: watch::Receiver<Option<String>>,
    /// Set by [`LearnerHandle::stop`]: an update in progress ends at its
    /// next gradient step and is undone, new rollouts are refused.
    stopping: Arc<AtomicBool>,
}

impl LearnerHandle {
    /// Hands a validated rollout to the learner and awaits its verdict.
    pub async fn ingest(&self, rollout: Rollout) -> Result<Ingest, Refusal> {
        self.ingest_and_next(rollout).await.0
    }

    /// [`ingest`](Self::ingest), with the version the node should act with
    /// next: 0 in asynchronous mode; see `PushSummary.act_version`.
    pub async fn ingest_and_next(&self, rollout: Rollout) -> Verdict {
        let (tx, rx) = oneshot::channel();
        if self.commands.send(Command::Ingest(Box::new(rollout), tx)).is_err() {
            return (Err(Refusal::Stopped), 0);
        }
        rx.await.unwrap_or((Err(Refusal::Stopped), 0))
    }

    /// A node's word that it began a rollout (`BeginRollout`): whether the
    /// synchronous learner now waits for that rollout before it updates.
    pub async fn begin_rollout(&self, start: RolloutStart) -> bool {
        let (tx, rx) = oneshot::channel();
        if self.commands.send(Command::Begin(start, tx)).is_err() {
            return false;
        }
        rx.await.unwrap_or(false)
    }

    pub fn published(&self) -> watch::Receiver<Published> {
        self.published.clone()
    }

    pub fn status(&self) -> LearnerStatus {
        let mut s = self.status.lock().expect("status lock").clone();
        s.subscribers = self.subscribers.load(std::sync::atomic::Ordering::Relaxed);
        s
    }

    /// Every update so far (the learning curve).
    pub fn history(&self) -> Vec<UpdateRecord> {
        self.history.lock().expect("history lock").clone()
    }

    /// Counts a policy subscriber of `node` for as long as the guard lives;
    /// the synchronous learner waits for live subscribed nodes only.
    pub fn subscriber(&self, node: &str) -> SubscriberGuard {
        self.subscribers.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let _ = self.commands.send(Command::Subscription(node.to_owned(), true));
        SubscriberGuard { count: Arc::clone(&self.subscribers), node: node.to_owned(), commands: self.commands.clone() }
    }

    /// Resolves, with the panic message, if the learner thread dies; never
    /// after a normal stop.
    pub async fn died(&self) -> String {
        let mut death = self.death.clone();
        let reason = death.wait_for(Option::is_some).await.map(|r| r.clone());
        match reason {
            Ok(reason) => reason.unwrap_or_default(),
            // The thread ended normally (its sender is gone, nothing recorded).
            Err(_) => std::future::pending().await,
        }
    }

    /// The panic message if the learner thread has died.
    pub fn death(&self) -> Option<String> {
        self.death.borrow().clone()
    }

    /// Begins stopping: an update in progress ends at its next gradient
    /// step and is undone (its version is not published), and rollouts are
    /// refused from now on. [`stop`](Self::stop) then ends the thread.
    pub fn interrupt(&self) {
        self.stopping.store(true, Ordering::Relaxed);
    }

    /// Stops the learner (interrupting an update in progress): writes a
    /// final checkpoint, flushes TensorBoard.
    pub async fn stop(&self) -> Result<(), TrainerError> {
        self.interrupt();
        let (tx, rx) = oneshot::channel();
        if self.commands.send(Command::Stop(tx)).is_err() {
            return Ok(());
        }
        rx.await.unwrap_or(Ok(()))
    }
}

pub struct SubscriberGuard {
    count: Arc<std::sync::atomic::AtomicU32>,
    node: String,
    commands: std::sync::mpsc::Sender<Command>,
}

impl Drop for SubscriberGuard {
    fn drop(&mut self) {
        self.count.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        let _ = self.commands.send(Command::Subscription(std::mem::take(&mut self.node), false));
    }
}

/// What the synchronous learner knows of one node.
#[derive(Clone, Debug, Default)]
struct NodeTrack {
    /// Open policy streams.
    subscriptions: u32,
    /// End slot (first slot + steps) of its last rollout, accepted or
    /// stale; `None` before its first one or after it missed a round.
    last_end: Option<u64>,
    /// The rollout it said it began (`BeginRollout`) and has not pushed yet.
    intent: Option<Intent>,
}

/// A rollout a node began: acting with `version` until slot `end`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Intent {
    version: u64,
    end: u64,
}

/// The text of a panic payload (`panic!` with a literal or a format).
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    match (payload.downcast_ref::<&str>(), payload.downcast_ref::<String>()) {
        (Some(s), _) => (*s).to_owned(),
        (_, Some(s)) => s.clone(),
        _ => "a panic without a message".to_owned(),
    }
}

/// Tests only: a rollout from a node of this name makes the update panic,
/// standing in for any bug that kills the learner thread.
#[cfg(test)]
pub(crate) const CRASH_FOR_TEST: &str = "crash-the-learner";

/// Per-prosumer episode accumulators: return, cost, grid import.
#[derive(Clone, Copy, Debug, Default)]
struct EpisodeAcc {
    ret: f64,
    cost: f64,
    import: f64,
}

struct Learner {
    ppo: Ppo,
    settings: LearnerSettings,
    obs_stats: RunningStats,
    /// Normalisers of the versions rollouts may still come from.
    normalisers: BTreeMap<u64, ObsNormaliser>,
    version: u64,
    updates_done: u64,
    pending: Vec<Rollout>,
    pending_nodes: BTreeSet<String>,
    /// Sync: the end slot of this round's rollouts (the first one's).
    pending_end: Option<u64>,
    nodes: HashMap<String, NodeTrack>,
    pending_samples: usize,
    lag_sum: f64,
    first_pending_at: Option<Instant>,
    episodes: HashMap<u32, EpisodeAcc>,
    outputs: Outputs,
    tb: Option<EventWriter>,
    publish: watch::Sender<Published>,
    status: Arc<Mutex<LearnerStatus>>,
    history: Arc<Mutex<Vec<UpdateRecord>>>,
    metrics: TrainerMetrics,
    stopping: Arc<AtomicBool>,
}

/// Starts the learner thread: from the latest checkpoint in
/// `outputs.checkpoint_dir` when `resume` (same version numbers), else
/// fresh at version 1.
pub(crate) fn spawn(
    ppo_config: PpoConfig,
    settings: LearnerSettings,
    outputs: Outputs,
    resume: bool,
    device: tch::Device,
    metrics: TrainerMetrics,
) -> Result<(LearnerHandle, std::thread::JoinHandle<()>), TrainerError> {
    ppo_config.validate()?;
    settings.validate()?;
    tch::set_num_threads(settings.torch_threads as i32);
    // Inter-op threads can only be set once per process, before any work.
    static INTEROP: std::sync::Once = std::sync::Once::new();
    INTEROP.call_once(|| tch::set_num_interop_threads(1));
    let restored = match (&outputs.checkpoint_dir, resume) {
        (Some(dir), true) => match checkpoint::latest_version(dir)? {
            Some(v) => Some(checkpoint::load(dir, v)?),
            None => {
                warn!(dir = %dir.display(), "--resume: no checkpoint yet; starting fresh");
                None
            }
        },
        (None, true) => return Err(TrainerError::config("resume", "needs a run directory to resume from")),
        _ => None,
    };
    let (ppo, obs_stats, version, updates_done) = match restored {
        Some(c) => {
            // The policy file is the authority on its prior (configs saved
            // before the prior existed would default to another one).
            let config = PpoConfig { prior: c.policy.net.spec.prior, ..c.ppo.clone() };
            let mut ppo = Ppo::from_flat(config, &c.policy.net.to_flat(), device)?;
            ppo.restore_optimiser(&c.optimiser)?;
            info!(version = c.policy.version, updates_done = c.updates_done, "resumed from checkpoint");
            (ppo, c.obs_stats, c.policy.version, c.updates_done)
        }
        None => (Ppo::new(ppo_config, device)?, RunningStats::new(OBS_DIM), 1, 0),
    };
    let tb = outputs.tensorboard_dir.as_ref().map(EventWriter::create).transpose()?;
    let normaliser = obs_stats.normaliser(ppo.config.obs_clip);
    let weights = PolicyWeights { net: ppo.actor_critic()?, normaliser: normaliser.clone(), version };
    let blob = to_safetensors(&weights)?;
    let (publish, published) = watch::channel(Published { version, weights: Arc::new(blob), republished: 0 });
    let status = Arc::new(Mutex::new(LearnerStatus {
        version,
        updates_done,
        mode: settings.mode,
        mean_episode_return: f64::NAN,
        ..LearnerStatus::default()
    }));
    let history = Arc::new(Mutex::new(Vec::new()));
    let stopping = Arc::new(AtomicBool::new(false));
    metrics.version.set(version as i64);
    let learner = Learner {
        ppo,
        settings,
        obs_stats,
        normalisers: BTreeMap::from([(version, normaliser)]),
        version,
        updates_done,
        pending: Vec::new(),
        pending_nodes: BTreeSet::new(),
        pending_end: None,
        nodes: HashMap::new(),
        pending_samples: 0,
        lag_sum: 0.0,
        first_pending_at: None,
        episodes: HashMap::new(),
        outputs,
        tb,
        publish,
        status: Arc::clone(&status),
        history: Arc::clone(&history),
        metrics,
        stopping: Arc::clone(&stopping),
    };
    let (tx, rx) = std::sync::mpsc::channel();
    let (death_tx, death) = watch::channel(None);
    let thread = std::thread::Builder::new()
        .name("learner".into())
        .spawn(move || {
            // A panic must not leave a trainer that answers SERVING with
            // nobody learning: record why, then let the panic continue.
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| learner.run(rx)));
            if let Err(panic) = outcome {
                death_tx.send_replace(Some(panic_message(panic.as_ref())));
                std::panic::resume_unwind(panic);
            }
        })
        .map_err(|e| TrainerError::Serve(format!("cannot start the learner thread: {e}")))?;
    let handle = LearnerHandle {
        commands: tx,
        published,
        status,
        history,
        subscribers: Arc::new(std::sync::atomic::AtomicU32::new(0)),
        death,
        stopping,
    };
    Ok((handle, thread))
}

impl Learner {
    fn run(mut self, rx: std::sync::mpsc::Receiver<Command>) {
        loop {
            let timeout = match (self.settings.mode, self.first_pending_at) {
                (Mode::Sync, Some(t)) => {
                    Duration::from_millis(self.settings.sync_timeout_ms).saturating_sub(t.elapsed()).max(Duration::from_millis(1))
                }
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
                    let (node, end) = (rollout.node_name.clone(), rollout.first_slot + rollout.steps as u64);
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
                    if self.settings.mode == Mode::Sync && !self.pending.is_empty() && !self.max_reached() {
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

    /// Sync: whether `t` said it acts with the current version until `end`.
    fn intends(&self, t: &NodeTrack, end: u64) -> bool {
        t.intent == Some(Intent { version: self.version, end })
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
                let others_due = self.nodes.iter().any(|(name, t)| {
                    name != node && t.subscriptions > 0 && (t.last_end.is_some_and(|e| e < end) || self.intends(t, end))
                });
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
            .filter(|(name, t)| {
                t.subscriptions > 0
                    && (t.last_end.is_some_and(|e| e < end) || self.intends(t, end))
                    && !self.pending_nodes.contains(*name)
            })
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
        self.metrics.rollouts.get_or_create(&[("node", r.node_name.clone()), ("outcome", outcome.to_owned())]).inc();
    }

    fn ingest(&mut self, r: Rollout) -> Result<Ingest, Refusal> {
        if r.policy_version > self.version {
            return Err(Refusal::UnknownVersion { version: r.policy_version, current: self.version });
        }
        let lag = self.version - r.policy_version;
        let done = self.settings.max_updates.is_some_and(|m| self.updates_done >= m);
        let stale = done
            || match self.settings.mode {
                Mode::Sync => lag > 0,
                Mode::Async => lag > self.settings.max_policy_lag || !self.normalisers.contains_key(&r.policy_version),
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
                !self.pending.is_empty() && self.pending_nodes.len() >= self.settings.min_nodes && self.waiting_for().is_empty()
            }
            Mode::Async => self.pending_samples >= self.settings.async_batch_samples,
        }
    }

    fn max_reached(&self) -> bool {
        self.settings.max_updates.is_some_and(|m| self.updates_done >= m)
    }

    /// Episode statistics of the batch: (mean return, community cost, grid import) per episode.
    fn episodes(&mut self, rollouts: &[Rollout]) -> (f64, f64, f64) {
        let (mut n, mut ret, mut cost, mut import) = (0usize, 0.0, 0.0, 0.0);
        let mut prosumers = BTreeSet::new();
        for r in rollouts {
            let p = r.n_prosumers();
            for (i, id) in r.prosumer_ids.iter().enumerate() {
                prosumers.insert(*id);
                let acc = self.episodes.entry(*id).or_default();
                for t in 0..r.steps {
                    let k = t * p + i;
                    acc.ret += r.rewards[k] as f64;
                    acc.cost += r.costs[k] as f64;
                    acc.import += r.grid_import_kwh[k] as f64;
                    if r.dones[k] {
                        n += 1;
                        ret += acc.ret;
                        cost += acc.cost;
                        import += acc.import;
                        *acc = EpisodeAcc::default();
                    }
                }
            }
        }
        if n == 0 {
            return (f64::NAN, f64::NAN, f64::NAN);
        }
        // Community figures: the mean prosumer-episode times the prosumers.
        let k = prosumers.len() as f64;
        (ret / n as f64, cost / n as f64 * k, import / n as f64 * k)
    }

    fn update(&mut self) {
        let mut rollouts = std::mem::take(&mut self.pending);
        rollouts.sort_by_key(|r| (r.prosumer_ids.first().copied(), r.policy_version));
        let samples = self.pending_samples;
        let lag = if samples > 0 { self.lag_sum / samples as f64 } else { 0.0 };
        self.pending_nodes.clear();
        self.pending_end = None;
        self.pending_samples = 0;
        self.lag_sum = 0.0;
        self.first_pending_at = None;
        let next = self.version + 1;
        let span = info_span!("update", version = next, samples);
        let _enter = span.enter();
        let started = Instant::now();
        let Some((stats, weights)) = self.guarded_update(&rollouts, next) else { return };
        let learn_seconds = started.elapsed().as_secs_f64();
        let (mean_return, community_cost, grid_import) = self.episodes(&rollouts);
        self.version = next;
        self.updates_done += 1;
        self.normalisers.insert(next, weights.normaliser.clone());
        let keep_from = next.saturating_sub(self.settings.max_policy_lag);
        self.normalisers.retain(|v, _| *v >= keep_from);
        match to_safetensors(&weights) {
            Ok(blob) => {
                self.publish.send_replace(Published { version: next, weights: Arc::new(blob), republished: 0 });
            }
            Err(e) => warn!("cannot encode version {next}: {e}"),
        }
        let samples_per_s = samples as f64 * self.ppo.config.update_epochs as f64 / learn_seconds.max(1e-9);
        let record = UpdateRecord {
            version: next,
            samples,
            mean_episode_return: mean_return,
            community_cost,
            grid_import_kwh: grid_import,
            learn_seconds,
            policy_lag: lag,
            stats,
        };
        self.log(&record, samples_per_s);
        {
            let mut s = self.status.lock().expect("status lock");
            s.version = next;
            s.updates_done = self.updates_done;
            s.samples_per_s = samples_per_s;
            s.policy_lag = lag;
            s.samples_total += samples as u64;
            if mean_return.is_finite() {
                s.mean_episode_return = mean_return;
            }
        }
        self.history.lock().expect("history lock").push(record);
        if self.settings.checkpoint_every > 0 && self.updates_done % self.settings.checkpoint_every == 0 {
            if let Err(e) = self.checkpoint() {
                warn!("checkpoint failed: {e}");
            }
        }
    }

    /// Runs the PPO update and absorbs the batch's observations into the
    /// running statistics, then checks the outcome: if any parameter, Adam
    /// moment or normaliser statistic is not finite, the update is undone
    /// (parameters, optimiser and statistics as before), counted and logged,
    /// and `None` is returned — the published version stays, the learner
    /// goes on. Otherwise the weights of version `next`.
    fn guarded_update(&mut self, rollouts: &[Rollout], next: u64) -> Option<(UpdateStats, PolicyWeights)> {
        #[cfg(test)]
        if rollouts.iter().any(|r| r.node_name == CRASH_FOR_TEST) {
            panic!("learner crash requested by a test");
        }
        let before = self.ppo.snapshot();
        let stats_before = self.obs_stats.clone();
        let normalisers = &self.normalisers;
        let stats = match self.ppo.update_unless(rollouts, |v| &normalisers[&v], self.updates_done, &self.stopping) {
            Ok(stats) => stats,
            Err(Interrupted { gradient_steps }) => {
                if let Err(e) = self.ppo.restore(&before) {
                    panic!("cannot restore the learner after an interrupted update: {e}");
                }
                self.metrics.updates_interrupted.inc();
                let nodes: BTreeSet<&str> = rollouts.iter().map(|r| r.node_name.as_str()).collect();
                warn!(
                    version = self.version,
                    would_be = next,
                    gradient_steps,
                    ?nodes,
                    "shutting down: update interrupted and undone; version {} stays (the nodes push their rollouts again to the resumed trainer)",
                    self.version
                );
                return None;
            }
        };
        for r in rollouts {
            self.obs_stats.update(&r.observations);
        }
        let problem = if !self.ppo.is_finite() {
            Some("parameters or optimiser state")
        } else if !self.obs_stats.is_finite() {
            Some("observation normaliser statistics")
        } else {
            None
        };
        let net = match problem {
            None => self.ppo.actor_critic().ok(),
            Some(_) => None,
        };
        if let Some(net) = net {
            let normaliser = self.obs_stats.normaliser(self.ppo.config.obs_clip);
            return Some((stats, PolicyWeights { net, normaliser, version: next }));
        }
        self.obs_stats = stats_before;
        if let Err(e) = self.ppo.restore(&before) {
            // Cannot happen (the snapshot has this network's shapes); if it
            // did, the learner must not publish from a half-restored state.
            panic!("cannot restore the learner after a discarded update: {e}");
        }
        self.metrics.updates_discarded.inc();
        self.status.lock().expect("status lock").updates_discarded += 1;
        let nodes: BTreeSet<&str> = rollouts.iter().map(|r| r.node_name.as_str()).collect();
        warn!(
            version = self.version,
            would_be = next,
            ?nodes,
            "update discarded: non-finite {}; version {} stays published",
            problem.unwrap_or("parameters"),
            self.version
        );
        // Synchronous nodes wait for a version after this one: announce
        // this one again, so they push their rollouts for a fresh round
        // (a poisoner's aside) instead of waiting out their timeouts.
        let mut announced = false;
        self.publish.send_if_modified(|p| {
            announced = p.republished < MAX_REPUBLISH;
            if announced {
                p.republished += 1;
            }
            announced
        });
        if announced {
            // The round's nodes are in step again: waited for in the next round.
            for r in rollouts {
                if let Some(t) = self.nodes.get_mut(&r.node_name) {
                    t.last_end = Some(r.first_slot);
                }
            }
        } else {
            warn!(version = self.version, "{MAX_REPUBLISH} updates in a row discarded: waiting for new experience");
        }
        None
    }

    fn log(&mut self, r: &UpdateRecord, samples_per_s: f64) {
        let s = &r.stats;
        info!(
            version = r.version,
            samples = r.samples,
            mean_episode_return = r.mean_episode_return,
            policy_loss = s.policy_loss,
            value_loss = s.value_loss,
            approx_kl = s.approx_kl,
            learn_ms = (r.learn_seconds * 1e3) as u64,
            "policy updated"
        );
        let m = &self.metrics;
        m.version.set(r.version as i64);
        m.updates.inc();
        m.update_seconds.observe(r.learn_seconds);
        m.samples_per_s.set(samples_per_s);
        m.policy_lag.set(r.policy_lag);
        if r.mean_episode_return.is_finite() {
            m.mean_episode_return.set(r.mean_episode_return);
        }
        let Some(tb) = self.tb.as_mut() else { return };
        let step = self.updates_done as i64;
        let mut scalars = vec![
            ("losses/policy_loss", s.policy_loss),
            ("losses/value_loss", s.value_loss),
            ("losses/entropy", s.entropy),
            ("losses/approx_kl", s.approx_kl),
            ("losses/clipfrac", s.clipfrac),
            ("losses/explained_variance", s.explained_variance),
            ("charts/learning_rate", s.learning_rate),
            ("perf/samples_per_s", samples_per_s),
            ("perf/policy_lag", r.policy_lag),
        ];
        if r.mean_episode_return.is_finite() {
            scalars.push(("charts/episodic_return", r.mean_episode_return));
            scalars.push(("charts/community_cost", r.community_cost));
            scalars.push(("charts/grid_import_kwh", r.grid_import_kwh));
        }
        let result = scalars.into_iter().try_for_each(|(tag, v)| tb.add_scalar(tag, v, step)).and_then(|()| tb.flush());
        if let Err(e) = result {
            warn!("TensorBoard write failed: {e}");
        }
    }

    fn checkpoint(&self) -> Result<(), TrainerError> {
        let Some(dir) = &self.outputs.checkpoint_dir else { return Ok(()) };
        let c = Checkpoint {
            policy: PolicyWeights {
                net: self.ppo.actor_critic()?,
                normaliser: self.normalisers[&self.version].clone(),
                version: self.version,
            },
            optimiser: self.ppo.optimiser_state(),
            obs_stats: self.obs_stats.clone(),
            updates_done: self.updates_done,
            ppo: self.ppo.config.clone(),
        };
        let path = checkpoint::save(dir, &c)?;
        info!(version = self.version, path = %path.display(), "checkpoint written");
        Ok(())
    }

    fn finish(&mut self) -> Result<(), TrainerError> {
        if let Some(tb) = self.tb.as_mut() {
            tb.flush()?;
        }
        self.checkpoint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rollout(node: &str, version: u64, first_id: u32) -> Rollout {
        let (steps, p) = (4usize, 2usize);
        let n = steps * p;
        Rollout {
            node_name: node.into(),
            policy_version: version,
            first_slot: 0,
            steps,
            prosumer_ids: vec![first_id, first_id + 1],
            observations: (0..n * OBS_DIM).map(|i| (i % 7) as f32 * 0.1).collect(),
            actions: vec![0.1; n * 3],
            log_probs: vec![-2.0; n],
            values: vec![0.0; n],
            rewards: vec![-0.2; n],
            dones: (0..n).map(|i| i >= n - p).collect(),
            bootstrap_values: vec![0.0; p],
            costs: vec![0.1; n],
            grid_import_kwh: vec![0.5; n],
        }
    }

    fn start(settings: LearnerSettings) -> LearnerHandle {
        let (handle, _thread) = spawn(
            PpoConfig { minibatch_size: 4, update_epochs: 2, ..PpoConfig::default() },
            settings,
            Outputs::default(),
            false,
            tch::Device::Cpu,
            TrainerMetrics::unregistered(),
        )
        .unwrap();
        handle
    }

    /// The version a synchronous node is told to act with next: after an
    /// accepted rollout the next one; after a stale one the current one when
    /// nothing will close the round (acting on is the only way forward),
    /// the next one when another node's rollout is due for it (acting with
    /// the current one would make the node's next rollout stale too).
    #[tokio::test]
    async fn a_stale_node_is_told_which_version_to_act_with() {
        let h = start(LearnerSettings::default());
        let (_a, _b) = (h.subscriber("a"), h.subscriber("b"));
        let at = |node: &str, version: u64, first_id: u32, first_slot: u64| {
            let mut r = rollout(node, version, first_id);
            r.first_slot = first_slot;
            r
        };
        // Round 1 (slots 0..4): neither node is live yet, a's rollout closes it.
        assert_eq!(h.ingest_and_next(at("a", 1, 0, 0)).await, (Ok(Ingest::Accepted { samples: 8 }), 2));
        wait_version(&h, 2).await;
        // b acted with version 1 too: stale, nothing else due → act with 2 now.
        assert_eq!(h.ingest_and_next(at("b", 1, 2, 0)).await, (Ok(Ingest::Stale { version: 1, current: 2 }), 2));
        // Round 2 (slots 4..8): b is stale again and first; a is due → wait for 3.
        assert_eq!(h.ingest_and_next(at("b", 1, 2, 4)).await, (Ok(Ingest::Stale { version: 1, current: 2 }), 3));
        assert_eq!(h.status().version, 2, "the round waits for a");
        assert_eq!(h.ingest_and_next(at("a", 2, 0, 4)).await, (Ok(Ingest::Accepted { samples: 8 }), 3));
        wait_version(&h, 3).await;
        // Round 3 (slots 8..12): both in step with version 3.
        assert_eq!(h.ingest_and_next(at("b", 3, 2, 8)).await, (Ok(Ingest::Accepted { samples: 8 }), 4));
        assert_eq!(h.status().version, 3, "the round waits for a");
        assert_eq!(h.ingest_and_next(at("a", 3, 0, 8)).await, (Ok(Ingest::Accepted { samples: 8 }), 4));
        wait_version(&h, 4).await;
    }

    /// A node that said it began this round's rollout is waited for from its
    /// first rollout (without that word, b's first rollout would be stale as
    /// in the test above). One that began a later round's rollout — it
    /// joined while the market held this round's end — is not, nor is a
    /// node without a policy stream, nor a rollout of another version.
    #[tokio::test]
    async fn nodes_that_began_this_rounds_rollout_are_waited_for_from_their_first() {
        let h = start(LearnerSettings::default());
        let (_a, _b, _c) = (h.subscriber("a"), h.subscriber("b"), h.subscriber("c"));
        let begin = |node: &str, policy_version: u64, first_slot: u64, end_slot: u64| RolloutStart {
            node_name: node.into(),
            policy_version,
            first_slot,
            end_slot,
        };
        assert!(h.begin_rollout(begin("a", 1, 0, 4)).await);
        assert!(h.begin_rollout(begin("b", 1, 0, 4)).await);
        assert!(!h.begin_rollout(begin("nobody", 1, 0, 4)).await, "no policy stream: not awaited");
        assert!(!h.begin_rollout(begin("c", 2, 0, 4)).await, "version 2 is not published: not awaited");
        assert_eq!(h.ingest_and_next(rollout("a", 1, 0)).await, (Ok(Ingest::Accepted { samples: 8 }), 2));
        assert!(!h.begin_rollout(begin("c", 1, 4, 8)).await, "the round ends at slot 4: c's rollout is for the next one");
        assert_eq!(h.status().version, 1, "the round waits for b");
        assert_eq!(h.ingest_and_next(rollout("b", 1, 2)).await, (Ok(Ingest::Accepted { samples: 8 }), 2));
        wait_version(&h, 2).await;
        assert_eq!(h.status().batches_stale, 0);
    }

    /// A stop during an update ends it at its next gradient step and undoes
    /// it: the final checkpoint holds the version before it, later rollouts
    /// are refused, and the interruption is counted. (Uninterrupted, this
    /// update takes 64,000 gradient steps — tens of seconds — and would
    /// publish version 2.)
    #[tokio::test]
    async fn a_stop_interrupts_an_update_in_progress_and_undoes_it() {
        let dir = std::env::temp_dir().join(format!("peergrid-learner-stop-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let metrics = TrainerMetrics::unregistered();
        let (h, thread) = spawn(
            PpoConfig { minibatch_size: 1, update_epochs: 1000, ..PpoConfig::default() },
            LearnerSettings::default(),
            Outputs { checkpoint_dir: Some(dir.clone()), tensorboard_dir: None },
            false,
            tch::Device::Cpu,
            metrics.clone(),
        )
        .unwrap();
        let mut long = rollout("a", 1, 0);
        let (steps, p) = (32usize, 2usize);
        let n = steps * p;
        long.steps = steps;
        long.observations = (0..n * OBS_DIM).map(|i| (i % 7) as f32 * 0.1).collect();
        long.actions = vec![0.1; n * 3];
        long.log_probs = vec![-2.0; n];
        long.values = vec![0.0; n];
        long.rewards = vec![-0.2; n];
        long.dones = (0..n).map(|i| i >= n - p).collect();
        long.costs = vec![0.1; n];
        long.grid_import_kwh = vec![0.5; n];
        long.validate().unwrap();
        // Accepted, then the update starts on the learner thread.
        assert_eq!(h.ingest(long).await, Ok(Ingest::Accepted { samples: n }));
        h.stop().await.unwrap();
        thread.join().unwrap();
        assert_eq!(metrics.updates_interrupted.get(), 1, "the update was interrupted");
        assert_eq!((h.status().version, h.status().updates_done), (1, 0), "nothing was published");
        assert_eq!(checkpoint::latest_version(&dir).unwrap(), Some(1), "the final checkpoint holds version 1");
        assert_eq!(h.ingest(rollout("b", 1, 2)).await, Err(Refusal::Stopped));
        let _ = std::fs::remove_dir_all(&dir);
    }

    async fn wait_version(h: &LearnerHandle, v: u64) {
        for _ in 0..500 {
            if h.status().version >= v {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("stuck at version {}", h.status().version);
    }

    #[tokio::test]
    async fn sync_mode_waits_for_min_nodes_refuses_duplicates_and_drops_stale() {
        let h = start(LearnerSettings { min_nodes: 2, ..LearnerSettings::default() });
        assert_eq!(h.ingest(rollout("a", 1, 0)).await, Ok(Ingest::Accepted { samples: 8 }));
        assert_eq!(h.ingest(rollout("a", 1, 0)).await, Err(Refusal::Duplicate { node: "a".into(), version: 1 }));
        assert_eq!(h.status().version, 1, "one node of two: no update yet");
        assert_eq!(h.ingest(rollout("b", 1, 2)).await, Ok(Ingest::Accepted { samples: 8 }));
        wait_version(&h, 2).await;
        assert_eq!(h.ingest(rollout("a", 1, 0)).await, Ok(Ingest::Stale { version: 1, current: 2 }));
        assert_eq!(h.ingest(rollout("a", 3, 0)).await, Err(Refusal::UnknownVersion { version: 3, current: 2 }));
        let s = h.status();
        assert_eq!((s.updates_done, s.samples_total, s.batches_stale), (1, 16, 1));
        assert!(s.mean_episode_return.is_finite());
        h.stop().await.unwrap();
    }

    #[tokio::test]
    async fn async_mode_updates_by_sample_count_and_bounds_the_lag() {
        let h = start(LearnerSettings {
            mode: Mode::Async,
            async_batch_samples: 16,
            max_policy_lag: 1,
            ..LearnerSettings::default()
        });
        h.ingest(rollout("a", 1, 0)).await.unwrap();
        assert_eq!(h.status().version, 1);
        h.ingest(rollout("a", 1, 0)).await.unwrap();
        wait_version(&h, 2).await;
        // One version old: within the lag bound, taken (with its own normaliser).
        assert_eq!(h.ingest(rollout("b", 1, 2)).await, Ok(Ingest::Accepted { samples: 8 }));
        h.ingest(rollout("b", 2, 2)).await.unwrap();
        wait_version(&h, 3).await;
        assert!(h.history()[1].policy_lag > 0.0, "the lagged rollout counts in the lag");
        // Two versions old: beyond the bound.
        assert_eq!(h.ingest(rollout("a", 1, 0)).await, Ok(Ingest::Stale { version: 1, current: 3 }));
        h.stop().await.unwrap();
    }
}
