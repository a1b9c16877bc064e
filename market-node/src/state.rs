//! The market's whole state, pure and synchronous: membership, the open
//! round, scenario effects, run control, KPIs and the balance checks.
//!
//! [`MarketState`] is owned by one task ([`crate::clock`]) and driven by
//! method calls; it never does I/O, never reads a clock (callers pass
//! `now_ms`) and never names a generated wire type, so it is unit-tested
//! without a network. Every request is validated completely before anything
//! is stored: a rejected batch, registration or scenario changes nothing.
//!
//! Exactness: a slot's reports are merged into one list sorted by prosumer
//! id and cleared with [`SlotEngine::clear_and_settle`], then each household
//! is recorded with [`household_slot`] in id order, exactly as the reference
//! [`peergrid_core::simulation::Simulation`] does, so the KPIs of a
//! distributed run equal the reference's for the same community and policy.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use peergrid_core::data::Dataset;
use peergrid_core::household::{conditions_for, HouseholdReport};
use peergrid_core::kpi::{KpiAccumulator, Kpis};
use peergrid_core::market::{Fill, PriceBounds, Side};
use peergrid_core::prosumer::ProsumerKind;
use peergrid_core::reward::RewardWeights;
use peergrid_core::rng::derive_seed;
use peergrid_core::settlement::Settlement;
use peergrid_core::simulation::{slot_context, SimConfig};
use peergrid_core::slot_engine::{household_slot, SlotEngine};
use peergrid_core::tariff::GridConfig;
use peergrid_core::units::{Money, PricePerKwh, ProsumerId, Wh};
use peergrid_proto::convert::slot::OpenSlot;
use peergrid_proto::WireError;

use crate::config::{ClockMode, ConfigError, MarketSettings, DEADLINE_MS, SLOT_PERIOD_MS};
use crate::scenario::{parse_scenario, Effects, ScenarioEvent, TimedEvent};

/// Most prosumers one node may host.
pub const MAX_NODE_PROSUMERS: u32 = 100_000;
/// Most prosumers a market hosts in total.
pub const MAX_PROSUMERS: u32 = 10_000_000;
/// Longest node name, characters.
pub const MAX_NODE_NAME_CHARS: usize = 64;
/// Most slots one `Step` may clear.
pub const MAX_STEP: u32 = 100_000;

/// A node's connection: its index and which (re)connection this is, so
/// messages of a replaced connection are ignored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct NodeKey {
    pub index: usize,
    pub generation: u64,
}

/// What a node gets back from `Register`.
#[derive(Clone, Debug, PartialEq)]
pub struct Registration {
    pub session_id: String,
    pub first_prosumer_id: ProsumerId,
    pub prosumer_count: u32,
    pub dataset: String,
    pub slot_minutes: u32,
    pub reward: RewardWeights,
    pub next_slot: u64,
}

/// One hosted prosumer as a node describes it in `Join`.
#[derive(Clone, Debug, PartialEq)]
pub struct ProsumerInfo {
    pub prosumer_id: ProsumerId,
    pub kind: String,
    pub pv_kwp: f64,
    pub battery_kwh: f64,
}

#[derive(Clone, Debug)]
struct Node {
    session_id: String,
    name: String,
    first: ProsumerId,
    count: u32,
    joined: bool,
    connected: bool,
    generation: u64,
    last_seen_ms: u64,
    reported_last_round: bool,
}

impl Node {
    fn hosts(&self, id: ProsumerId) -> bool {
        id >= self.first && id - self.first < self.count
    }
}

/// The slot being collected.
#[derive(Debug)]
struct Round {
    open: Arc<OpenSlot>,
    /// Nodes connected at open: their non-offline prosumers are expected.
    expected: Vec<usize>,
    /// Expected nodes the fast clock waits for (not silent past the node timeout).
    waited: BTreeSet<usize>,
    batches: BTreeMap<usize, Vec<HouseholdReport>>,
}

/// A cleared slot as the community sees it (what `Watch` shows).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SlotSummary {
    pub slot: u64,
    pub data_slot: u64,
    pub clearing_price: Option<PricePerKwh>,
    pub matched_kwh: f64,
    pub grid_import_kwh: f64,
    pub grid_export_kwh: f64,
    pub load_kwh: f64,
    pub pv_kwh: f64,
    pub reported: u32,
    pub missing: u32,
    pub clearing_latency_ms: f64,
}

/// A cleared slot as one node sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeCleared {
    pub slot: u64,
    pub clearing_price: Option<PricePerKwh>,
    pub matched: Wh,
    pub settlements: Vec<(ProsumerId, Fill, Settlement)>,
    pub missing: Vec<ProsumerId>,
}

#[derive(Clone, Debug)]
pub struct ClearOutcome {
    pub summary: SlotSummary,
    pub orders: u64,
    /// One entry per connected node that was expected or reported.
    pub per_node: Vec<(NodeKey, NodeCleared)>,
}

/// Run status and KPIs so far.
#[derive(Clone, Debug, PartialEq)]
pub struct StatusSnapshot {
    pub next_slot: u64,
    pub open_slot: Option<u64>,
    pub prosumers: u32,
    pub nodes: u32,
    pub connected_nodes: u32,
    pub connected_prosumers: u64,
    pub mode: ClockMode,
    pub paused: bool,
    pub slot_period_ms: u64,
    pub deadline_ms: u64,
    pub energy_balance_error_kwh: f64,
    pub money_balance_error: f64,
    pub kpis: Kpis,
    pub missing_reports: u64,
}

/// Run control: what the clock may do next.
#[derive(Clone, Debug)]
struct Control {
    mode: ClockMode,
    deadline_ms: u64,
    slot_period_ms: u64,
    min_prosumers: u64,
    max_slots: Option<u64>,
    node_timeout_ms: u64,
    max_batch: usize,
    started: bool,
    paused: bool,
    steps_left: Option<u32>,
}

pub struct MarketState {
    ds: Arc<Dataset>,
    sim: SimConfig,
    start_slot: usize,
    /// With `skip_eval_weeks`: the dataset slots played, in order.
    schedule: Option<Vec<usize>>,
    session_seed: u64,
    control: Control,
    nodes: Vec<Node>,
    next_id: ProsumerId,
    next_slot: u64,
    round: Option<Round>,
    engine: SlotEngine,
    kpi: KpiAccumulator,
    effects: Effects,
    scheduled: Vec<TimedEvent>,
    pending: Vec<ScenarioEvent>,
    energy_error_kwh: f64,
    p2p_paid: Money,
    p2p_received: Money,
    missing_reports: u64,
}

impl MarketState {
    /// `session_seed` makes session ids unpredictable across runs.
    pub fn new(
        ds: Arc<Dataset>,
        sim: SimConfig,
        settings: &MarketSettings,
        session_seed: u64,
    ) -> Result<MarketState, ConfigError> {
        if settings.start_slot >= ds.n_slots() as u64 {
            return Err(ConfigError {
                field: "start_slot".into(),
                reason: format!("must be < the dataset's {} slots, got {}", ds.n_slots(), settings.start_slot),
            });
        }
        let schedule = match settings.skip_eval_weeks {
            Some(n) => {
                let slots: Vec<usize> = peergrid_core::data::split::split_weeks(&ds, n).train.into_iter().flatten().collect();
                if n < 2 || slots.is_empty() {
                    return Err(ConfigError {
                        field: "skip_eval_weeks".into(),
                        reason: format!("must be ≥ 2 and leave training weeks in the dataset, got {n}"),
                    });
                }
                // Start at the first training slot at or after start_slot.
                let first = slots.iter().position(|&t| t >= settings.start_slot as usize).unwrap_or(0);
                Some(slots[first..].iter().chain(&slots[..first]).copied().collect())
            }
            None => None,
        };
        Ok(MarketState {
            schedule,
            start_slot: settings.start_slot as usize,
            session_seed,
            control: Control {
                mode: settings.mode,
                deadline_ms: settings.deadline_ms,
                slot_period_ms: settings.slot_period_ms,
                min_prosumers: settings.min_prosumers as u64,
                max_slots: settings.max_slots,
                node_timeout_ms: settings.node_timeout_ms,
                max_batch: settings.max_batch,
                started: false,
                paused: false,
                steps_left: None,
            },
            nodes: Vec::new(),
            next_id: 0,
            next_slot: 0,
            round: None,
            engine: SlotEngine::new(sim.grid.clone(), sim.mechanism),
            kpi: KpiAccumulator::new(0, 0.0),
            effects: Effects::default(),
            scheduled: Vec::new(),
            pending: Vec::new(),
            energy_error_kwh: 0.0,
            p2p_paid: Money(0),
            p2p_received: Money(0),
            missing_reports: 0,
            ds,
            sim,
        })
    }

    // ----- membership -------------------------------------------------------

    /// Assigns a new node the next contiguous id range, or gives a resuming
    /// node its old range back.
    pub fn register(
        &mut self,
        name: &str,
        prosumer_count: u32,
        resume_session_id: &str,
        resume_first_id: Option<ProsumerId>,
    ) -> Result<Registration, WireError> {
        let chars = name.chars().count();
        if !(1..=MAX_NODE_NAME_CHARS).contains(&chars) || name.chars().any(char::is_control) {
            return Err(WireError::invalid("node_name", format!("must be 1..={MAX_NODE_NAME_CHARS} printable characters")));
        }
        let max = MAX_NODE_PROSUMERS.min(self.control.max_batch as u32);
        if !(1..=max).contains(&prosumer_count) {
            return Err(WireError::invalid("prosumer_count", format!("must lie in 1..={max}, got {prosumer_count}")));
        }
        let index = if resume_session_id.is_empty() {
            if self.next_id.checked_add(prosumer_count).is_none_or(|end| end > MAX_PROSUMERS) {
                return Err(WireError::ResourceExhausted {
                    reason: format!("prosumer_count: the market hosts at most {MAX_PROSUMERS} prosumers"),
                });
            }
            let n = self.nodes.len() as u64;
            let session_id = format!(
                "{:016x}{:016x}",
                derive_seed(self.session_seed, &format!("session/{n}")),
                derive_seed(self.session_seed, &format!("session-check/{n}"))
            );
            self.nodes.push(Node {
                session_id,
                name: name.to_owned(),
                first: self.next_id,
                count: prosumer_count,
                joined: false,
                connected: false,
                generation: 0,
                last_seen_ms: 0,
                reported_last_round: true,
            });
            self.next_id += prosumer_count;
            self.nodes.len() - 1
        } else if let (Err(_), Some(first)) = (self.node_of_session(resume_session_id), resume_first_id) {
            self.adopt_session(name, resume_session_id, first, prosumer_count)?
        } else {
            let index = self.node_of_session(resume_session_id)?;
            let node = &self.nodes[index];
            if node.count != prosumer_count {
                return Err(WireError::invalid(
                    "prosumer_count",
                    format!("a resumed session hosts {} prosumers, got {prosumer_count}", node.count),
                ));
            }
            index
        };
        let node = &self.nodes[index];
        Ok(Registration {
            session_id: node.session_id.clone(),
            first_prosumer_id: node.first,
            prosumer_count: node.count,
            dataset: self.ds.name.clone(),
            slot_minutes: self.ds.slot_minutes,
            reward: self.sim.reward.clone(),
            next_slot: self.next_slot,
        })
    }

    /// Re-creates a session this market does not know (it restarted), with
    /// the id range the node says it hosted, if that range is free.
    fn adopt_session(&mut self, name: &str, session_id: &str, first: ProsumerId, count: u32) -> Result<usize, WireError> {
        if session_id.len() != 32 || !session_id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(WireError::invalid("resume_session_id", "must be the 32 hex characters a market issued"));
        }
        let end = first.checked_add(count).filter(|end| *end <= MAX_PROSUMERS).ok_or_else(|| {
            WireError::invalid("resume_first_prosumer_id", format!("range {first}+{count} exceeds {MAX_PROSUMERS}"))
        })?;
        if let Some(other) = self.nodes.iter().find(|n| first < n.first + n.count && n.first < end) {
            return Err(WireError::failed_precondition(format!(
                "resume_first_prosumer_id: ids {first}..{end} overlap node '{}' ({}..{})",
                other.name,
                other.first,
                other.first + other.count
            )));
        }
        self.nodes.push(Node {
            session_id: session_id.to_owned(),
            name: name.to_owned(),
            first,
            count,
            joined: false,
            connected: false,
            generation: 0,
            last_seen_ms: 0,
            reported_last_round: true,
        });
        self.next_id = self.next_id.max(end);
        Ok(self.nodes.len() - 1)
    }

    fn node_of_session(&self, session_id: &str) -> Result<usize, WireError> {
        self.nodes
            .iter()
            .position(|n| n.session_id == session_id)
            .ok_or_else(|| WireError::NotFound { what: "session_id: no such session (register first)".into() })
    }

    /// Connects a registered node (first `Join`, or a reconnect replacing
    /// the previous connection). The first join adds its storage to the KPIs.
    pub fn join(&mut self, session_id: &str, prosumers: &[ProsumerInfo], now_ms: u64) -> Result<NodeKey, WireError> {
        let index = self.node_of_session(session_id)?;
        let node = &self.nodes[index];
        if prosumers.len() != node.count as usize {
            return Err(WireError::invalid(
                "prosumers",
                format!("must describe the node's {} prosumers, got {}", node.count, prosumers.len()),
            ));
        }
        for (i, p) in prosumers.iter().enumerate() {
            let want = node.first + i as u32;
            if p.prosumer_id != want {
                return Err(WireError::invalid(
                    format!("prosumers[{i}].prosumer_id"),
                    format!("must be {want} (ids in range order), got {}", p.prosumer_id),
                ));
            }
            if !ProsumerKind::ALL.iter().any(|k| k.name() == p.kind) {
                return Err(WireError::invalid(format!("prosumers[{i}].kind"), format!("unknown kind {:?}", p.kind)));
            }
            for (name, v) in [("pv_kwp", p.pv_kwp), ("battery_kwh", p.battery_kwh)] {
                if !(v.is_finite() && (0.0..=1000.0).contains(&v)) {
                    return Err(WireError::invalid(format!("prosumers[{i}].{name}"), format!("must lie in [0, 1000], got {v}")));
                }
            }
        }
        let node = &mut self.nodes[index];
        if !node.joined {
            // One storage addition per prosumer in id order: the same float
            // summation as the reference simulator's capacity when nodes
            // join in id order.
            let end = (node.first + node.count) as usize;
            for p in prosumers {
                self.kpi.add_households(end, p.battery_kwh);
            }
            node.joined = true;
        }
        node.connected = true;
        node.generation += 1;
        node.last_seen_ms = now_ms;
        node.reported_last_round = true;
        // A node (re)joining mid-slot gets the open slot and is waited for.
        if let Some(round) = self.round.as_mut() {
            if !round.expected.contains(&index) {
                round.expected.push(index);
            }
            round.waited.insert(index);
        }
        if self.connected_prosumers() >= self.control.min_prosumers {
            self.control.started = true;
        }
        Ok(NodeKey { index, generation: self.nodes[index].generation })
    }

    fn is_current(&self, key: NodeKey) -> bool {
        self.nodes.get(key.index).is_some_and(|n| n.connected && n.generation == key.generation)
    }

    /// The connection `key` ended; a newer connection of the node is unaffected.
    pub fn disconnect(&mut self, key: NodeKey) -> bool {
        if !self.is_current(key) {
            return false;
        }
        self.nodes[key.index].connected = false;
        if let Some(round) = self.round.as_mut() {
            round.waited.remove(&key.index);
        }
        true
    }

    pub fn connected_nodes(&self) -> impl Iterator<Item = NodeKey> + '_ {
        self.nodes.iter().enumerate().filter(|(_, n)| n.connected).map(|(index, n)| NodeKey { index, generation: n.generation })
    }

    pub fn connected_prosumers(&self) -> u64 {
        self.nodes.iter().filter(|n| n.connected).map(|n| n.count as u64).sum()
    }

    pub fn node_name(&self, index: usize) -> &str {
        self.nodes.get(index).map_or("?", |n| n.name.as_str())
    }

    // ----- the clock's questions -------------------------------------------

    pub fn mode(&self) -> ClockMode {
        self.control.mode
    }

    pub fn deadline_ms(&self) -> u64 {
        self.control.deadline_ms
    }

    pub fn slot_period_ms(&self) -> u64 {
        self.control.slot_period_ms
    }

    pub fn open_slot(&self) -> Option<&Arc<OpenSlot>> {
        self.round.as_ref().map(|r| &r.open)
    }

    /// The open slot and the price bounds its orders must respect.
    pub fn open_bounds(&self) -> Option<(u64, PriceBounds)> {
        self.round.as_ref().map(|r| (r.open.slot, r.open.ctx.tariff.bounds()))
    }

    /// Whether the run has reached `max_slots`.
    pub fn finished(&self) -> bool {
        self.control.max_slots.is_some_and(|m| self.next_slot >= m)
    }

    /// Whether a new slot may open now (no round open, started, not paused
    /// or stepping, below `max_slots`; fast mode also needs a connected node).
    pub fn may_open(&self) -> bool {
        let c = &self.control;
        self.round.is_none()
            && c.started
            && (!c.paused || c.steps_left.is_some())
            && !self.finished()
            && (c.mode == ClockMode::RealTime || self.connected_prosumers() > 0)
    }

    /// Fast mode: every node waited for has sent its batch.
    pub fn round_ready(&self) -> bool {
        self.round.as_ref().is_some_and(|r| !r.waited.is_empty() && r.waited.iter().all(|i| r.batches.contains_key(i)))
    }

    // ----- a slot: open, submit, clear -------------------------------------

    /// Opens the next slot: applies due scenario events, builds its context
    /// and adjustments, and fixes which nodes are expected.
    pub fn open(&mut self, now_ms: u64, deadline_unix_ms: i64) -> Arc<OpenSlot> {
        assert!(self.round.is_none(), "a slot is already open");
        let slot = self.next_slot;
        let due: Vec<ScenarioEvent> = {
            let split = self.scheduled.partition_point(|e| e.at_slot <= slot);
            self.scheduled.drain(..split).map(|e| e.event).collect()
        };
        for event in self.pending.drain(..).chain(due).collect::<Vec<_>>() {
            self.apply_event(&event);
        }
        let data_slot = match &self.schedule {
            Some(s) => s[(slot % s.len() as u64) as usize],
            None => (self.start_slot + (slot % self.ds.n_slots() as u64) as usize) % self.ds.n_slots(),
        };
        let mut ctx = slot_context(&self.ds, &self.sim, data_slot, self.engine.last_price());
        if let Some((retail, feed_in)) = self.effects.tariff() {
            // Validated on entry: both within [0, 100] with feed-in ≤ retail.
            ctx.tariff.retail = PricePerKwh::from_per_kwh(retail, "retail_per_kwh").unwrap_or(ctx.tariff.retail);
            ctx.tariff.feed_in = PricePerKwh::from_per_kwh(feed_in, "feed_in_per_kwh").unwrap_or(ctx.tariff.feed_in);
            if self.engine.last_price().is_none() {
                ctx.last_clearing_price_per_kwh = ctx.tariff.midpoint().per_kwh();
            }
        }
        let adjustments = self.effects.adjustments();
        self.effects.consume_slot();
        let open = Arc::new(OpenSlot { slot, ctx, deadline_unix_ms, adjustments });
        let timeout = self.control.node_timeout_ms;
        let mut expected = Vec::new();
        let mut waited = BTreeSet::new();
        for (i, n) in self.nodes.iter().enumerate().filter(|(_, n)| n.connected) {
            expected.push(i);
            let silent = !n.reported_last_round && now_ms.saturating_sub(n.last_seen_ms) > timeout;
            if !silent {
                waited.insert(i);
            }
        }
        self.round = Some(Round { open: Arc::clone(&open), expected, waited, batches: BTreeMap::new() });
        self.next_slot += 1;
        if let Some(left) = self.control.steps_left.as_mut() {
            *left -= 1;
            if *left == 0 {
                self.control.steps_left = None;
                self.control.paused = true;
            }
        }
        open
    }

    /// Validates a node's whole batch for `slot` and stores it; on any
    /// error nothing is stored. Reports must already be wire-validated
    /// (finite, in bounds, order consistent with the position).
    pub fn submit(&mut self, key: NodeKey, slot: u64, reports: Vec<HouseholdReport>, now_ms: u64) -> Result<usize, WireError> {
        if !self.is_current(key) {
            return Err(WireError::failed_precondition("session: this connection is not (or no longer) joined"));
        }
        let Some(round) = self.round.as_ref() else {
            return Err(WireError::failed_precondition(format!("slot: no slot is open, got a batch for slot {slot}")));
        };
        if slot != round.open.slot {
            return Err(WireError::failed_precondition(format!(
                "slot: the open slot is {}, got a batch for slot {slot}",
                round.open.slot
            )));
        }
        if round.batches.contains_key(&key.index) {
            return Err(WireError::failed_precondition(format!("slot: this node already sent its batch for slot {slot}")));
        }
        if reports.len() > self.control.max_batch {
            return Err(WireError::ResourceExhausted {
                reason: format!("reports: {} reports exceed the batch limit of {}", reports.len(), self.control.max_batch),
            });
        }
        let node = &self.nodes[key.index];
        let mut seen: BTreeMap<ProsumerId, usize> = BTreeMap::new();
        for (i, r) in reports.iter().enumerate() {
            // Built only on error: formatting a path per valid report was a
            // measurable share of a 10,000-prosumer slot.
            let field = || format!("reports[{i}].prosumer_id");
            if !node.hosts(r.prosumer_id) {
                return Err(WireError::PermissionDenied {
                    reason: format!(
                        "{}: prosumer {} is not hosted by this node (it hosts {}..{})",
                        field(),
                        r.prosumer_id,
                        node.first,
                        node.first + node.count
                    ),
                });
            }
            if let Some(j) = seen.insert(r.prosumer_id, i) {
                return Err(WireError::invalid(field(), format!("duplicate prosumer id {} (also reports[{j}])", r.prosumer_id)));
            }
            if conditions_for(r.prosumer_id, &round.open.adjustments).1 {
                return Err(WireError::failed_precondition(format!(
                    "{}: prosumer {} is offline in slot {slot} and must not report",
                    field(),
                    r.prosumer_id
                )));
            }
        }
        let mut sorted = reports;
        sorted.sort_by_key(|r| r.prosumer_id);
        SlotEngine::check_reports(&sorted, &round.open.ctx.tariff).map_err(WireError::from)?;
        let n = sorted.len();
        let node = &mut self.nodes[key.index];
        node.last_seen_ms = now_ms;
        self.round.as_mut().expect("checked above").batches.insert(key.index, sorted);
        Ok(n)
    }

    /// Clears the open slot over every report received, settles, records
    /// KPIs and balances, and says what each node must be told.
    pub fn clear(&mut self) -> ClearOutcome {
        let round = self.round.take().expect("clear needs an open slot");
        let ctx = &round.open.ctx;
        let reports: Vec<HouseholdReport> = {
            let mut all: Vec<HouseholdReport> = round.batches.values().flatten().copied().collect();
            all.sort_by_key(|r| r.prosumer_id);
            all
        };
        let feeder = self.engine.clear_and_settle(&reports, &ctx.tariff, ctx.hours);
        let clearing = self.engine.clearing();
        let mut summary = SlotSummary {
            slot: round.open.slot,
            data_slot: ctx.data_slot as u64,
            clearing_price: clearing.clearing_price,
            matched_kwh: clearing.matched.kwh(),
            reported: reports.len() as u32,
            ..SlotSummary::default()
        };
        let mut energy_error = 0.0;
        let mut orders = 0;
        for (i, report) in reports.iter().enumerate() {
            let s = &self.engine.settlements()[i];
            let slot = household_slot(report, s, &ctx.tariff, &self.sim.reward);
            self.kpi.record(report.prosumer_id as usize, &slot, &ctx.tariff);
            summary.load_kwh += report.load_kwh;
            summary.pv_kwh += report.pv_kwh;
            summary.grid_import_kwh += s.grid_import_kwh;
            summary.grid_export_kwh += s.grid_export_kwh;
            energy_error += (report.pv_kwh + report.battery.discharged_kwh + s.grid_import_kwh)
                - (report.load_kwh + report.battery.charged_kwh + s.grid_export_kwh + (s.p2p_bought_kwh - s.p2p_received_kwh));
            if let Some(order) = report.order {
                orders += 1;
                let fill = self.engine.fill(i);
                match order.side {
                    Side::Buy => self.p2p_paid += fill.value,
                    Side::Sell => self.p2p_received += fill.value,
                }
            }
        }
        self.kpi.end_slot(ctx.hours, feeder.overload_kwh);
        self.energy_error_kwh += energy_error.abs();

        // Per node: settlements of its reporters, and its missing prosumers.
        let mut per_node = Vec::new();
        // Every registered node is involved: a node that is gone still has
        // households, which settle with the grid and count as missing.
        let involved = 0..self.nodes.len();
        let mut missing_total = 0u32;
        for index in involved {
            let node = &self.nodes[index];
            let batch = round.batches.get(&index).map_or(&[][..], Vec::as_slice);
            let mut settlements = Vec::with_capacity(batch.len());
            for r in batch {
                let i = reports.binary_search_by_key(&r.prosumer_id, |x| x.prosumer_id).expect("merged");
                settlements.push((r.prosumer_id, self.engine.fill(i), self.engine.settlements()[i]));
            }
            let reported: BTreeSet<ProsumerId> = batch.iter().map(|r| r.prosumer_id).collect();
            let missing: Vec<ProsumerId> = (node.first..node.first + node.count)
                .filter(|id| !reported.contains(id) && !conditions_for(*id, &round.open.adjustments).1)
                .collect();
            missing_total += missing.len() as u32;
            let node = &mut self.nodes[index];
            node.reported_last_round = round.batches.contains_key(&index);
            if node.connected {
                let cleared = NodeCleared {
                    slot: round.open.slot,
                    clearing_price: clearing.clearing_price,
                    matched: clearing.matched,
                    settlements,
                    missing,
                };
                per_node.push((NodeKey { index, generation: node.generation }, cleared));
            }
        }
        summary.missing = missing_total;
        self.missing_reports += missing_total as u64;
        ClearOutcome { summary, orders, per_node }
    }

    // ----- control ----------------------------------------------------------

    pub fn start(&mut self) -> String {
        self.control.started = true;
        self.control.paused = false;
        self.control.steps_left = None;
        format!("started; next slot {}", self.next_slot)
    }

    pub fn pause(&mut self) -> String {
        self.control.paused = true;
        self.control.steps_left = None;
        format!("paused; next slot {}", self.next_slot)
    }

    pub fn resume(&mut self) -> String {
        self.control.started = true;
        self.control.paused = false;
        self.control.steps_left = None;
        format!("resumed; next slot {}", self.next_slot)
    }

    /// Opens exactly `count` more slots, then pauses.
    pub fn step(&mut self, count: u32) -> Result<String, WireError> {
        if !(1..=MAX_STEP).contains(&count) {
            return Err(WireError::invalid("count", format!("must lie in 1..={MAX_STEP}, got {count}")));
        }
        self.control.started = true;
        self.control.paused = true;
        self.control.steps_left = Some(count);
        Ok(format!("stepping {count} slot(s) from slot {}", self.next_slot))
    }

    /// Changes the clock mode; a 0 period or deadline keeps the current one.
    pub fn set_mode(&mut self, mode: ClockMode, slot_period_ms: u64, deadline_ms: u64) -> Result<String, WireError> {
        let check = |field: &str, v: u64, (lo, hi): (u64, u64)| {
            if v == 0 || (lo..=hi).contains(&v) {
                Ok(())
            } else {
                Err(WireError::invalid(field, format!("must lie in {lo}..={hi} (or 0 = unchanged), got {v}")))
            }
        };
        check("slot_period_ms", slot_period_ms, SLOT_PERIOD_MS)?;
        check("deadline_ms", deadline_ms, DEADLINE_MS)?;
        self.control.mode = mode;
        if slot_period_ms > 0 {
            self.control.slot_period_ms = slot_period_ms;
        }
        if deadline_ms > 0 {
            self.control.deadline_ms = deadline_ms;
        }
        Ok(format!(
            "mode {}; slot period {} ms, deadline {} ms",
            mode.name(),
            self.control.slot_period_ms,
            self.control.deadline_ms
        ))
    }

    /// Validates a whole scenario, then schedules all of its events.
    pub fn load_scenario(&mut self, json: &str) -> Result<String, WireError> {
        let events = parse_scenario(json, self.next_slot)?;
        let n = events.len();
        self.scheduled.extend(events);
        self.scheduled.sort_by_key(|e| e.at_slot);
        Ok(format!("scheduled {n} event(s)"))
    }

    /// Validates one event and applies it from the next slot opened.
    pub fn inject(&mut self, event: ScenarioEvent) -> Result<String, WireError> {
        event.validate("event")?;
        self.pending.push(event);
        Ok(format!("{event} from slot {}", self.next_slot))
    }

    fn apply_event(&mut self, event: &ScenarioEvent) {
        match *event {
            ScenarioEvent::Feeder(f) => {
                let unlimited = |kw: f64| if kw == 0.0 { f64::INFINITY } else { kw };
                let grid = GridConfig {
                    feeder_import_limit_kw: unlimited(f.import_limit_kw),
                    feeder_export_limit_kw: unlimited(f.export_limit_kw),
                    ..self.engine.grid().clone()
                };
                // Validated on entry (finite, ≥ 0); a failure here leaves the grid as it was.
                if let Err(e) = self.engine.set_grid(grid) {
                    tracing::warn!(error = %e, "feeder change rejected");
                }
            }
            ref timed => self.effects.start(timed),
        }
    }

    // ----- status -----------------------------------------------------------

    pub fn status(&self) -> StatusSnapshot {
        StatusSnapshot {
            next_slot: self.next_slot,
            open_slot: self.round.as_ref().map(|r| r.open.slot),
            prosumers: self.next_id,
            nodes: self.nodes.len() as u32,
            connected_nodes: self.nodes.iter().filter(|n| n.connected).count() as u32,
            connected_prosumers: self.connected_prosumers(),
            mode: self.control.mode,
            paused: self.control.paused || !self.control.started,
            slot_period_ms: self.control.slot_period_ms,
            deadline_ms: self.control.deadline_ms,
            energy_balance_error_kwh: self.energy_error_kwh,
            money_balance_error: Money(self.p2p_paid.0 - self.p2p_received.0).amount().abs(),
            kpis: self.kpi.finish(),
            missing_reports: self.missing_reports,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use peergrid_core::battery::BatteryStep;
    use peergrid_core::data::synthetic::synthetic_dataset;
    use peergrid_core::safety::OrderIntent;
    use tonic::Code;

    fn state() -> MarketState {
        let ds = Arc::new(synthetic_dataset(3, 2, 60, 1));
        let settings = MarketSettings { min_prosumers: 4, max_batch: 8, insecure_no_auth: true, ..MarketSettings::default() };
        MarketState::new(ds, SimConfig::default(), &settings, 42).unwrap()
    }

    fn infos(first: u32, n: u32) -> Vec<ProsumerInfo> {
        (first..first + n)
            .map(|id| ProsumerInfo { prosumer_id: id, kind: "pv-battery".into(), pv_kwp: 4.0, battery_kwh: 10.0 })
            .collect()
    }

    /// A household with position `net_kwh` and an order for all of it.
    fn report(id: u32, net_kwh: f64, price: i64) -> HouseholdReport {
        let (load, pv) = if net_kwh > 0.0 { (net_kwh, 0.0) } else { (0.0, -net_kwh) };
        let side = if net_kwh > 0.0 { Side::Buy } else { Side::Sell };
        HouseholdReport {
            prosumer_id: id,
            load_kwh: load,
            pv_kwh: pv,
            net_kwh,
            battery: BatteryStep::default(),
            degradation_cost: 0.0,
            ev_shortfall_kwh: 0.0,
            stored_kwh: 0.0,
            order: Some(OrderIntent { side, quantity: Wh::floor_from_kwh(net_kwh.abs()), limit_price: PricePerKwh(price) }),
        }
    }

    /// Two nodes of two prosumers, joined, slot 0 open.
    fn two_nodes() -> (MarketState, NodeKey, NodeKey) {
        let mut s = state();
        let a = s.register("a", 2, "", None).unwrap();
        let b = s.register("b", 2, "", None).unwrap();
        assert_eq!((a.first_prosumer_id, b.first_prosumer_id), (0, 2));
        let ka = s.join(&a.session_id, &infos(0, 2), 0).unwrap();
        assert!(!s.may_open(), "2 of 4 min prosumers");
        let kb = s.join(&b.session_id, &infos(2, 2), 0).unwrap();
        assert!(s.may_open());
        s.open(0, 0);
        (s, ka, kb)
    }

    #[test]
    fn registration_assigns_contiguous_ranges_and_resumes() {
        let mut s = state();
        let a = s.register("a", 3, "", None).unwrap();
        let b = s.register("b", 5, "", None).unwrap();
        assert_eq!((a.first_prosumer_id, b.first_prosumer_id, b.prosumer_count), (0, 3, 5));
        assert_ne!(a.session_id, b.session_id);
        let again = s.register("b-restarted", 5, &b.session_id, None).unwrap();
        assert_eq!(again.first_prosumer_id, 3);
        assert_eq!(s.register("x", 5, "nope", None).unwrap_err().code(), Code::NotFound);
        // A market that restarted adopts a session it does not know, with the
        // claimed range, unless another node holds part of it.
        let adopted = s.register("c", 4, "0123456789abcdef0123456789abcdef", Some(20)).unwrap();
        assert_eq!((adopted.first_prosumer_id, adopted.prosumer_count), (20, 4));
        let clash = s.register("d", 4, "fedcba9876543210fedcba9876543210", Some(22)).unwrap_err();
        assert_eq!(clash.code(), Code::FailedPrecondition);
        assert_eq!(s.register("e", 4, "not-hex", Some(40)).unwrap_err().code(), Code::InvalidArgument);
        let next = s.register("f", 1, "", None).unwrap();
        assert_eq!(next.first_prosumer_id, 24, "new ranges start after adopted ones");
        assert_eq!(s.register("", 1, "", None).unwrap_err().code(), Code::InvalidArgument);
        assert_eq!(s.register("big", 9, "", None).unwrap_err().code(), Code::InvalidArgument, "above max_batch");
        let e = s.join(&a.session_id, &infos(1, 3), 0).unwrap_err();
        assert!(e.to_string().contains("prosumers[0].prosumer_id"), "{e}");
        assert_eq!(s.status().prosumers, 25, "ids 0..25 are assigned: 0..8, the adopted 20..24, then 24");
    }

    #[test]
    fn a_slot_clears_all_reports_and_balances() {
        let (mut s, ka, kb) = two_nodes();
        assert!(!s.round_ready());
        s.submit(ka, 0, vec![report(1, -2.0, 100_000), report(0, 1.5, 150_000)], 1).unwrap();
        assert!(!s.round_ready());
        s.submit(kb, 0, vec![report(2, 0.5, 170_000)], 1).unwrap();
        assert!(s.round_ready());
        let out = s.clear();
        assert_eq!((out.summary.reported, out.summary.missing, out.orders), (3, 1, 3));
        assert!((out.summary.matched_kwh - 2.0).abs() < 1e-12);
        let (_, b) = out.per_node.iter().find(|(k, _)| *k == kb).unwrap();
        assert_eq!(b.missing, [3]);
        assert_eq!(b.settlements.len(), 1);
        let st = s.status();
        assert!(st.energy_balance_error_kwh < 1e-9 && st.money_balance_error == 0.0, "{st:?}");
        assert_eq!((st.kpis.slots, st.missing_reports, st.next_slot), (1, 1, 1));
    }

    #[test]
    fn a_bad_batch_changes_nothing() {
        let (mut s, ka, kb) = two_nodes();
        let before = s.status();
        let cases: Vec<(NodeKey, u64, Vec<HouseholdReport>, Code, &str)> = vec![
            (ka, 1, vec![report(0, 1.0, 150_000)], Code::FailedPrecondition, "slot"),
            (ka, 0, vec![report(0, 1.0, 150_000), report(2, 1.0, 150_000)], Code::PermissionDenied, "reports[1].prosumer_id"),
            (ka, 0, vec![report(0, 1.0, 150_000), report(0, 1.0, 150_000)], Code::InvalidArgument, "reports[1].prosumer_id"),
            (ka, 0, (0..9).map(|_| report(0, 1.0, 150_000)).collect(), Code::ResourceExhausted, "reports"),
            (ka, 0, vec![report(0, 1.0, 9_000_000)], Code::InvalidArgument, "orders[0]"),
            (NodeKey { index: 0, generation: 9 }, 0, vec![], Code::FailedPrecondition, "session"),
        ];
        for (key, slot, reports, code, field) in cases {
            let e = s.submit(key, slot, reports, 5).unwrap_err();
            assert_eq!(e.code(), code, "{e}");
            assert!(e.to_string().contains(field), "{field}: {e}");
            assert_eq!(s.status(), before);
        }
        s.submit(kb, 0, vec![report(2, 1.0, 150_000)], 5).unwrap();
        let e = s.submit(kb, 0, vec![report(3, 1.0, 150_000)], 5).unwrap_err();
        assert_eq!(e.code(), Code::FailedPrecondition, "duplicate batch: {e}");
    }

    #[test]
    fn step_pause_and_scenario_effects() {
        let (mut s, ka, _) = two_nodes();
        s.clear();
        s.pause();
        assert!(!s.may_open());
        let scale =
            crate::scenario::ScaleGroup { first_prosumer_id: 0, last_prosumer_id: 1, pv_scale: 0.5, load_scale: 1.0, slots: 1 };
        s.inject(ScenarioEvent::Scale(scale)).unwrap();
        s.load_scenario(
            r#"{"events": [{"at_slot": 2, "offline": {"first_prosumer_id": 2, "last_prosumer_id": 3, "slots": 1}}]}"#,
        )
        .unwrap();
        s.step(2).unwrap();
        let open = s.open(0, 0);
        assert_eq!(open.slot, 1);
        assert_eq!(open.adjustments.len(), 1);
        assert_eq!(open.adjustments[0].conditions.pv_scale, 0.5);
        s.clear();
        let open = s.open(0, 0);
        assert_eq!(open.adjustments.len(), 1);
        assert!(open.adjustments[0].offline);
        let e = s.submit(ka, 2, vec![report(0, 1.0, 150_000)], 0);
        assert!(e.is_ok());
        let out = s.clear();
        assert_eq!(out.summary.missing, 1, "offline prosumers 2, 3 are not missing; 1 is");
        assert!(!s.may_open(), "paused after the steps");
        assert!(s.status().paused);
        s.resume();
        assert!(s.may_open());
        assert!(s.load_scenario(r#"{"events": [{"at_slot": 0, "feeder": {}}]}"#).is_err(), "past slot");
    }

    #[test]
    fn silent_nodes_are_not_waited_for() {
        let (mut s, ka, _) = two_nodes();
        s.submit(ka, 0, vec![report(0, 1.0, 150_000)], 10).unwrap();
        s.clear();
        // b sent nothing in slot 0 and has been silent past the node timeout.
        s.open(60_000, 0);
        s.submit(ka, 1, vec![report(0, 1.0, 150_000)], 60_000).unwrap();
        assert!(s.round_ready());
    }
}
