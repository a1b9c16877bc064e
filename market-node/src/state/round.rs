//! The open round: which slot is being collected, from whom, and what has
//! arrived.
//!
//! [`Rounds`] numbers the slots, maps each to the dataset slot it plays,
//! and holds the one open [`Round`]: the nodes connected when it opened
//! (expected), those the fast clock waits for (not silent past the node
//! timeout), the batches received and the nodes holding it for their
//! learner. A batch is checked whole against the node's lease and declared
//! equipment before it is stored, so a refused batch changes nothing.
//!
//! What the slot's context and adjustments are is [`super::MarketState`]'s
//! to build (it composes the scenario and the last price); clearing the
//! round is the ledger's.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use peergrid_core::data::Dataset;
use peergrid_core::household::{conditions_for, HouseholdReport};
use peergrid_core::observation::OpenSlot;
use peergrid_core::physics::SlotLimits;
use peergrid_core::slot_engine::SlotEngine;
use peergrid_core::units::ProsumerId;

use super::membership::{Membership, Node};
use super::NodeKey;
use crate::config::{ClockMode, ConfigError, MarketSettings};
use crate::error::MarketError;

/// What the market did with a `Hold`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HoldOutcome {
    /// Fast mode: the open slot waits for the node until `until_ms` (clock ms).
    Held { until_ms: u64 },
    /// Real-time mode keeps wall-clock time: counted, not honoured.
    Ignored,
}

/// A batch or hold must name the open slot: `open` is the slot open (if
/// any), `what` ("a batch", "a hold") names the message in the error.
///
/// The one statement of the rule and its message. The gRPC edge applies it
/// to the slot it last saw open, to pick the price bounds it decodes a
/// batch with; the state applies it again to its round, which may have
/// moved on since.
pub(crate) fn check_open_slot(open: Option<u64>, slot: u64, what: &str) -> Result<(), MarketError> {
    match open {
        None => Err(MarketError::precondition(
            "slot",
            format!("no slot is open, got {what} for slot {slot}"),
        )),
        Some(open) if open != slot => Err(MarketError::precondition(
            "slot",
            format!("the open slot is {open}, got {what} for slot {slot}"),
        )),
        Some(_) => Ok(()),
    }
}

/// The slot being collected.
#[derive(Debug)]
pub(super) struct Round {
    pub(super) open: Arc<OpenSlot>,
    /// Nodes connected at open: their non-offline prosumers are expected.
    expected: Vec<usize>,
    /// Expected nodes the fast clock waits for (not silent past the node timeout).
    waited: BTreeSet<usize>,
    batches: BTreeMap<usize, Vec<HouseholdReport>>,
    /// Nodes that asked the market to hold this slot (they wait on the learner).
    held: BTreeSet<usize>,
    opened_ms: u64,
}

impl Round {
    /// Every report received, merged and sorted by prosumer id: the order
    /// the reference simulator clears and records in.
    pub(super) fn merged_reports(&self) -> Vec<HouseholdReport> {
        let mut all: Vec<HouseholdReport> = self.batches.values().flatten().copied().collect();
        all.sort_by_key(|r| r.prosumer_id);
        all
    }

    /// Node `index`'s batch (empty if it sent none).
    pub(super) fn batch(&self, index: usize) -> &[HouseholdReport] {
        self.batches.get(&index).map_or(&[][..], Vec::as_slice)
    }

    pub(super) fn reported(&self, index: usize) -> bool {
        self.batches.contains_key(&index)
    }

    /// Whether node `index` still held the slot when it cleared.
    pub(super) fn held_by(&self, index: usize) -> bool {
        self.held.contains(&index)
    }
}

/// What bounds a batch beyond the wire's checks, and how long nodes are
/// waited for.
#[derive(Clone, Debug)]
struct RoundLimits {
    node_timeout_ms: u64,
    max_hold_ms: u64,
    /// Largest average power one household may draw, kW (bounds load reports).
    max_household_kw: f64,
    /// The dataset's PV yield in its sunniest slot, kWh/kWp (bounds PV reports).
    pv_peak_kwh_per_kwp: f64,
}

/// Slot numbering and the open round.
#[derive(Debug)]
pub(super) struct Rounds {
    start_slot: usize,
    /// With `train_weeks_only`: the dataset slots played, in order.
    schedule: Option<Vec<usize>>,
    limits: RoundLimits,
    next_slot: u64,
    open: Option<Round>,
    /// Slots held so far, and holds cut short at `max_hold_ms`.
    holds: u64,
    holds_expired: u64,
}

impl Rounds {
    pub(super) fn new(ds: &Dataset, settings: &MarketSettings) -> Result<Rounds, ConfigError> {
        if settings.start_slot >= ds.n_slots() as u64 {
            return Err(ConfigError {
                field: "start_slot".into(),
                reason: format!(
                    "must be < the dataset's {} slots, got {}",
                    ds.n_slots(),
                    settings.start_slot
                ),
            });
        }
        let schedule = match &settings.train_weeks_only {
            Some(split) => {
                let slots: Vec<usize> = peergrid_core::data::split::split_weeks(ds, split)
                    .train
                    .into_iter()
                    .flatten()
                    .collect();
                if slots.is_empty() {
                    return Err(ConfigError {
                        field: "train_weeks_only".into(),
                        reason: format!("must leave training days in the dataset, got {split:?}"),
                    });
                }
                // Start at the first training slot at or after start_slot.
                let first =
                    slots.iter().position(|&t| t >= settings.start_slot as usize).unwrap_or(0);
                Some(slots[first..].iter().chain(&slots[..first]).copied().collect())
            }
            None => None,
        };
        Ok(Rounds {
            start_slot: settings.start_slot as usize,
            schedule,
            limits: RoundLimits {
                node_timeout_ms: settings.node_timeout_ms,
                max_hold_ms: settings.max_hold_ms,
                max_household_kw: settings.max_household_kw,
                pv_peak_kwh_per_kwp: ds.pv_peak_kwh_per_kwp(),
            },
            next_slot: 0,
            open: None,
            holds: 0,
            holds_expired: 0,
        })
    }

    /// The next slot to open.
    pub(super) fn next_slot(&self) -> u64 {
        self.next_slot
    }

    /// The dataset slot that run slot `slot` plays.
    pub(super) fn data_slot(&self, slot: u64, ds: &Dataset) -> usize {
        match &self.schedule {
            Some(s) => s[(slot % s.len() as u64) as usize],
            None => (self.start_slot + (slot % ds.n_slots() as u64) as usize) % ds.n_slots(),
        }
    }

    pub(super) fn is_open(&self) -> bool {
        self.open.is_some()
    }

    pub(super) fn open_slot(&self) -> Option<&Arc<OpenSlot>> {
        self.open.as_ref().map(|r| &r.open)
    }

    /// The open slot and the price bounds its orders must respect.
    #[cfg(test)]
    pub(super) fn open_bounds(&self) -> Option<(u64, peergrid_core::market::PriceBounds)> {
        self.open.as_ref().map(|r| (r.open.slot, r.open.ctx.tariff.bounds()))
    }

    /// Opens `open` (the next slot): every connected node is expected, and
    /// waited for unless it was silent in the last round past the node timeout.
    pub(super) fn begin(&mut self, open: Arc<OpenSlot>, members: &Membership, now_ms: u64) {
        assert!(self.open.is_none(), "a slot is already open");
        debug_assert_eq!(open.slot, self.next_slot);
        let timeout = self.limits.node_timeout_ms;
        let mut expected = Vec::new();
        let mut waited = BTreeSet::new();
        for (i, n) in members.iter().filter(|(_, n)| n.connected) {
            expected.push(i);
            let silent = !n.reported_last_round && now_ms.saturating_sub(n.last_seen_ms) > timeout;
            if !silent {
                waited.insert(i);
            }
        }
        self.open = Some(Round {
            open,
            expected,
            waited,
            batches: BTreeMap::new(),
            held: BTreeSet::new(),
            opened_ms: now_ms,
        });
        self.next_slot += 1;
    }

    /// Ends the open round (to clear it).
    pub(super) fn take(&mut self) -> Option<Round> {
        self.open.take()
    }

    /// A node (re)joining mid-slot gets the open slot and is waited for.
    pub(super) fn admit(&mut self, index: usize) {
        if let Some(round) = self.open.as_mut() {
            if !round.expected.contains(&index) {
                round.expected.push(index);
            }
            round.waited.insert(index);
        }
    }

    /// Node `index` lost its stream: not waited for, not holding.
    pub(super) fn node_left(&mut self, index: usize) {
        if let Some(round) = self.open.as_mut() {
            round.waited.remove(&index);
            round.held.remove(&index);
        }
    }

    /// Node `index`'s lease ended: not expected either.
    pub(super) fn node_expired(&mut self, index: usize) {
        if let Some(round) = self.open.as_mut() {
            round.expected.retain(|i| *i != index);
        }
        self.node_left(index);
    }

    /// Fast mode: every node waited for has sent its batch.
    pub(super) fn ready(&self) -> bool {
        self.open.as_ref().is_some_and(|r| {
            !r.waited.is_empty() && r.waited.iter().all(|i| r.batches.contains_key(i))
        })
    }

    /// Whether nodes hold the open slot.
    #[cfg(test)]
    pub(super) fn held(&self) -> bool {
        self.open.as_ref().is_some_and(|r| !r.held.is_empty())
    }

    pub(super) fn hold_counters(&self) -> (u64, u64) {
        (self.holds, self.holds_expired)
    }

    /// `n` nodes still held the slot that just cleared.
    pub(super) fn count_holds_cut_short(&mut self, n: u64) {
        self.holds_expired += n;
    }

    /// The open round, if `key` is the node's current connection, `slot` is
    /// the open slot and the node has not sent its batch for it yet; `what`
    /// ("a batch", "a hold") names the message in the error.
    fn round_for(
        &self,
        members: &Membership,
        key: NodeKey,
        slot: u64,
        what: &str,
    ) -> Result<&Round, MarketError> {
        if !members.is_current(key) {
            return Err(MarketError::precondition(
                "session",
                "this connection is not (or no longer) joined",
            ));
        }
        check_open_slot(self.open.as_ref().map(|r| r.open.slot), slot, what)?;
        let round = self.open.as_ref().expect("checked: a slot is open");
        if round.batches.contains_key(&key.index) {
            return Err(MarketError::precondition(
                "slot",
                format!("this node already sent its batch for slot {slot}"),
            ));
        }
        Ok(round)
    }

    /// Validates a node's whole batch for `slot` and stores it; on any
    /// error nothing is stored. Reports come decoded by the edge (finite,
    /// in bounds, order consistent with the position, at most `max_batch`
    /// of them); this checks what only the market knows: the round, the
    /// node's ids and declared equipment, the scenario's offline prosumers.
    pub(super) fn submit(
        &mut self,
        members: &mut Membership,
        key: NodeKey,
        slot: u64,
        reports: Vec<HouseholdReport>,
        now_ms: u64,
    ) -> Result<usize, MarketError> {
        let round = self.round_for(members, key, slot, "a batch")?;
        let node = members.get(key.index).expect("current");
        check_reports(round, node, &self.limits, slot, &reports)?;
        let mut sorted = reports;
        sorted.sort_by_key(|r| r.prosumer_id);
        SlotEngine::check_reports(&sorted, &round.open.ctx.tariff).map_err(MarketError::from)?;
        let n = sorted.len();
        members.seen(key, now_ms);
        let round = self.open.as_mut().expect("checked above");
        round.held.remove(&key.index);
        round.batches.insert(key.index, sorted);
        Ok(n)
    }

    /// A node asks the market to hold the open slot for it (it waits for the
    /// next policy version). Fast mode holds the slot at most `max_hold_ms`
    /// after it opened; real-time mode keeps wall-clock time and only counts it.
    pub(super) fn hold(
        &mut self,
        members: &mut Membership,
        mode: ClockMode,
        key: NodeKey,
        slot: u64,
        now_ms: u64,
    ) -> Result<HoldOutcome, MarketError> {
        self.round_for(members, key, slot, "a hold")?;
        members.seen(key, now_ms);
        let round = self.open.as_mut().expect("checked above");
        if mode == ClockMode::RealTime {
            return Ok(HoldOutcome::Ignored);
        }
        round.waited.insert(key.index);
        if round.held.insert(key.index) && round.held.len() == 1 {
            self.holds += 1;
        }
        Ok(HoldOutcome::Held { until_ms: round.opened_ms + self.limits.max_hold_ms })
    }
}

/// Each report of a batch: a prosumer the node hosts, once, not offline in
/// this slot, and within its declared equipment.
fn check_reports(
    round: &Round,
    node: &Node,
    limits: &RoundLimits,
    slot: u64,
    reports: &[HouseholdReport],
) -> Result<(), MarketError> {
    let ctx = &round.open.ctx;
    let slot_limits = SlotLimits {
        hours: ctx.hours,
        hour: ctx.hour,
        pv_peak_kwh_per_kwp: limits.pv_peak_kwh_per_kwp,
        max_household_kw: limits.max_household_kw,
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
            return Err(MarketError::invalid(
                field(),
                format!("duplicate prosumer id {} (also reports[{j}])", r.prosumer_id),
            ));
        }
        let (conditions, offline) = conditions_for(r.prosumer_id, &round.open.adjustments);
        if offline {
            return Err(MarketError::precondition(
                field(),
                format!("prosumer {} is offline in slot {slot} and must not report", r.prosumer_id),
            ));
        }
        let envelope = &node.envelopes[(r.prosumer_id - node.first) as usize];
        envelope
            .check(r, &slot_limits, conditions, &|| format!("reports[{i}]"))
            .map_err(MarketError::from)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use peergrid_core::household::HouseholdReport;
    use tonic::Code;

    use peergrid_core::data::split::{SplitPart, WeekSplit};

    use super::super::fixtures::{report, two_nodes, WireCode};
    use super::*;

    #[test]
    fn a_bad_batch_changes_nothing() {
        let (mut s, ka, kb) = two_nodes();
        let before = s.status();
        let cases: Vec<(NodeKey, u64, Vec<HouseholdReport>, Code, &str)> = vec![
            (ka, 1, vec![report(0, 1.0, 150_000)], Code::FailedPrecondition, "slot"),
            (
                ka,
                0,
                vec![report(0, 1.0, 150_000), report(2, 1.0, 150_000)],
                Code::PermissionDenied,
                "reports[1].prosumer_id",
            ),
            (
                ka,
                0,
                vec![report(0, 1.0, 150_000), report(0, 1.0, 150_000)],
                Code::InvalidArgument,
                "reports[1].prosumer_id",
            ),
            // More reports than the node hosts (the edge refuses more than
            // the batch limit before decoding): the first foreign one is named.
            (
                ka,
                0,
                (0..9).map(|id| report(id, 1.0, 150_000)).collect(),
                Code::PermissionDenied,
                "reports[2].prosumer_id",
            ),
            (ka, 0, vec![report(0, 1.0, 9_000_000)], Code::InvalidArgument, "orders[0]"),
            (NodeKey { index: 0, generation: 9 }, 0, vec![], Code::FailedPrecondition, "session"),
            // Beyond the declared equipment (100 kWp, no battery).
            (ka, 0, vec![report(0, -5000.0, 150_000)], Code::InvalidArgument, "reports[0].pv_kwh"),
            (
                ka,
                0,
                vec![HouseholdReport {
                    load_kwh: 1e4,
                    net_kwh: 1e4,
                    order: None,
                    ..report(0, 1.0, 0)
                }],
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
    fn training_plays_only_the_train_days_of_the_split() {
        let ds = peergrid_core::data::synthetic::synthetic_dataset(2, 364, 60, 1);
        let split = WeekSplit::default();
        let settings =
            MarketSettings { train_weeks_only: Some(split), ..MarketSettings::default() };
        let schedule = Rounds::new(&ds, &settings).unwrap().schedule.unwrap();
        let parts = peergrid_core::data::split::split_weeks(&ds, &split);
        assert_eq!(schedule.len(), parts.slots(SplitPart::Train));
        for held_out in parts.validation.iter().chain(&parts.test) {
            assert!(
                !schedule.iter().any(|t| held_out.contains(t)),
                "trains on held-out {held_out:?}"
            );
        }
        let none_left = WeekSplit { test_every_nth_week: 1, validation_every_nth_week: 0 };
        let short = peergrid_core::data::synthetic::synthetic_dataset(2, 14, 60, 1);
        let e =
            Rounds::new(&short, &MarketSettings { train_weeks_only: Some(none_left), ..settings })
                .unwrap_err();
        assert!(e.to_string().contains("train_weeks_only"), "{e}");
    }

    #[test]
    fn the_open_slot_rule_names_the_slot() {
        let e = check_open_slot(None, 3, "a batch").unwrap_err();
        assert_eq!(
            e.to_string(),
            "failed precondition: slot: no slot is open, got a batch for slot 3"
        );
        let e = check_open_slot(Some(4), 3, "a hold").unwrap_err();
        assert_eq!(
            e.to_string(),
            "failed precondition: slot: the open slot is 4, got a hold for slot 3"
        );
        assert!(check_open_slot(Some(4), 4, "a batch").is_ok());
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
    fn a_hold_extends_the_fast_deadline_and_real_time_ignores_it() {
        let (mut s, ka, kb) = two_nodes();
        assert_eq!(s.hold(ka, 0, 10).unwrap(), HoldOutcome::Held { until_ms: 60_000 });
        assert!(s.held());
        assert_eq!(
            s.hold(ka, 1, 10).unwrap_err().code(),
            Code::FailedPrecondition,
            "not the open slot"
        );
        s.submit(kb, 0, vec![report(2, 0.5, 170_000)], 20).unwrap();
        assert!(!s.round_ready(), "a waits for the learner");
        s.submit(ka, 0, vec![report(0, 1.5, 150_000)], 4_000).unwrap();
        assert!(s.round_ready() && !s.held());
        assert_eq!(
            s.hold(kb, 0, 4_000).unwrap_err().code(),
            Code::FailedPrecondition,
            "already reported"
        );
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
