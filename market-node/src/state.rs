//! The market's whole state, pure and synchronous: membership, the open
//! round, scenario effects, run control, KPIs and the balance checks.
//!
//! [`MarketState`] is owned by one task ([`crate::clock`]) and driven by
//! method calls; it never does I/O, never reads a clock (callers pass
//! `now_ms`) and never names a generated wire type, so it is unit-tested
//! without a network. Every request is validated completely before anything
//! is stored: a rejected batch, registration or scenario changes nothing.
//!
//! Membership is a lease ([`Node`]): a registration that never joins
//! expires `join_timeout_ms` after `Register`; a node whose stream is gone
//! keeps its id range for `lease_grace_ms` (its households are *absent*,
//! not missing, and can come back with their state), then it expires and
//! its households leave the community. Resuming needs the session's secret.
//! Ids are allocated first-fit over the live ranges, so expired ranges are
//! reused and the id space never fills with ghosts.
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
use peergrid_core::physics::{Envelope, SlotLimits};
use peergrid_core::reward::RewardWeights;
use peergrid_core::rng::derive_seed;
use peergrid_core::settlement::Settlement;
use peergrid_core::simulation::{slot_context, SimConfig};
use peergrid_core::slot_engine::{household_slot, SlotEngine};
use peergrid_core::tariff::GridConfig;
use peergrid_core::units::{Money, PricePerKwh, ProsumerId, Wh};
use peergrid_core::observation::OpenSlot;

use crate::error::MarketError;
use crate::config::{ClockMode, ConfigError, MarketSettings, DEADLINE_MS, SLOT_PERIOD_MS};
use crate::scenario::{parse_scenario, Effects, ScenarioEvent, TimedEvent, MAX_LIVE_EVENTS};

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

/// A node's `Register`, as the market reads it.
#[derive(Clone, Copy, Debug, Default)]
pub struct RegisterRequest<'a> {
    pub name: &'a str,
    pub prosumer_count: u32,
    /// Empty for a new node.
    pub resume_session_id: &'a str,
    pub resume_first_id: Option<ProsumerId>,
    pub resume_secret: &'a str,
}

/// Node names: 1..=64 printable characters.
pub fn check_node_name(name: &str) -> Result<(), MarketError> {
    let chars = name.chars().count();
    if !(1..=MAX_NODE_NAME_CHARS).contains(&chars) || name.chars().any(char::is_control) {
        return Err(MarketError::invalid("node_name", format!("must be 1..={MAX_NODE_NAME_CHARS} printable characters")));
    }
    Ok(())
}

/// What a node gets back from `Register`.
#[derive(Clone, PartialEq)]
pub struct Registration {
    pub session_id: String,
    /// The session's secret (never logged: `Debug` redacts it).
    pub secret: String,
    pub first_prosumer_id: ProsumerId,
    pub prosumer_count: u32,
    pub dataset: String,
    pub slot_minutes: u32,
    pub reward: RewardWeights,
    pub next_slot: u64,
    pub lease_grace_ms: u64,
}

impl std::fmt::Debug for Registration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registration")
            .field("session_id", &self.session_id)
            .field("secret", &"<redacted>")
            .field("first_prosumer_id", &self.first_prosumer_id)
            .field("prosumer_count", &self.prosumer_count)
            .field("next_slot", &self.next_slot)
            .finish_non_exhaustive()
    }
}

/// One hosted prosumer as a node describes it in `Join`.
#[derive(Clone, Debug, PartialEq)]
pub struct ProsumerInfo {
    pub prosumer_id: ProsumerId,
    /// Its declared equipment, which bounds its reports.
    pub envelope: Envelope,
}

/// A registration: a lease on an id range.
#[derive(Clone, Debug)]
struct Node {
    session_id: String,
    /// Proves ownership in `Join` and on resume; never logged.
    secret: String,
    name: String,
    first: ProsumerId,
    count: u32,
    joined: bool,
    connected: bool,
    generation: u64,
    last_seen_ms: u64,
    reported_last_round: bool,
    /// When the lease started to run down: registration (not joined yet)
    /// or the end of its last stream. `None` while connected.
    idle_since_ms: Option<u64>,
    /// Declared equipment of prosumers `first..first + count` (from the
    /// latest `Join`; empty before the first).
    envelopes: Vec<Envelope>,
}

impl Node {
    fn hosts(&self, id: ProsumerId) -> bool {
        id >= self.first && id - self.first < self.count
    }

    fn end(&self) -> ProsumerId {
        self.first + self.count
    }
}

/// Why a lease ended.
#[derive(Clone, Debug, PartialEq)]
pub struct Expired {
    pub name: String,
    pub first: ProsumerId,
    pub count: u32,
    /// It registered but never joined.
    pub never_joined: bool,
}

/// What the market did with a `Hold`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HoldOutcome {
    /// Fast mode: the open slot waits for the node until `until_ms` (clock ms).
    Held { until_ms: u64 },
    /// Real-time mode keeps wall-clock time: counted, not honoured.
    Ignored,
}

/// Compares two secrets in time independent of where they differ.
fn secret_matches(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn is_hex32(s: &str) -> bool {
    s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit())
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
    /// Nodes that asked the market to hold this slot (they wait on the learner).
    held: BTreeSet<usize>,
    opened_ms: u64,
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
    /// Prosumers of nodes within their lease but without a stream.
    pub absent: u32,
    /// How long nodes held the slot past its normal deadline, ms.
    pub held_ms: f64,
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
    pub absent_reports: u64,
    pub absent_prosumers: u32,
    pub holds: u64,
    pub holds_expired: u64,
    pub leases_expired: u64,
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
    lease_grace_ms: u64,
    join_timeout_ms: u64,
    max_hold_ms: u64,
    /// Largest average power one household may draw, kW (bounds load reports).
    max_household_kw: f64,
    started: bool,
    paused: bool,
    steps_left: Option<u32>,
}

pub struct MarketState {
    ds: Arc<Dataset>,
    /// The dataset's PV yield in its sunniest slot, kWh/kWp (bounds PV reports).
    pv_peak_kwh_per_kwp: f64,
    sim: SimConfig,
    start_slot: usize,
    /// With `skip_eval_weeks`: the dataset slots played, in order.
    schedule: Option<Vec<usize>>,
    session_seed: u64,
    control: Control,
    /// Live registrations by index (indices are never reused, so a
    /// [`NodeKey`] of an expired node matches nothing).
    nodes: BTreeMap<usize, Node>,
    next_index: usize,
    /// Ids whose storage is already in the KPIs' capacity (a reused range
    /// hosts the same generated households).
    counted: Vec<bool>,
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
    absent_reports: u64,
    holds: u64,
    holds_expired: u64,
    leases_expired: u64,
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
            pv_peak_kwh_per_kwp: ds.pv_peak_kwh_per_kwp(),
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
                lease_grace_ms: settings.lease_grace_ms,
                join_timeout_ms: settings.join_timeout_ms,
                max_hold_ms: settings.max_hold_ms,
                max_household_kw: settings.max_household_kw,
                started: false,
                paused: false,
                steps_left: None,
            },
            nodes: BTreeMap::new(),
            next_index: 0,
            counted: Vec::new(),
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
            absent_reports: 0,
            holds: 0,
            holds_expired: 0,
            leases_expired: 0,
            ds,
            sim,
        })
    }

    // ----- membership -------------------------------------------------------

    /// Assigns a new node a free contiguous id range (first fit over the
    /// live leases), or gives a resuming node its range back. `secret` is a
    /// fresh unguessable value the caller drew; a new registration keeps it.
    pub fn register(&mut self, request: RegisterRequest<'_>, secret: String, now_ms: u64) -> Result<Registration, MarketError> {
        let RegisterRequest { name, prosumer_count, resume_session_id, resume_first_id, resume_secret } = request;
        check_node_name(name)?;
        let max = MAX_NODE_PROSUMERS.min(self.control.max_batch as u32);
        if !(1..=max).contains(&prosumer_count) {
            return Err(MarketError::invalid("prosumer_count", format!("must lie in 1..={max}, got {prosumer_count}")));
        }
        let index = if resume_session_id.is_empty() {
            let first = self.free_range(prosumer_count).ok_or_else(|| {
                MarketError::exhausted(
                    "prosumer_count",
                    format!("the market hosts at most {MAX_PROSUMERS} prosumers ({} registered)", self.registered_prosumers()),
                )
            })?;
            let index = self.next_index;
            let session_id = format!(
                "{:016x}{:016x}",
                derive_seed(self.session_seed, &format!("session/{index}")),
                derive_seed(self.session_seed, &format!("session-check/{index}"))
            );
            self.insert_node(name, session_id, secret, first, prosumer_count, now_ms)
        } else {
            if !is_hex32(resume_secret) {
                return Err(MarketError::invalid(
                    "resume_secret",
                    "must be the 32 hex characters the market issued with the session",
                ));
            }
            match (self.node_of_session(resume_session_id), resume_first_id) {
                (Ok(index), _) => {
                    let node = &self.nodes[&index];
                    if !secret_matches(&node.secret, resume_secret) {
                        return Err(MarketError::forbidden("resume_secret", "does not match the session"));
                    }
                    if node.count != prosumer_count {
                        return Err(MarketError::invalid(
                            "prosumer_count",
                            format!("a resumed session hosts {} prosumers, got {prosumer_count}", node.count),
                        ));
                    }
                    let node = self.nodes.get_mut(&index).expect("found above");
                    node.name = name.to_owned();
                    if !node.connected {
                        node.idle_since_ms = Some(now_ms);
                    }
                    index
                }
                (Err(_), Some(first)) => {
                    self.adopt_session(name, resume_session_id, resume_secret, first, prosumer_count, now_ms)?
                }
                (Err(e), None) => return Err(e),
            }
        };
        let node = &self.nodes[&index];
        Ok(Registration {
            session_id: node.session_id.clone(),
            secret: node.secret.clone(),
            first_prosumer_id: node.first,
            prosumer_count: node.count,
            dataset: self.ds.name.clone(),
            slot_minutes: self.ds.slot_minutes,
            reward: self.sim.reward.clone(),
            next_slot: self.next_slot,
            lease_grace_ms: self.control.lease_grace_ms,
        })
    }

    fn insert_node(
        &mut self,
        name: &str,
        session_id: String,
        secret: String,
        first: ProsumerId,
        count: u32,
        now_ms: u64,
    ) -> usize {
        let index = self.next_index;
        self.next_index += 1;
        self.nodes.insert(
            index,
            Node {
                session_id,
                secret,
                name: name.to_owned(),
                first,
                count,
                joined: false,
                connected: false,
                generation: 0,
                last_seen_ms: now_ms,
                reported_last_round: true,
                idle_since_ms: Some(now_ms),
                envelopes: Vec::new(),
            },
        );
        index
    }

    /// The lowest id at which `count` ids are free of every live lease.
    fn free_range(&self, count: u32) -> Option<ProsumerId> {
        let mut ranges: Vec<(ProsumerId, ProsumerId)> = self.nodes.values().map(|n| (n.first, n.end())).collect();
        ranges.sort_unstable();
        let mut candidate: ProsumerId = 0;
        for (first, end) in ranges {
            if candidate.checked_add(count)? <= first {
                break;
            }
            candidate = candidate.max(end);
        }
        candidate.checked_add(count).filter(|end| *end <= MAX_PROSUMERS).map(|_| candidate)
    }

    fn registered_prosumers(&self) -> u64 {
        self.nodes.values().map(|n| n.count as u64).sum()
    }

    /// Re-creates a session this market does not know (it restarted, or the
    /// lease expired), with the id range and secret the node holds, if that
    /// range is free.
    fn adopt_session(
        &mut self,
        name: &str,
        session_id: &str,
        secret: &str,
        first: ProsumerId,
        count: u32,
        now_ms: u64,
    ) -> Result<usize, MarketError> {
        if !is_hex32(session_id) {
            return Err(MarketError::invalid("resume_session_id", "must be the 32 hex characters a market issued"));
        }
        let end = first.checked_add(count).filter(|end| *end <= MAX_PROSUMERS).ok_or_else(|| {
            MarketError::invalid("resume_first_prosumer_id", format!("range {first}+{count} exceeds {MAX_PROSUMERS}"))
        })?;
        if let Some(other) = self.nodes.values().find(|n| first < n.end() && n.first < end) {
            return Err(MarketError::precondition(
                "resume_first_prosumer_id",
                format!("ids {first}..{end} overlap node '{}' ({}..{})",
                other.name,
                other.first,
                other.end()
            )));
        }
        Ok(self.insert_node(name, session_id.to_owned(), secret.to_owned(), first, count, now_ms))
    }

    fn node_of_session(&self, session_id: &str) -> Result<usize, MarketError> {
        self.nodes.iter().find(|(_, n)| n.session_id == session_id).map(|(i, _)| *i).ok_or_else(|| {
            MarketError::not_found("session_id", "no such session (register first, or its lease expired)")
        })
    }

    /// Connects a registered node (first `Join`, or a reconnect replacing
    /// the previous connection, which needs the session's secret). The
    /// first join adds its storage to the KPIs.
    pub fn join(
        &mut self,
        session_id: &str,
        secret: &str,
        prosumers: &[ProsumerInfo],
        now_ms: u64,
    ) -> Result<NodeKey, MarketError> {
        let index = self.node_of_session(session_id)?;
        let node = &self.nodes[&index];
        if !secret_matches(&node.secret, secret) {
            return Err(MarketError::forbidden("resume_secret", "does not match the session"));
        }
        if prosumers.len() != node.count as usize {
            return Err(MarketError::invalid(
                "prosumers",
                format!("must describe the node's {} prosumers, got {}", node.count, prosumers.len()),
            ));
        }
        for (i, p) in prosumers.iter().enumerate() {
            let want = node.first + i as u32;
            if p.prosumer_id != want {
                return Err(MarketError::invalid(
                    format!("prosumers[{i}].prosumer_id"),
                    format!("must be {want} (ids in range order), got {}", p.prosumer_id),
                ));
            }
            p.envelope.validate(&format!("prosumers[{i}]")).map_err(MarketError::from)?;
        }
        let (first, end) = (node.first, node.end());
        if !node.joined {
            // One storage addition per prosumer in id order: the same float
            // summation as the reference simulator's capacity when nodes
            // join in id order. A reused range hosts the same generated
            // households, whose storage is counted once.
            if self.counted.len() < end as usize {
                self.counted.resize(end as usize, false);
            }
            for p in prosumers {
                let seen = std::mem::replace(&mut self.counted[p.prosumer_id as usize], true);
                let capacity = p.envelope.battery.map_or(0.0, |b| b.capacity_kwh);
                self.kpi.add_households(end as usize, if seen { 0.0 } else { capacity });
            }
        }
        let node = self.nodes.get_mut(&index).expect("found above");
        debug_assert_eq!((node.first, node.end()), (first, end));
        node.envelopes = prosumers.iter().map(|p| p.envelope).collect();
        node.joined = true;
        node.connected = true;
        node.idle_since_ms = None;
        node.generation += 1;
        node.last_seen_ms = now_ms;
        node.reported_last_round = true;
        let generation = node.generation;
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
        Ok(NodeKey { index, generation })
    }

    fn is_current(&self, key: NodeKey) -> bool {
        self.nodes.get(&key.index).is_some_and(|n| n.connected && n.generation == key.generation)
    }

    /// The connection `key` ended; a newer connection of the node is
    /// unaffected. The node's lease starts to run down.
    pub fn disconnect(&mut self, key: NodeKey, now_ms: u64) -> bool {
        if !self.is_current(key) {
            return false;
        }
        let node = self.nodes.get_mut(&key.index).expect("current");
        node.connected = false;
        node.idle_since_ms = Some(now_ms);
        if let Some(round) = self.round.as_mut() {
            round.waited.remove(&key.index);
            round.held.remove(&key.index);
        }
        true
    }

    /// Ends the leases that ran out by `now_ms`: registrations that never
    /// joined within `join_timeout_ms`, and nodes without a stream for
    /// `lease_grace_ms`. Their households leave the community.
    pub fn expire_leases(&mut self, now_ms: u64) -> Vec<Expired> {
        let (grace, join) = (self.control.lease_grace_ms, self.control.join_timeout_ms);
        let due: Vec<usize> = self
            .nodes
            .iter()
            .filter(|(_, n)| {
                n.idle_since_ms.is_some_and(|t| now_ms.saturating_sub(t) > if n.joined { grace } else { join.min(grace) })
            })
            .map(|(i, _)| *i)
            .collect();
        let mut expired = Vec::with_capacity(due.len());
        for index in due {
            let n = self.nodes.remove(&index).expect("listed above");
            if let Some(round) = self.round.as_mut() {
                round.expected.retain(|i| *i != index);
                round.waited.remove(&index);
                round.held.remove(&index);
            }
            self.leases_expired += 1;
            expired.push(Expired { name: n.name, first: n.first, count: n.count, never_joined: !n.joined });
        }
        expired
    }

    /// When the next lease may expire (clock ms), if any is running down.
    pub fn next_lease_expiry(&self) -> Option<u64> {
        let (grace, join) = (self.control.lease_grace_ms, self.control.join_timeout_ms);
        self.nodes.values().filter_map(|n| n.idle_since_ms.map(|t| t + if n.joined { grace } else { join.min(grace) } + 1)).min()
    }

    pub fn connected_nodes(&self) -> impl Iterator<Item = NodeKey> + '_ {
        self.nodes.iter().filter(|(_, n)| n.connected).map(|(index, n)| NodeKey { index: *index, generation: n.generation })
    }

    pub fn connected_prosumers(&self) -> u64 {
        self.nodes.values().filter(|n| n.connected).map(|n| n.count as u64).sum()
    }

    /// Prosumers of joined nodes that are within their lease but without a stream.
    pub fn absent_prosumers(&self) -> u64 {
        self.nodes.values().filter(|n| n.joined && !n.connected).map(|n| n.count as u64).sum()
    }

    pub fn node_name(&self, index: usize) -> &str {
        self.nodes.get(&index).map_or("?", |n| n.name.as_str())
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
        for (&i, n) in self.nodes.iter().filter(|(_, n)| n.connected) {
            expected.push(i);
            let silent = !n.reported_last_round && now_ms.saturating_sub(n.last_seen_ms) > timeout;
            if !silent {
                waited.insert(i);
            }
        }
        self.round = Some(Round {
            open: Arc::clone(&open),
            expected,
            waited,
            batches: BTreeMap::new(),
            held: BTreeSet::new(),
            opened_ms: now_ms,
        });
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

    /// The open round, if `key` is the node's current connection, `slot` is
    /// the open slot and the node has not sent its batch for it yet; `what`
    /// ("a batch", "a hold") names the message in the error.
    fn open_round_for(&self, key: NodeKey, slot: u64, what: &str) -> Result<&Round, MarketError> {
        if !self.is_current(key) {
            return Err(MarketError::precondition("session", "this connection is not (or no longer) joined"));
        }
        let Some(round) = self.round.as_ref() else {
            return Err(MarketError::precondition("slot", format!("no slot is open, got {what} for slot {slot}")));
        };
        if slot != round.open.slot {
            return Err(MarketError::precondition(
                "slot",
                format!("the open slot is {}, got {what} for slot {slot}", round.open.slot),
            ));
        }
        if round.batches.contains_key(&key.index) {
            return Err(MarketError::precondition("slot", format!("this node already sent its batch for slot {slot}")));
        }
        Ok(round)
    }

    /// Validates a node's whole batch for `slot` and stores it; on any
    /// error nothing is stored. Reports must already be wire-validated
    /// (finite, in bounds, order consistent with the position).
    pub fn submit(&mut self, key: NodeKey, slot: u64, reports: Vec<HouseholdReport>, now_ms: u64) -> Result<usize, MarketError> {
        let round = self.open_round_for(key, slot, "a batch")?;
        if reports.len() > self.control.max_batch {
            return Err(MarketError::exhausted(
                "reports",
                format!("{} reports exceed the batch limit of {}", reports.len(), self.control.max_batch),
            ));
        }
        let node = &self.nodes[&key.index];
        let ctx = &round.open.ctx;
        let limits = SlotLimits {
            hours: ctx.hours,
            hour: ctx.hour,
            pv_peak_kwh_per_kwp: self.pv_peak_kwh_per_kwp,
            max_household_kw: self.control.max_household_kw,
        };
        let mut seen: BTreeMap<ProsumerId, usize> = BTreeMap::new();
        for (i, r) in reports.iter().enumerate() {
            // Built only on error: formatting a path per valid report was a
            // measurable share of a 10,000-prosumer slot.
            let field = || format!("reports[{i}].prosumer_id");
            if !node.hosts(r.prosumer_id) {
                return Err(MarketError::forbidden(
                    field(),
                    format!(
                        "prosumer {} is not hosted by this node (it hosts {}..{})",
                        r.prosumer_id,
                        node.first,
                        node.first + node.count
                    ),
                ));
            }
            if let Some(j) = seen.insert(r.prosumer_id, i) {
                return Err(MarketError::invalid(field(), format!("duplicate prosumer id {} (also reports[{j}])", r.prosumer_id)));
            }
            let (conditions, offline) = conditions_for(r.prosumer_id, &round.open.adjustments);
            if offline {
                return Err(MarketError::precondition(
                    field(),
                    format!("prosumer {} is offline in slot {slot} and must not report", r.prosumer_id),
                ));
            }
            let envelope = &node.envelopes[(r.prosumer_id - node.first) as usize];
            envelope.check(r, &limits, conditions, &|| format!("reports[{i}]")).map_err(MarketError::from)?;
        }
        let mut sorted = reports;
        sorted.sort_by_key(|r| r.prosumer_id);
        SlotEngine::check_reports(&sorted, &round.open.ctx.tariff).map_err(MarketError::from)?;
        let n = sorted.len();
        let node = self.nodes.get_mut(&key.index).expect("current");
        node.last_seen_ms = now_ms;
        let round = self.round.as_mut().expect("checked above");
        round.held.remove(&key.index);
        round.batches.insert(key.index, sorted);
        Ok(n)
    }

    /// A node asks the market to hold the open slot for it (it waits for the
    /// next policy version). Fast mode holds the slot at most `max_hold_ms`
    /// after it opened; real-time mode keeps wall-clock time and only counts it.
    pub fn hold(&mut self, key: NodeKey, slot: u64, now_ms: u64) -> Result<HoldOutcome, MarketError> {
        self.open_round_for(key, slot, "a hold")?;
        let mode = self.control.mode;
        let max_hold = self.control.max_hold_ms;
        self.nodes.get_mut(&key.index).expect("current").last_seen_ms = now_ms;
        let round = self.round.as_mut().expect("checked above");
        if mode == ClockMode::RealTime {
            return Ok(HoldOutcome::Ignored);
        }
        round.waited.insert(key.index);
        if round.held.insert(key.index) && round.held.len() == 1 {
            self.holds += 1;
        }
        Ok(HoldOutcome::Held { until_ms: round.opened_ms + max_hold })
    }

    /// Slots held so far, and holds cut short at `max_hold_ms`.
    pub fn hold_counters(&self) -> (u64, u64) {
        (self.holds, self.holds_expired)
    }

    /// Whether nodes hold the open slot (in fast mode its deadline then
    /// extends to `max_hold_ms` after the opening).
    pub fn held(&self) -> bool {
        self.round.as_ref().is_some_and(|r| !r.held.is_empty())
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
        // Only nodes with a stream can be missing: a node within its lease
        // but without a stream is absent (its households settle with the
        // grid on their node when it is back), and expired nodes are gone.
        let mut per_node = Vec::new();
        let mut missing_total = 0u32;
        let mut absent_total = 0u32;
        let indices: Vec<usize> = self.nodes.keys().copied().collect();
        for index in indices {
            let node = &self.nodes[&index];
            let batch = round.batches.get(&index).map_or(&[][..], Vec::as_slice);
            if !node.connected {
                if node.joined && batch.is_empty() {
                    absent_total += node.count;
                }
                continue;
            }
            let mut settlements = Vec::with_capacity(batch.len());
            for r in batch {
                let i = reports.binary_search_by_key(&r.prosumer_id, |x| x.prosumer_id).expect("merged");
                settlements.push((r.prosumer_id, self.engine.fill(i), self.engine.settlements()[i]));
            }
            let reported: BTreeSet<ProsumerId> = batch.iter().map(|r| r.prosumer_id).collect();
            let missing: Vec<ProsumerId> = (node.first..node.end())
                .filter(|id| !reported.contains(id) && !conditions_for(*id, &round.open.adjustments).1)
                .collect();
            missing_total += missing.len() as u32;
            if round.held.contains(&index) {
                self.holds_expired += 1;
            }
            let node = self.nodes.get_mut(&index).expect("listed");
            node.reported_last_round = round.batches.contains_key(&index);
            let cleared = NodeCleared {
                slot: round.open.slot,
                clearing_price: clearing.clearing_price,
                matched: clearing.matched,
                settlements,
                missing,
            };
            per_node.push((NodeKey { index, generation: node.generation }, cleared));
        }
        summary.absent = absent_total;
        self.absent_reports += absent_total as u64;
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
    pub fn step(&mut self, count: u32) -> Result<String, MarketError> {
        if !(1..=MAX_STEP).contains(&count) {
            return Err(MarketError::invalid("count", format!("must lie in 1..={MAX_STEP}, got {count}")));
        }
        self.control.started = true;
        self.control.paused = true;
        self.control.steps_left = Some(count);
        Ok(format!("stepping {count} slot(s) from slot {}", self.next_slot))
    }

    /// Changes the clock mode; a 0 period or deadline keeps the current one.
    pub fn set_mode(&mut self, mode: ClockMode, slot_period_ms: u64, deadline_ms: u64) -> Result<String, MarketError> {
        let check = |field: &str, v: u64, (lo, hi): (u64, u64)| {
            if v == 0 || (lo..=hi).contains(&v) {
                Ok(())
            } else {
                Err(MarketError::invalid(field, format!("must lie in {lo}..={hi} (or 0 = unchanged), got {v}")))
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
    pub fn load_scenario(&mut self, json: &str) -> Result<String, MarketError> {
        let events = parse_scenario(json, self.next_slot)?;
        let n = events.len();
        self.room_for_events(n, "scenario_json.events")?;
        self.scheduled.extend(events);
        self.scheduled.sort_by_key(|e| e.at_slot);
        Ok(format!("scheduled {n} event(s)"))
    }

    /// Validates one event and applies it from the next slot opened.
    pub fn inject(&mut self, event: ScenarioEvent) -> Result<String, MarketError> {
        event.validate("event")?;
        self.room_for_events(1, "event")?;
        self.pending.push(event);
        Ok(format!("{event} from slot {}", self.next_slot))
    }

    /// Whether `n` more events fit beside those in force, pending and scheduled.
    fn room_for_events(&self, n: usize, field: &str) -> Result<(), MarketError> {
        let live = self.effects.len() + self.pending.len() + self.scheduled.len();
        if live + n > MAX_LIVE_EVENTS {
            return Err(MarketError::exhausted(
                field,
                format!("{live} events in force or scheduled, {n} more exceed the limit of {MAX_LIVE_EVENTS}"),
            ));
        }
        Ok(())
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
            prosumers: self.registered_prosumers().min(u32::MAX as u64) as u32,
            nodes: self.nodes.len() as u32,
            connected_nodes: self.nodes.values().filter(|n| n.connected).count() as u32,
            connected_prosumers: self.connected_prosumers(),
            mode: self.control.mode,
            paused: self.control.paused || !self.control.started,
            slot_period_ms: self.control.slot_period_ms,
            deadline_ms: self.control.deadline_ms,
            energy_balance_error_kwh: self.energy_error_kwh,
            money_balance_error: Money(self.p2p_paid.0 - self.p2p_received.0).amount().abs(),
            kpis: Kpis { prosumers: self.registered_prosumers(), ..self.kpi.finish() },
            missing_reports: self.missing_reports,
            absent_reports: self.absent_reports,
            absent_prosumers: self.absent_prosumers().min(u32::MAX as u64) as u32,
            holds: self.holds,
            holds_expired: self.holds_expired,
            leases_expired: self.leases_expired,
        }
    }
}

#[cfg(test)]
#[path = "state_props.rs"]
mod props;

#[cfg(test)]
mod tests {
    use super::*;
    use peergrid_core::battery::BatteryStep;
    use peergrid_core::data::synthetic::synthetic_dataset;
    use peergrid_core::prosumer::ProsumerKind;
    use peergrid_core::safety::OrderIntent;
    use peergrid_proto::WireError;
    use tonic::Code;

    /// The gRPC code a refusal leaves the market with (mapped at the edge).
    trait WireCode {
        fn code(&self) -> Code;
    }

    impl WireCode for MarketError {
        fn code(&self) -> Code {
            WireError::from(self.clone()).code()
        }
    }

    fn state() -> MarketState {
        let ds = Arc::new(synthetic_dataset(3, 2, 60, 1));
        let settings = MarketSettings { min_prosumers: 4, max_batch: 8, insecure_no_auth: true, ..MarketSettings::default() };
        MarketState::new(ds, SimConfig::default(), &settings, 42).unwrap()
    }

    const SECRET: &str = "00112233445566778899aabbccddeeff";

    fn reg(s: &mut MarketState, name: &str, count: u32) -> Result<Registration, MarketError> {
        s.register(RegisterRequest { name, prosumer_count: count, ..RegisterRequest::default() }, SECRET.replace('0', "f"), 0)
    }

    fn resume(
        s: &mut MarketState,
        name: &str,
        count: u32,
        session: &str,
        first: Option<u32>,
        secret: &str,
    ) -> Result<Registration, MarketError> {
        let request = RegisterRequest {
            name,
            prosumer_count: count,
            resume_session_id: session,
            resume_first_id: first,
            resume_secret: secret,
        };
        s.register(request, SECRET.into(), 0)
    }

    /// PV-only households with panels large enough for any test position.
    fn infos(first: u32, n: u32) -> Vec<ProsumerInfo> {
        (first..first + n)
            .map(|id| ProsumerInfo {
                prosumer_id: id,
                envelope: Envelope { kind: ProsumerKind::PvOnly, pv_kwp: 100.0, battery: None, ev: None },
            })
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
        let a = reg(&mut s, "a", 2).unwrap();
        let b = reg(&mut s, "b", 2).unwrap();
        assert_eq!((a.first_prosumer_id, b.first_prosumer_id), (0, 2));
        let ka = s.join(&a.session_id, &a.secret, &infos(0, 2), 0).unwrap();
        assert!(!s.may_open(), "2 of 4 min prosumers");
        let kb = s.join(&b.session_id, &b.secret, &infos(2, 2), 0).unwrap();
        assert!(s.may_open());
        s.open(0, 0);
        (s, ka, kb)
    }

    #[test]
    fn registration_assigns_contiguous_ranges_and_resumes() {
        let mut s = state();
        let a = reg(&mut s, "a", 3).unwrap();
        let b = reg(&mut s, "b", 5).unwrap();
        assert_eq!((a.first_prosumer_id, b.first_prosumer_id, b.prosumer_count), (0, 3, 5));
        assert_ne!(a.session_id, b.session_id);
        let again = resume(&mut s, "b-restarted", 5, &b.session_id, None, &b.secret).unwrap();
        assert_eq!((again.first_prosumer_id, again.secret.as_str()), (3, b.secret.as_str()));
        assert_eq!(resume(&mut s, "x", 5, "nope", None, SECRET).unwrap_err().code(), Code::NotFound);
        // A market that restarted adopts a session it does not know, with the
        // claimed range and secret, unless another node holds part of it.
        let adopted = resume(&mut s, "c", 4, "0123456789abcdef0123456789abcdef", Some(20), SECRET).unwrap();
        assert_eq!((adopted.first_prosumer_id, adopted.prosumer_count, adopted.secret.as_str()), (20, 4, SECRET));
        let clash = resume(&mut s, "d", 4, "fedcba9876543210fedcba9876543210", Some(22), SECRET).unwrap_err();
        assert_eq!(clash.code(), Code::FailedPrecondition);
        assert_eq!(resume(&mut s, "e", 4, "not-hex", Some(40), SECRET).unwrap_err().code(), Code::InvalidArgument);
        let next = reg(&mut s, "f", 1).unwrap();
        assert_eq!(next.first_prosumer_id, 8, "first fit: the gap before the adopted range");
        assert_eq!(reg(&mut s, "", 1).unwrap_err().code(), Code::InvalidArgument);
        assert_eq!(reg(&mut s, "big", 9).unwrap_err().code(), Code::InvalidArgument, "above max_batch");
        let e = s.join(&a.session_id, &a.secret, &infos(1, 3), 0).unwrap_err();
        assert!(e.to_string().contains("prosumers[0].prosumer_id"), "{e}");
        assert_eq!(s.status().prosumers, 13, "3 + 5 + 4 + 1 registered prosumers");
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
            // Beyond the declared equipment (100 kWp, no battery).
            (ka, 0, vec![report(0, -5000.0, 150_000)], Code::InvalidArgument, "reports[0].pv_kwh"),
            (
                ka,
                0,
                vec![HouseholdReport { load_kwh: 1e4, net_kwh: 1e4, order: None, ..report(0, 1.0, 0) }],
                Code::InvalidArgument,
                "reports[0].load_kwh",
            ),
            (
                ka,
                0,
                vec![HouseholdReport { stored_kwh: 10.0, ..report(0, 1.0, 150_000) }],
                Code::InvalidArgument,
                "reports[0].stored_kwh",
            ),
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

    #[test]
    fn a_bare_session_id_grants_nothing() {
        let mut s = state();
        let a = reg(&mut s, "a", 2).unwrap();
        let ka = s.join(&a.session_id, &a.secret, &infos(0, 2), 0).unwrap();
        // Another holder of the agent token knows the session id, not the secret.
        let wrong = "0123456789abcdef0123456789abcdef";
        assert_eq!(s.join(&a.session_id, wrong, &infos(0, 2), 0).unwrap_err().code(), Code::PermissionDenied);
        assert_eq!(resume(&mut s, "thief", 2, &a.session_id, Some(0), wrong).unwrap_err().code(), Code::PermissionDenied);
        assert_eq!(resume(&mut s, "thief", 2, &a.session_id, None, "").unwrap_err().code(), Code::InvalidArgument);
        assert!(s.is_current(ka), "the real node keeps its connection");
        // The node itself reconnects with the secret and replaces its old connection.
        let kb = s.join(&a.session_id, &a.secret, &infos(0, 2), 5).unwrap();
        assert!(s.is_current(kb) && !s.is_current(ka));
        assert!(!format!("{a:?}").contains(&a.secret), "Debug redacts the secret");
    }

    #[test]
    fn leases_expire_and_ranges_are_reused() {
        let settings = MarketSettings {
            min_prosumers: 1,
            max_batch: 8,
            lease_grace_ms: 1_000,
            join_timeout_ms: 200,
            insecure_no_auth: true,
            ..MarketSettings::default()
        };
        let mut s = MarketState::new(Arc::new(synthetic_dataset(3, 2, 60, 1)), SimConfig::default(), &settings, 42).unwrap();
        let a = reg(&mut s, "a", 4).unwrap();
        let ka = s.join(&a.session_id, &a.secret, &infos(0, 4), 0).unwrap();
        // Registrations that never join expire quickly and free their ids.
        for _ in 0..3 {
            reg(&mut s, "squatter", 8).unwrap();
        }
        assert_eq!(s.status().prosumers, 28);
        assert_eq!(s.expire_leases(150).len(), 0);
        let gone = s.expire_leases(201);
        assert!(gone.len() == 3 && gone.iter().all(|e| e.never_joined), "{gone:?}");
        assert_eq!(s.status().prosumers, 4);
        // A node without a stream is absent, not missing, until its grace ends.
        s.open(300, 0);
        s.disconnect(ka, 300);
        let out = s.clear();
        assert_eq!((out.summary.missing, out.summary.absent), (0, 4));
        assert_eq!(s.status().absent_prosumers, 4);
        // It comes back within the grace: same range, nothing expired.
        assert_eq!(s.expire_leases(1_200).len(), 0);
        let back = resume(&mut s, "a", 4, &a.session_id, Some(0), &a.secret).unwrap();
        assert_eq!(back.first_prosumer_id, 0);
        let ka = s.join(&a.session_id, &a.secret, &infos(0, 4), 1_250).unwrap();
        s.disconnect(ka, 1_300);
        assert_eq!(s.expire_leases(2_300).len(), 0);
        let gone = s.expire_leases(2_301);
        assert_eq!((gone.len(), gone[0].never_joined), (1, false));
        let st = s.status();
        assert_eq!((st.prosumers, st.absent_prosumers, st.nodes, st.leases_expired), (0, 0, 0, 4));
        // Its ids are free again, and a market that forgot the session
        // re-creates it from the node's claim.
        assert_eq!(reg(&mut s, "new", 2).unwrap().first_prosumer_id, 0);
        assert_eq!(resume(&mut s, "a", 4, &a.session_id, Some(0), &a.secret).unwrap_err().code(), Code::FailedPrecondition);
        assert_eq!(resume(&mut s, "a", 4, &a.session_id, Some(2), &a.secret).unwrap().first_prosumer_id, 2);
    }

    #[test]
    fn a_hold_extends_the_fast_deadline_and_real_time_ignores_it() {
        let (mut s, ka, kb) = two_nodes();
        assert_eq!(s.hold(ka, 0, 10).unwrap(), HoldOutcome::Held { until_ms: 60_000 });
        assert!(s.held());
        assert_eq!(s.hold(ka, 1, 10).unwrap_err().code(), Code::FailedPrecondition, "not the open slot");
        s.submit(kb, 0, vec![report(2, 0.5, 170_000)], 20).unwrap();
        assert!(!s.round_ready(), "a waits for the learner");
        s.submit(ka, 0, vec![report(0, 1.5, 150_000)], 4_000).unwrap();
        assert!(s.round_ready() && !s.held());
        assert_eq!(s.hold(kb, 0, 4_000).unwrap_err().code(), Code::FailedPrecondition, "already reported");
        s.clear();
        assert_eq!(s.hold_counters(), (1, 0));
        // Cut short: the slot clears while a still holds.
        s.open(5_000, 0);
        s.hold(ka, 1, 5_000).unwrap();
        s.clear();
        assert_eq!(s.hold_counters(), (2, 1));
        s.set_mode(ClockMode::RealTime, 0, 0).unwrap();
        s.open(6_000, 0);
        assert_eq!(s.hold(ka, 2, 6_000).unwrap(), HoldOutcome::Ignored);
        assert!(!s.held());
    }
}
