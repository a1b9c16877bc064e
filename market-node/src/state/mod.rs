//! The market's whole state, pure and synchronous, composed of one part
//! per concern:
//!
//! - `membership.rs`: nodes, registrations and their leases, sessions and
//!   secrets, id ranges (first fit, adopt on resume), expiry;
//! - `round.rs`: the open round — opening a slot, whom it waits for, batches
//!   checked whole and stored, holds, readiness;
//! - `control.rs`: run control (start, pause, resume, step, mode) and the
//!   scenario (load, inject, the effects in force);
//! - `ledger.rs`: clearing and settling a round exactly as the reference
//!   simulator does, KPIs, balances, summaries, counters.
//!
//! [`MarketState`] is owned by one task ([`crate::clock`]) and driven by
//! method calls; it composes the parts where a step spans them (a join
//! connects a lease, counts storage, admits the node to the open round).
//! It never does I/O, never reads a clock (callers pass `now_ms`) and never
//! names a wire type: it refuses with [`MarketError`], which the gRPC edge
//! maps to the wire. Every request is validated completely before anything
//! is stored: a rejected batch, registration or scenario changes nothing.

mod control;
mod ledger;
mod membership;
mod round;

#[cfg(test)]
mod fixtures;
#[cfg(test)]
mod props;

use std::sync::Arc;

use peergrid_core::data::Dataset;
use peergrid_core::household::HouseholdReport;
use peergrid_core::observation::OpenSlot;
use peergrid_core::physics::Envelope;
use peergrid_core::reward::RewardWeights;
use peergrid_core::simulation::{demand_period, slot_context, SimConfig};
use peergrid_core::units::ProsumerId;

pub(crate) use ledger::{ClearOutcome, SlotSummary, StatusSnapshot};
pub(crate) use round::{check_open_slot, HoldOutcome};

use crate::config::{ClockMode, ConfigError, MarketSettings};
use crate::error::MarketError;
use crate::scenario::ScenarioEvent;
use control::Control;
use ledger::Ledger;
use membership::Membership;
use round::Rounds;

// ----- how callers speak of nodes (membership's requests and answers) ------

/// A node's connection: its index and which (re)connection this is, so
/// messages of a replaced connection are ignored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct NodeKey {
    pub index: usize,
    pub generation: u64,
}

/// A node's `Register`, as the market reads it.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct RegisterRequest<'a> {
    pub name: &'a str,
    pub prosumer_count: u32,
    /// Empty for a new node.
    pub resume_session_id: &'a str,
    pub resume_first_id: Option<ProsumerId>,
    pub resume_secret: &'a str,
}

/// One hosted prosumer as a node describes it in `Join`.
#[derive(Clone, Debug, PartialEq)]
pub struct ProsumerInfo {
    pub prosumer_id: ProsumerId,
    /// Its declared equipment, which bounds its reports; valid
    /// (`Envelope::validate`), as the edge checked.
    pub envelope: Envelope,
}

/// Why a lease ended.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Expired {
    pub name: String,
    pub first: ProsumerId,
    pub count: u32,
    /// It registered but never joined.
    pub never_joined: bool,
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

/// The market's state: the parts, and the dataset and simulation
/// settings every slot is built from.
pub(crate) struct MarketState {
    ds: Arc<Dataset>,
    sim: SimConfig,
    members: Membership,
    rounds: Rounds,
    control: Control,
    ledger: Ledger,
}

impl MarketState {
    /// `session_seed` makes session ids unpredictable across runs.
    pub(crate) fn new(
        ds: Arc<Dataset>,
        sim: SimConfig,
        settings: &MarketSettings,
        session_seed: u64,
    ) -> Result<MarketState, ConfigError> {
        Ok(MarketState {
            rounds: Rounds::new(&ds, settings)?,
            members: Membership::new(settings, session_seed),
            control: Control::new(settings),
            ledger: Ledger::new(&sim),
            ds,
            sim,
        })
    }

    // ----- membership -------------------------------------------------------

    /// Assigns a new node a free contiguous id range (first fit over the
    /// live leases), or gives a resuming node its range back. `secret` is a
    /// fresh unguessable value the caller drew; a new registration keeps it.
    pub(crate) fn register(
        &mut self,
        request: RegisterRequest<'_>,
        secret: String,
        now_ms: u64,
    ) -> Result<Registration, MarketError> {
        let node = self.members.register(request, secret, now_ms)?;
        let (session_id, secret, first, count) = node.session();
        Ok(Registration {
            session_id: session_id.to_owned(),
            secret: secret.to_owned(),
            first_prosumer_id: first,
            prosumer_count: count,
            dataset: self.ds.name.clone(),
            slot_minutes: self.ds.slot_minutes,
            reward: self.sim.reward.clone(),
            next_slot: self.rounds.next_slot(),
            lease_grace_ms: self.members.lease_grace_ms(),
        })
    }

    /// Connects a registered node (first `Join`, or a reconnect replacing
    /// the previous connection, which needs the session's secret). The
    /// first join adds its storage to the KPIs; a node joining mid-slot is
    /// waited for in the open round.
    pub(crate) fn join(
        &mut self,
        session_id: &str,
        secret: &str,
        prosumers: &[ProsumerInfo],
        now_ms: u64,
    ) -> Result<NodeKey, MarketError> {
        let index = self.members.check_join(session_id, secret, prosumers)?;
        let node = self.members.get(index).expect("checked");
        if !node.joined {
            self.ledger.add_households(prosumers, node.end());
        }
        let key = self.members.connect(index, prosumers, now_ms);
        self.rounds.admit(index);
        self.control.start_at_quorum(self.members.connected_prosumers());
        Ok(key)
    }

    /// The connection `key` ended; a newer connection of the node is
    /// unaffected. The node's lease starts to run down.
    pub(crate) fn disconnect(&mut self, key: NodeKey, now_ms: u64) -> bool {
        let current = self.members.disconnect(key, now_ms);
        if current {
            self.rounds.node_left(key.index);
        }
        current
    }

    /// Ends the leases that ran out by `now_ms`: registrations that never
    /// joined within `join_timeout_ms`, and nodes without a stream for
    /// `lease_grace_ms`. Their households leave the community.
    pub(crate) fn expire_leases(&mut self, now_ms: u64) -> Vec<Expired> {
        let mut expired = Vec::new();
        for (index, e) in self.members.expire(now_ms) {
            self.rounds.node_expired(index);
            expired.push(e);
        }
        expired
    }

    pub(crate) fn connected_nodes(&self) -> impl Iterator<Item = NodeKey> + '_ {
        self.members.connected_nodes()
    }

    pub(crate) fn connected_prosumers(&self) -> u64 {
        self.members.connected_prosumers()
    }

    /// Prosumers of joined nodes that are within their lease but without a stream.
    pub(crate) fn absent_prosumers(&self) -> u64 {
        self.members.absent_prosumers()
    }

    pub(crate) fn node_name(&self, index: usize) -> &str {
        self.members.node_name(index)
    }

    // ----- the clock's questions -------------------------------------------

    pub(crate) fn mode(&self) -> ClockMode {
        self.control.mode()
    }

    pub(crate) fn deadline_ms(&self) -> u64 {
        self.control.deadline_ms()
    }

    pub(crate) fn slot_period_ms(&self) -> u64 {
        self.control.slot_period_ms()
    }

    /// The next slot to open (cheap: the clock asks after every command).
    pub(crate) fn next_slot(&self) -> u64 {
        self.rounds.next_slot()
    }

    pub(crate) fn open_slot(&self) -> Option<&Arc<OpenSlot>> {
        self.rounds.open_slot()
    }

    /// The open slot and the price bounds its orders must respect (the
    /// clock publishes its own copy to the edge; the tests ask the state).
    #[cfg(test)]
    pub(crate) fn open_bounds(&self) -> Option<(u64, peergrid_core::market::PriceBounds)> {
        self.rounds.open_bounds()
    }

    /// Whether the run has reached `max_slots`.
    pub(crate) fn finished(&self) -> bool {
        self.control.finished(self.rounds.next_slot())
    }

    /// Whether a new slot may open now (no round open, started, not paused
    /// or stepping, below `max_slots`; fast mode also needs a connected node).
    pub(crate) fn may_open(&self) -> bool {
        !self.rounds.is_open()
            && self.control.may_open(self.rounds.next_slot(), self.members.connected_prosumers())
    }

    /// Fast mode: every node waited for has sent its batch.
    pub(crate) fn round_ready(&self) -> bool {
        self.rounds.ready()
    }

    // ----- a slot: open, submit, hold, clear --------------------------------

    /// Opens the next slot: applies due scenario events, builds its context
    /// and adjustments, and fixes which nodes are expected.
    pub(crate) fn open(&mut self, now_ms: u64, deadline_unix_ms: i64) -> Arc<OpenSlot> {
        assert!(!self.rounds.is_open(), "a slot is already open");
        let slot = self.rounds.next_slot();
        for feeder in self.control.start_due_events(slot) {
            self.ledger.set_feeder(feeder);
        }
        let data_slot = self.rounds.data_slot(slot, &self.ds);
        let last_price = self.ledger.last_price();
        let mut ctx = slot_context(&self.ds, &self.sim, data_slot, last_price);
        ctx.last_slot = self.ledger.last_slot();
        let adjustments = self.control.apply_effects(&mut ctx, last_price.is_none());
        let open = Arc::new(OpenSlot { slot, ctx, deadline_unix_ms, adjustments });
        self.rounds.begin(Arc::clone(&open), &self.members, now_ms);
        self.control.slot_opened();
        open
    }

    /// Validates a node's whole batch for `slot` and stores it; on any
    /// error nothing is stored. Reports must already be wire-validated
    /// (finite, in bounds, order consistent with the position; at most the
    /// batch limit of them, which the edge checks before decoding).
    pub(crate) fn submit(
        &mut self,
        key: NodeKey,
        slot: u64,
        reports: Vec<HouseholdReport>,
        now_ms: u64,
    ) -> Result<usize, MarketError> {
        self.rounds.submit(&mut self.members, key, slot, reports, now_ms)
    }

    /// A node asks the market to hold the open slot for it (it waits for the
    /// next policy version). Fast mode holds the slot at most `max_hold_ms`
    /// after it opened; real-time mode keeps wall-clock time and only counts it.
    pub(crate) fn hold(
        &mut self,
        key: NodeKey,
        slot: u64,
        now_ms: u64,
    ) -> Result<HoldOutcome, MarketError> {
        self.rounds.hold(&mut self.members, self.control.mode(), key, slot, now_ms)
    }

    /// Slots held so far, and holds cut short at `max_hold_ms`.
    pub(crate) fn hold_counters(&self) -> (u64, u64) {
        self.rounds.hold_counters()
    }

    /// Whether nodes hold the open slot (in fast mode its deadline then
    /// extends to `max_hold_ms` after the opening). For the tests.
    #[cfg(test)]
    pub(crate) fn held(&self) -> bool {
        self.rounds.held()
    }

    /// Clears the open slot over every report received, settles, records
    /// KPIs and balances, and says what each node must be told.
    pub(crate) fn clear(&mut self) -> ClearOutcome {
        let round = self.rounds.take().expect("clear needs an open slot");
        let period = demand_period(&self.ds, &self.sim, round.open.ctx.data_slot);
        let (outcome, holds_cut_short) =
            self.ledger.clear(&round, period, &mut self.members, &self.sim.reward);
        self.rounds.count_holds_cut_short(holds_cut_short);
        outcome
    }

    // ----- control ----------------------------------------------------------

    pub(crate) fn start(&mut self) -> String {
        self.control.start(self.rounds.next_slot())
    }

    pub(crate) fn pause(&mut self) -> String {
        self.control.pause(self.rounds.next_slot())
    }

    pub(crate) fn resume(&mut self) -> String {
        self.control.resume(self.rounds.next_slot())
    }

    /// Opens exactly `count` more slots, then pauses.
    pub(crate) fn step(&mut self, count: u32) -> Result<String, MarketError> {
        self.control.step(count, self.rounds.next_slot())
    }

    /// Changes the clock mode; a 0 period or deadline keeps the current one.
    pub(crate) fn set_mode(
        &mut self,
        mode: ClockMode,
        slot_period_ms: u64,
        deadline_ms: u64,
    ) -> Result<String, MarketError> {
        self.control.set_mode(mode, slot_period_ms, deadline_ms)
    }

    /// Validates a whole scenario, then schedules all of its events.
    pub(crate) fn load_scenario(&mut self, json: &str) -> Result<String, MarketError> {
        self.control.load_scenario(json, self.rounds.next_slot())
    }

    /// Validates one event and applies it from the next slot opened.
    pub(crate) fn inject(&mut self, event: ScenarioEvent) -> Result<String, MarketError> {
        self.control.inject(event, self.rounds.next_slot())
    }

    // ----- status -----------------------------------------------------------

    /// Run status and the KPIs so far (finishing the KPIs costs a pass over
    /// every household: the clock's own questions use the accessors above).
    pub(crate) fn status(&self) -> StatusSnapshot {
        let (holds, holds_expired) = self.rounds.hold_counters();
        let (missing_reports, absent_reports) = self.ledger.report_counters();
        StatusSnapshot {
            next_slot: self.rounds.next_slot(),
            open_slot: self.rounds.open_slot().map(|o| o.slot),
            prosumers: self.members.registered_prosumers().min(u32::MAX as u64) as u32,
            nodes: self.members.len() as u32,
            connected_nodes: self.members.connected_nodes().count() as u32,
            connected_prosumers: self.members.connected_prosumers(),
            mode: self.control.mode(),
            paused: self.control.paused(),
            slot_period_ms: self.control.slot_period_ms(),
            deadline_ms: self.control.deadline_ms(),
            energy_balance_error_kwh: self.ledger.energy_balance_error_kwh(),
            money_balance_error: self.ledger.money_balance_error(),
            kpis: self.ledger.kpis(self.members.registered_prosumers()),
            missing_reports,
            absent_reports,
            absent_prosumers: self.members.absent_prosumers().min(u32::MAX as u64) as u32,
            holds,
            holds_expired,
            leases_expired: self.members.leases_expired(),
        }
    }
}
