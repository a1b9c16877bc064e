//! The clock: the one task that owns the [`MarketState`] and decides when a
//! slot opens and when it clears.
//!
//! Actor style: gRPC handlers hold a [`ClockHandle`] and send it
//! [`Command`]s with a oneshot for the reply; the clock answers from its own
//! loop, so the state needs no lock. It never waits on a node: messages to
//! nodes go through bounded per-node queues with `try_send` (a lagging node
//! whose queue is full skips messages, counted; its session stays open and
//! the node settles skipped slots locally), and slot summaries go to
//! watchers through a `broadcast` channel (lagging watchers skip summaries).
//!
//! Fast mode: a slot opens as soon as the previous one cleared, and clears
//! when every node waited for has sent its batch or `deadline_ms` passed; a
//! node that holds the slot (`Hold`: it waits for the next policy version)
//! extends the deadline to `max_hold_ms` after the opening. Real-time mode:
//! a slot opens every `slot_period_ms` and clears at the end of its period
//! (or earlier, once every node waited for has reported); holds are counted,
//! never honoured. Leases are checked on a 250 ms tick. On shutdown the
//! clock finishes the open slot, then stops.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use peergrid_core::household::HouseholdReport;
use peergrid_core::market::PriceBounds;
use peergrid_core::observation::OpenSlot;
use peergrid_core::settlement::ClearedSlot;
use peergrid_proto::WireError;
use peergrid_runtime::Shutdown;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::sleep_until;

/// On shutdown, the open slot waits at most this long for missing reports.
const DRAIN_GRACE: Duration = Duration::from_secs(2);

use crate::config::ClockMode;
use crate::error::MarketError;
use crate::metrics::MarketMetrics;
use crate::scenario::ScenarioEvent;
use crate::state::{
    HoldOutcome, MarketState, NodeKey, ProsumerInfo, RegisterRequest, Registration, SlotSummary,
    StatusSnapshot,
};

/// How often leases are checked for expiry.
const LEASE_TICK: Duration = Duration::from_millis(250);

/// Messages queued per node before the clock gives up on it.
pub(crate) const NODE_QUEUE: usize = 16;
/// Summaries a watcher may fall behind before it skips some.
pub(crate) const WATCH_BUFFER: usize = 256;
const COMMAND_QUEUE: usize = 1024;

/// What one node is told, in order: the clock's slot messages, and the
/// refusals and stream errors the gRPC edge adds to the same queue
/// (converted to wire by `grpc.rs`).
#[derive(Clone, Debug)]
pub enum NodeEvent {
    Open(Arc<OpenSlot>),
    Cleared(ClearedSlot),
    /// The node reconnected: this (older) connection's session ends.
    Replaced,
    /// A batch or hold was refused (by the edge); nothing of it was stored,
    /// the session stays open.
    Refused(Refused),
    /// The session ends with this error (the edge: the market is stopping,
    /// or the node's stream broke).
    Rejected(WireError),
}

/// A refused batch or hold, as the node is told.
#[derive(Clone, Debug, PartialEq)]
pub struct Refused {
    pub slot: u64,
    pub error: WireError,
    /// The metric label: "late", "invalid", "duplicate", "foreign", "too_large", "offline".
    pub reason: &'static str,
}

/// What watchers see.
#[derive(Clone, Debug)]
pub enum MarketEvent {
    Slot(SlotSummary),
    Notice(String),
}

/// An operator's request.
#[derive(Clone, Debug)]
pub enum ControlCommand {
    Start,
    Pause,
    Resume,
    Step(u32),
    SetMode { mode: ClockMode, slot_period_ms: u64, deadline_ms: u64 },
    LoadScenario(String),
    Inject(ScenarioEvent),
}

#[derive(Clone, Debug, PartialEq)]
pub struct ControlOutcome {
    pub message: String,
    /// The next slot to open after the command.
    pub slot: u64,
}

type Reply<T> = oneshot::Sender<Result<T, MarketError>>;

enum Command {
    Register {
        request: OwnedRegister,
        reply: Reply<Registration>,
    },
    Join {
        session_id: String,
        secret: String,
        prosumers: Vec<ProsumerInfo>,
        events: mpsc::Sender<NodeEvent>,
        reply: Reply<NodeKey>,
    },
    Submit {
        node: NodeKey,
        slot: u64,
        reports: Vec<HouseholdReport>,
        reply: Reply<usize>,
    },
    Hold {
        node: NodeKey,
        slot: u64,
        reply: Reply<HoldOutcome>,
    },
    Disconnect {
        node: NodeKey,
    },
    Status {
        reply: Reply<StatusSnapshot>,
    },
    Control {
        command: ControlCommand,
        reply: Reply<ControlOutcome>,
    },
}

/// A `Register` request, owned (it crosses to the clock task).
#[derive(Clone, Debug, Default)]
pub struct OwnedRegister {
    pub name: String,
    pub prosumer_count: u32,
    pub resume_session_id: String,
    pub resume_first_id: Option<u32>,
    pub resume_secret: String,
}

/// 128 bits from the operating system's random source, as 32 hex characters.
fn fresh_secret() -> String {
    let mut bytes = [0u8; 16];
    if let Err(e) = getrandom::getrandom(&mut bytes) {
        // Without an OS random source there is no unguessable secret: refuse
        // to run rather than hand out predictable ones.
        panic!("the operating system's random source failed: {e}");
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The gRPC layer's way to talk to the clock. Cheap to clone.
#[derive(Clone)]
pub struct ClockHandle {
    tx: mpsc::Sender<Command>,
    open: watch::Receiver<Option<(u64, PriceBounds)>>,
    events: broadcast::Sender<MarketEvent>,
    finished: watch::Receiver<bool>,
}

fn gone() -> MarketError {
    MarketError::Internal { reason: "the market clock has stopped".into() }
}

impl ClockHandle {
    async fn call<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, MarketError> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(make(reply)).await.map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }

    pub async fn register(&self, request: OwnedRegister) -> Result<Registration, MarketError> {
        self.call(|reply| Command::Register { request, reply }).await
    }

    /// Joins a node; the clock sends its slot messages to `events`.
    pub async fn join(
        &self,
        session_id: String,
        secret: String,
        prosumers: Vec<ProsumerInfo>,
        events: mpsc::Sender<NodeEvent>,
    ) -> Result<NodeKey, MarketError> {
        self.call(|reply| Command::Join { session_id, secret, prosumers, events, reply }).await
    }

    /// The node asks the market to hold the open slot `slot` for it.
    pub async fn hold(&self, node: NodeKey, slot: u64) -> Result<HoldOutcome, MarketError> {
        self.call(|reply| Command::Hold { node, slot, reply }).await
    }

    pub async fn submit(
        &self,
        node: NodeKey,
        slot: u64,
        reports: Vec<HouseholdReport>,
    ) -> Result<usize, MarketError> {
        self.call(|reply| Command::Submit { node, slot, reports, reply }).await
    }

    pub async fn disconnect(&self, node: NodeKey) {
        let _ = self.tx.send(Command::Disconnect { node }).await;
    }

    pub async fn status(&self) -> Result<StatusSnapshot, MarketError> {
        self.call(|reply| Command::Status { reply }).await
    }

    pub async fn control(&self, command: ControlCommand) -> Result<ControlOutcome, MarketError> {
        self.call(|reply| Command::Control { command, reply }).await
    }

    /// The open slot and its price bounds, for validating batches at the edge.
    pub fn open_bounds(&self) -> Option<(u64, PriceBounds)> {
        *self.open.borrow()
    }

    pub fn subscribe(&self) -> broadcast::Receiver<MarketEvent> {
        self.events.subscribe()
    }

    /// Whether the run reached `max_slots`.
    pub fn is_finished(&self) -> bool {
        *self.finished.borrow()
    }

    /// Resolves once the run reached `max_slots` (never, without a limit).
    pub async fn finished(&self) {
        let mut rx = self.finished.clone();
        let _ = rx.wait_for(|done| *done).await;
    }
}

struct Clock {
    state: MarketState,
    rx: mpsc::Receiver<Command>,
    nodes: HashMap<usize, (u64, mpsc::Sender<NodeEvent>)>,
    open_tx: watch::Sender<Option<(u64, PriceBounds)>>,
    events: broadcast::Sender<MarketEvent>,
    finished: watch::Sender<bool>,
    metrics: MarketMetrics,
    epoch: Instant,
    round_deadline: Option<Instant>,
    /// The deadline the open slot had before any hold.
    normal_deadline: Option<Instant>,
    next_open_at: Instant,
    /// Whether a node held the open slot.
    round_held: bool,
    /// Lagging nodes already warned about (one warning per lag episode).
    lagging: std::collections::HashSet<usize>,
}

/// Starts the clock task. It ends after `shutdown` fires and the open slot
/// (if any) has cleared.
pub(crate) fn spawn_clock(
    state: MarketState,
    metrics: MarketMetrics,
    shutdown: Shutdown,
) -> (ClockHandle, JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
    let (open_tx, open) = watch::channel(None);
    let (events, _) = broadcast::channel(WATCH_BUFFER);
    let (finished_tx, finished) = watch::channel(false);
    let clock = Clock {
        state,
        rx,
        nodes: HashMap::new(),
        open_tx,
        events: events.clone(),
        finished: finished_tx,
        metrics,
        epoch: Instant::now(),
        round_deadline: None,
        normal_deadline: None,
        round_held: false,
        next_open_at: Instant::now(),
        lagging: Default::default(),
    };
    let handle = ClockHandle { tx, open, events, finished };
    (handle, tokio::spawn(clock.run(shutdown)))
}

fn unix_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

impl Clock {
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    async fn run(mut self, mut shutdown: Shutdown) {
        let mut stopping = false;
        let mut lease_tick = tokio::time::interval(LEASE_TICK);
        lease_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if !stopping && self.state.may_open() {
                let due =
                    self.state.mode() == ClockMode::Fast || Instant::now() >= self.next_open_at;
                if due {
                    self.open();
                }
            }
            if self.state.round_ready() {
                self.clear();
                continue;
            }
            let open = self.state.open_slot().is_some();
            if !open && self.state.finished() && !*self.finished.borrow() {
                tracing::info!(
                    slots = self.state.next_slot(),
                    "max slots reached; no further slots open"
                );
                self.finished.send_replace(true);
            }
            if stopping && !open {
                break;
            }
            let waiting_to_open = !stopping
                && !open
                && self.state.mode() == ClockMode::RealTime
                && self.state.may_open();
            let deadline = self.round_deadline;
            tokio::select! {
                _ = shutdown.recv(), if !stopping => {
                    tracing::info!(open_slot = ?self.state.open_slot().map(|o| o.slot), "shutdown: finishing the open slot");
                    stopping = true;
                    // Wait for missing reports at most DRAIN_GRACE more, not a whole (possibly long) deadline.
                    if let Some(d) = self.round_deadline {
                        self.round_deadline = Some(d.min(Instant::now() + DRAIN_GRACE));
                    }
                }
                command = self.rx.recv() => match command {
                    Some(command) => self.handle(command),
                    None => stopping = true,
                },
                _ = sleep_until(deadline.unwrap_or_else(Instant::now).into()), if deadline.is_some() => self.clear(),
                _ = sleep_until(self.next_open_at.into()), if waiting_to_open => {}
                _ = lease_tick.tick() => self.expire_leases(),
            }
        }
        // Dropping the node queues ends every session stream.
        self.nodes.clear();
        self.open_tx.send_replace(None);
        tracing::info!("market clock stopped");
    }

    fn open(&mut self) {
        let now = Instant::now();
        let wait_ms = match self.state.mode() {
            ClockMode::Fast => self.state.deadline_ms(),
            ClockMode::RealTime => self.state.slot_period_ms(),
        };
        let open = self.state.open(self.now_ms(), unix_ms() + wait_ms as i64);
        self.round_deadline = Some(now + Duration::from_millis(wait_ms));
        self.normal_deadline = self.round_deadline;
        self.next_open_at = now + Duration::from_millis(self.state.slot_period_ms());
        self.open_tx.send_replace(Some((open.slot, open.ctx.tariff.bounds())));
        tracing::debug!(
            slot = open.slot,
            data_slot = open.ctx.data_slot,
            adjustments = open.adjustments.len(),
            "slot open"
        );
        let keys: Vec<NodeKey> = self.state.connected_nodes().collect();
        for key in keys {
            self.send(key, NodeEvent::Open(Arc::clone(&open)));
        }
    }

    fn clear(&mut self) {
        let started = Instant::now();
        let expired_before = self.state.hold_counters().1;
        let mut outcome = self.state.clear();
        let seconds = started.elapsed().as_secs_f64();
        self.round_deadline = None;
        self.open_tx.send_replace(None);
        let summary = &mut outcome.summary;
        summary.clearing_latency_ms = seconds * 1e3;
        if let (true, Some(normal)) = (std::mem::take(&mut self.round_held), self.normal_deadline) {
            let held = started.saturating_duration_since(normal).as_secs_f64();
            summary.held_ms = held * 1e3;
            self.metrics.hold_seconds.observe(held);
        }
        self.normal_deadline = None;
        self.metrics.holds_expired.inc_by(self.state.hold_counters().1 - expired_before);
        self.metrics.absent_reports.inc_by(summary.absent as u64);
        self.metrics.slots_cleared.inc();
        self.metrics.orders.inc_by(outcome.orders);
        self.metrics.matched_kwh.inc_by(summary.matched_kwh);
        self.metrics.clearing_seconds.observe(seconds);
        self.metrics.missing_reports.inc_by(summary.missing as u64);
        tracing::info!(
            slot = summary.slot,
            data_slot = summary.data_slot,
            reported = summary.reported,
            missing = summary.missing,
            matched_kwh = summary.matched_kwh,
            price = ?summary.clearing_price.map(|p| p.per_kwh()),
            "slot cleared"
        );
        // No receivers is fine: nobody is watching.
        let _ = self.events.send(MarketEvent::Slot(summary.clone()));
        for (key, cleared) in outcome.per_node {
            self.send(key, NodeEvent::Cleared(cleared));
        }
    }

    /// Queues `event` for a node without waiting. A full queue (the node
    /// lags, e.g. in real-time mode while it waits for the learner) skips
    /// the message — the node settles skipped slots locally — and never
    /// disconnects it; a closed queue means its stream is gone.
    fn send(&mut self, key: NodeKey, event: NodeEvent) {
        let Some((generation, tx)) = self.nodes.get(&key.index) else { return };
        if *generation != key.generation {
            return;
        }
        match tx.try_send(event) {
            Ok(()) => {
                self.lagging.remove(&key.index);
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.metrics.node_messages_dropped.inc();
                if self.lagging.insert(key.index) {
                    tracing::warn!(
                        node = self.state.node_name(key.index),
                        "node lags: its queue is full; skipping messages until it catches up"
                    );
                }
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                tracing::info!(node = self.state.node_name(key.index), "node stream closed");
                self.drop_node(key);
            }
        }
    }

    fn expire_leases(&mut self) {
        let expired = self.state.expire_leases(self.now_ms());
        for e in &expired {
            self.metrics.leases_expired.inc();
            let what = if e.never_joined {
                "registered but never joined"
            } else {
                "gone past its lease grace"
            };
            tracing::info!(node = %e.name, first = e.first, count = e.count, "lease expired ({what}); its households left the community");
            self.notice(format!(
                "node {} lease expired ({what}); prosumers {}..{} left",
                e.name,
                e.first,
                e.first + e.count
            ));
        }
        if !expired.is_empty() {
            self.update_gauges();
        }
    }

    fn drop_node(&mut self, key: NodeKey) {
        self.lagging.remove(&key.index);
        if self.state.disconnect(key, self.now_ms()) {
            self.nodes.remove(&key.index);
            self.notice(format!("node {} disconnected", self.state.node_name(key.index)));
        }
        self.update_gauges();
    }

    fn notice(&self, text: String) {
        let _ = self.events.send(MarketEvent::Notice(text));
    }

    fn update_gauges(&self) {
        let st = self.state.connected_prosumers();
        self.metrics.connected_prosumers.set(st as i64);
        self.metrics.connected_nodes.set(self.state.connected_nodes().count() as i64);
        self.metrics.absent_prosumers.set(self.state.absent_prosumers() as i64);
    }

    fn handle(&mut self, command: Command) {
        match command {
            Command::Register { request: r, reply } => {
                let request = RegisterRequest {
                    name: &r.name,
                    prosumer_count: r.prosumer_count,
                    resume_session_id: &r.resume_session_id,
                    resume_first_id: r.resume_first_id,
                    resume_secret: &r.resume_secret,
                };
                let result = self.state.register(request, fresh_secret(), self.now_ms());
                if let Ok(reg) = &result {
                    let resumed = !r.resume_session_id.is_empty();
                    tracing::info!(node = %r.name, first = reg.first_prosumer_id, count = reg.prosumer_count, resumed, "node registered");
                }
                let _ = reply.send(result);
            }
            Command::Join { session_id, secret, prosumers, events, reply } => {
                let result = self.state.join(&session_id, &secret, &prosumers, self.now_ms());
                if let Ok(key) = result {
                    if let Some((_, old)) = self.nodes.insert(key.index, (key.generation, events)) {
                        // The node reconnected (with its secret) while its old
                        // stream still looked open: that stream ends here.
                        let _ = old.try_send(NodeEvent::Replaced);
                    }
                    if let Some(open) = self.state.open_slot().cloned() {
                        self.send(key, NodeEvent::Open(open));
                    }
                    self.notice(format!("node {} joined", self.state.node_name(key.index)));
                    self.update_gauges();
                }
                let _ = reply.send(result);
            }
            Command::Submit { node, slot, reports, reply } => {
                let _ = reply.send(self.state.submit(node, slot, reports, self.now_ms()));
            }
            Command::Hold { node, slot, reply } => {
                let result = self.state.hold(node, slot, self.now_ms());
                if let Ok(HoldOutcome::Held { until_ms }) = result {
                    if !std::mem::replace(&mut self.round_held, true) {
                        self.metrics.holds.inc();
                    }
                    let until = self.epoch + Duration::from_millis(until_ms);
                    if self.round_deadline.is_some_and(|d| d < until) {
                        tracing::debug!(
                            node = self.state.node_name(node.index),
                            slot,
                            "slot held for a node waiting on the learner"
                        );
                        self.round_deadline = Some(until);
                    }
                }
                let _ = reply.send(result);
            }
            Command::Disconnect { node } => {
                if self.nodes.get(&node.index).is_some_and(|(g, _)| *g == node.generation) {
                    self.drop_node(node);
                }
            }
            Command::Status { reply } => {
                let _ = reply.send(Ok(self.state.status()));
            }
            Command::Control { command, reply } => {
                let result = self.control(command);
                if let Ok(outcome) = &result {
                    tracing::info!(slot = outcome.slot, "control: {}", outcome.message);
                    self.notice(outcome.message.clone());
                }
                let _ = reply.send(result);
            }
        }
    }

    fn control(&mut self, command: ControlCommand) -> Result<ControlOutcome, MarketError> {
        let s = &mut self.state;
        let message = match command {
            ControlCommand::Start => s.start(),
            ControlCommand::Pause => s.pause(),
            ControlCommand::Resume => s.resume(),
            ControlCommand::Step(n) => s.step(n)?,
            ControlCommand::SetMode { mode, slot_period_ms, deadline_ms } => {
                s.set_mode(mode, slot_period_ms, deadline_ms)?
            }
            ControlCommand::LoadScenario(json) => s.load_scenario(&json)?,
            ControlCommand::Inject(event) => s.inject(event)?,
        };
        Ok(ControlOutcome { message, slot: s.next_slot() })
    }
}
