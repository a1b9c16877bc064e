//! The ledger: clearing a round, and what the community has done so far.
//!
//! [`Ledger::clear`] clears and settles a round exactly as the reference
//! [`peergrid_core::simulation::Simulation`] does: the reports merged into
//! one list sorted by prosumer id, cleared with
//! [`SlotEngine::clear_and_settle`], then each household recorded with
//! [`household_slot`] in id order, so the KPIs of a distributed run equal
//! the reference's for the same community and policy. Alongside, it checks
//! the balances every slot must keep (energy in = energy out; every
//! nano-currency paid for peer energy was received by a seller) and counts
//! missing and absent reports. It also owns the grid the engine settles
//! with (feeder limits change it) and the community's storage capacity.
//!
//! It decides nothing about who may report: it clears what the round
//! accepted.

use std::collections::BTreeSet;

use peergrid_core::household::{conditions_for, HouseholdReport};
use peergrid_core::kpi::{KpiAccumulator, Kpis};
use peergrid_core::market::Side;
use peergrid_core::observation::CommunitySignals;
use peergrid_core::reward::RewardWeights;
use peergrid_core::settlement::{ClearedSlot, SettledHousehold};
use peergrid_core::simulation::SimConfig;
use peergrid_core::slot_engine::{household_slot, SlotEngine};
use peergrid_core::tariff::GridConfig;
use peergrid_core::units::{Money, PricePerKwh, ProsumerId};

use super::membership::Membership;
use super::round::Round;
use super::{NodeKey, ProsumerInfo};
use crate::config::ClockMode;
use crate::scenario::FeederLimit;

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

#[derive(Clone, Debug)]
pub(crate) struct ClearOutcome {
    pub summary: SlotSummary,
    pub orders: u64,
    /// One entry per connected node that was expected or reported.
    pub per_node: Vec<(NodeKey, ClearedSlot)>,
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

/// What each connected node is told about a cleared slot, and the totals.
struct NodeTally {
    per_node: Vec<(NodeKey, ClearedSlot)>,
    missing: u32,
    absent: u32,
    /// Nodes that still held the slot when it cleared.
    holds_cut_short: u64,
}

/// Clearing, settlement, KPIs and balances.
#[derive(Debug)]
pub(super) struct Ledger {
    engine: SlotEngine,
    kpi: KpiAccumulator,
    /// Ids whose storage is already in the KPIs' capacity (a reused range
    /// hosts the same generated households).
    counted: Vec<bool>,
    energy_error_kwh: f64,
    p2p_paid: Money,
    p2p_received: Money,
    missing_reports: u64,
    absent_reports: u64,
}

impl Ledger {
    pub(super) fn new(sim: &SimConfig) -> Ledger {
        Ledger {
            engine: SlotEngine::new(sim.grid.clone(), sim.mechanism)
                .with_demand_charge(sim.tariff.demand_charge_per_kw),
            kpi: KpiAccumulator::new(0, 0.0).with_demand_charge(sim.tariff.demand_charge_per_kw),
            counted: Vec::new(),
            energy_error_kwh: 0.0,
            p2p_paid: Money(0),
            p2p_received: Money(0),
            missing_reports: 0,
            absent_reports: 0,
        }
    }

    /// The last uniform clearing price of any slot, if there was one.
    pub(super) fn last_price(&self) -> Option<PricePerKwh> {
        self.engine.last_price()
    }

    /// The community signals of the last slot cleared.
    pub(super) fn last_slot(&self) -> CommunitySignals {
        self.engine.last_slot()
    }

    /// A feeder event: new grid limits from the next clearing on (0 =
    /// unlimited); the change is permanent.
    pub(super) fn set_feeder(&mut self, f: FeederLimit) {
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

    /// A node's first join adds its households' storage to the KPIs' capacity,
    /// one addition per prosumer in id order: the same float summation as
    /// the reference simulator's capacity when nodes join in id order. A
    /// reused range hosts the same generated households, whose storage is
    /// counted once. `end` is one past the node's last id.
    pub(super) fn add_households(&mut self, prosumers: &[ProsumerInfo], end: ProsumerId) {
        if self.counted.len() < end as usize {
            self.counted.resize(end as usize, false);
        }
        for p in prosumers {
            let seen = std::mem::replace(&mut self.counted[p.prosumer_id as usize], true);
            let capacity = p.envelope.battery.map_or(0.0, |b| b.capacity_kwh);
            self.kpi.add_households(end as usize, if seen { 0.0 } else { capacity });
        }
    }

    /// Clears `round` (of demand-charge period `period`) over every report
    /// received, settles, records KPIs and balances, and says what each node
    /// must be told; the second value is how many nodes still held the slot.
    pub(super) fn clear(
        &mut self,
        round: &Round,
        period: u64,
        members: &mut Membership,
        reward: &RewardWeights,
    ) -> (ClearOutcome, u64) {
        let reports = round.merged_reports();
        let (mut summary, orders) = self.settle(round, period, &reports, reward);
        let tally = self.tell_nodes(round, &reports, members);
        summary.absent = tally.absent;
        self.absent_reports += tally.absent as u64;
        summary.missing = tally.missing;
        self.missing_reports += tally.missing as u64;
        (ClearOutcome { summary, orders, per_node: tally.per_node }, tally.holds_cut_short)
    }

    /// Clears and settles `reports` (sorted by id), records each household's
    /// slot in the KPIs and the slot's balances; returns the community's
    /// summary (without missing and absent counts) and the orders cleared.
    fn settle(
        &mut self,
        round: &Round,
        period: u64,
        reports: &[HouseholdReport],
        reward: &RewardWeights,
    ) -> (SlotSummary, u64) {
        let ctx = &round.open.ctx;
        let feeder = self.engine.clear_and_settle(reports, &ctx.tariff, ctx.hours, period);
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
            let slot = household_slot(report, s, &ctx.tariff, reward);
            self.kpi.record(report.prosumer_id as usize, &slot, &ctx.tariff);
            summary.load_kwh += report.load_kwh;
            summary.pv_kwh += report.pv_kwh;
            summary.grid_import_kwh += s.grid_import_kwh;
            summary.grid_export_kwh += s.grid_export_kwh;
            energy_error += (report.pv_kwh + report.battery.discharged_kwh + s.grid_import_kwh)
                - (report.load_kwh
                    + report.battery.charged_kwh
                    + s.grid_export_kwh
                    + (s.p2p_bought_kwh - s.p2p_received_kwh));
            if let Some(order) = report.order {
                orders += 1;
                let fill = self.engine.fill(i);
                match order.side {
                    Side::Buy => self.p2p_paid += fill.value,
                    Side::Sell => self.p2p_received += fill.value,
                }
            }
        }
        self.kpi.end_slot_in(ctx.hours, feeder.overload_kwh, period);
        self.energy_error_kwh += energy_error.abs();
        (summary, orders)
    }

    /// Per node: settlements of its reporters, each with the side of the
    /// order it reported (so the node needs nothing of its batch to apply
    /// it), and its missing prosumers.
    /// Only nodes with a stream can be missing: a node within its lease but
    /// without a stream is absent (its households settle with the grid on
    /// their node when it is back), and expired nodes are gone.
    fn tell_nodes(
        &self,
        round: &Round,
        reports: &[HouseholdReport],
        members: &mut Membership,
    ) -> NodeTally {
        let clearing = self.engine.clearing();
        let mut tally =
            NodeTally { per_node: Vec::new(), missing: 0, absent: 0, holds_cut_short: 0 };
        let indices: Vec<usize> = members.iter().map(|(i, _)| i).collect();
        for index in indices {
            let node = members.get(index).expect("listed");
            let batch = round.batch(index);
            if !node.connected {
                if node.joined && batch.is_empty() {
                    tally.absent += node.count;
                }
                continue;
            }
            let mut settlements = Vec::with_capacity(batch.len());
            for r in batch {
                let i = reports
                    .binary_search_by_key(&r.prosumer_id, |x| x.prosumer_id)
                    .expect("merged");
                settlements.push(SettledHousehold {
                    prosumer_id: r.prosumer_id,
                    side: r.order.map(|o| o.side),
                    fill: self.engine.fill(i),
                    settlement: self.engine.settlements()[i],
                });
            }
            let reported: BTreeSet<ProsumerId> = batch.iter().map(|r| r.prosumer_id).collect();
            let missing: Vec<ProsumerId> = (node.first..node.end())
                .filter(|id| {
                    !reported.contains(id) && !conditions_for(*id, &round.open.adjustments).1
                })
                .collect();
            tally.missing += missing.len() as u32;
            if round.held_by(index) {
                tally.holds_cut_short += 1;
            }
            let generation = node.generation;
            members.set_reported(index, round.reported(index));
            let cleared = ClearedSlot {
                slot: round.open.slot,
                clearing_price: clearing.clearing_price,
                matched: clearing.matched,
                settlements,
                missing,
            };
            tally.per_node.push((NodeKey { index, generation }, cleared));
        }
        tally
    }

    /// The KPIs so far, for a community of `prosumers` registered households.
    pub(super) fn kpis(&self, prosumers: u64) -> Kpis {
        Kpis { prosumers, ..self.kpi.finish() }
    }

    /// Energy that did not balance, summed over slots, kWh.
    pub(super) fn energy_balance_error_kwh(&self) -> f64 {
        self.energy_error_kwh
    }

    /// Peer payments minus peer receipts, currency (0 when every trade settled both ways).
    pub(super) fn money_balance_error(&self) -> f64 {
        Money(self.p2p_paid.0 - self.p2p_received.0).amount().abs()
    }

    /// Reports missing from connected nodes, and absent (nodes without a stream), so far.
    pub(super) fn report_counters(&self) -> (u64, u64) {
        (self.missing_reports, self.absent_reports)
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{report, two_nodes};

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
        assert_eq!(s.next_slot(), st.next_slot, "the cheap accessor agrees with the status");
    }
}
