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
    /// Keep the blob of every version published after a multiple of this
    /// many updates (the starting version too) for
    /// [`LearnerHandle::take_snapshots`]: every one, whatever the timing of
    /// whoever reads them (`peergrid run`'s validation). 0 = keep none.
    pub snapshot_every: u64,
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
            snapshot_every: 0,
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
        if self.snapshot_every > 1_000_000 {
            return Err(TrainerError::config("snapshot_every", "must be ≤ 1000000 (0 = off)"));
        }
        if self.torch_threads == 0 || self.torch_threads > 256 {
            return Err(TrainerError::config("torch_threads", "must be in 1..=256"));
        }
        Ok(())
    }
}

/// The versions kept for [`LearnerHandle::take_snapshots`].
type Snapshots = Arc<Mutex<Vec<Published>>>;

/// Keeps `p` in `snapshots` when it follows a multiple of `every` updates.
fn snapshot(snapshots: &Snapshots, every: u64, updates_done: u64, p: &Published) {
    if every > 0 && updates_done % every == 0 {
        snapshots.lock().expect("snapshots lock").push(p.clone());
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
            Refusal::Duplicate { node, version } => {
                write!(f, "node '{node}' already sent its rollout for version {version}")
            }
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
    snapshots: Snapshots,
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

    /// The snapshots kept since the last call (`snapshot_every`), oldest first.
    pub fn take_snapshots(&self) -> Vec<Published> {
        std::mem::take(&mut *self.snapshots.lock().expect("snapshots lock"))
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
        SubscriberGuard {
            count: Arc::clone(&self.subscribers),
            node: node.to_owned(),
            commands: self.commands.clone(),
        }
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
    snapshots: Snapshots,
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
        (None, true) => {
            return Err(TrainerError::config("resume", "needs a run directory to resume from"))
        }
        _ => None,
    };
    let (ppo, obs_stats, version, updates_done) = match restored {
        Some(c) => {
            // The policy file is the authority on its prior (configs saved
            // before the prior existed would default to another one).
            let config = PpoConfig { prior: c.policy.net.spec.prior, ..c.ppo.clone() };
            let mut ppo = Ppo::from_flat(config, &c.policy.net.to_flat(), device)?;
            ppo.restore_optimiser(&c.optimiser)?;
            info!(
                version = c.policy.version,
                updates_done = c.updates_done,
                "resumed from checkpoint"
            );
            (ppo, c.obs_stats, c.policy.version, c.updates_done)
        }
        None => (Ppo::new(ppo_config, device)?, RunningStats::new(OBS_DIM), 1, 0),
    };
    let tb = outputs.tensorboard_dir.as_ref().map(EventWriter::create).transpose()?;
    let normaliser = obs_stats.normaliser(ppo.config.obs_clip);
    let weights =
        PolicyWeights { net: ppo.actor_critic()?, normaliser: normaliser.clone(), version };
    let blob = to_safetensors(&weights)?;
    let first = Published { version, weights: Arc::new(blob), republished: 0 };
    let snapshots = Snapshots::default();
    snapshot(&snapshots, settings.snapshot_every, updates_done, &first);
    let (publish, published) = watch::channel(first);
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
        snapshots: Arc::clone(&snapshots),
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
            let outcome =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| learner.run(rx)));
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
        snapshots,
        subscribers: Arc::new(std::sync::atomic::AtomicU32::new(0)),
        death,
        stopping,
    };
    Ok((handle, thread))
}

mod round;
mod update;

use round::NodeTrack;

#[cfg(test)]
mod tests;
