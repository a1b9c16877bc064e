//! Key performance indicators of an episode, community-wide.
//!
//! [`KpiAccumulator`] is fed each household's settled slot and returns
//! [`Kpis`] at the end. Definitions (Σ over households and slots):
//!
//! - `grid_import_kwh`, `grid_export_kwh`: Σ household grid import / export.
//! - `peak_import_kw`: max over slots of the community's net import power
//!   `(Σ import − Σ export) / slot hours` (what the feeder sees); 0 if the
//!   community never imports on net.
//! - `community_cost`: Σ household bills: grid import cost, minus export
//!   revenue, plus battery degradation cost and feeder overload penalties
//!   (P2P payments cancel inside the community), plus the demand charge.
//! - `demand_charge`: with a tariff demand charge
//!   ([`KpiAccumulator::with_demand_charge`]), Σ over periods (days or
//!   30-day months) of the charge per kW × that period's peak net import
//!   (as `peak_import_kw`, but per period; 0 for a period that never imports
//!   on net). A period is the run of consecutive slots closed with the same
//!   period number ([`KpiAccumulator::end_slot_in`]). It is in
//!   `community_cost` once; a household's bill (so the Gini) and its reward
//!   carry its share, `Settlement::demand_charge`: the rises of the peak in
//!   the slots it imported in (`settlement::DemandCharge`), which sum to
//!   this charge.
//! - `p2p_kwh`: Σ energy sold P2P (= Σ bought).
//! - `self_sufficiency_pct`: `100 · (1 − Σ import / Σ load)`.
//! - `self_consumption_pct`: `100 · (1 − Σ export / Σ PV)` (100 without PV).
//! - `co2_kg`: Σ import × the slot's CO2 intensity.
//! - `battery_cycles`: equivalent full cycles: Σ energy discharged to the bus
//!   / Σ storage capacity of the community.
//! - `gini_savings`: Gini coefficient of per-household savings against the
//!   household's grid-only bill; 0 = savings shared equally; 0 when nobody
//!   saves anything. The grid-only bills are those of an actual grid-only run
//!   when given ([`KpiAccumulator::with_baseline_costs`], what evaluations
//!   do: it includes the EV charging a grid-only household must still do),
//!   otherwise the plain bill of load − PV at the tariff.

use serde::{Deserialize, Serialize};

use crate::battery::BatteryStep;
use crate::settlement::Settlement;
use crate::tariff::SlotTariff;

/// An episode's community-wide indicators (definitions in the module docs).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Kpis {
    /// Slots played.
    pub slots: u64,
    /// Households in the community.
    pub prosumers: u64,
    /// Σ household consumption, kWh.
    pub load_kwh: f64,
    /// Σ PV generation, kWh.
    pub pv_kwh: f64,
    /// Σ household grid import, kWh.
    pub grid_import_kwh: f64,
    /// Σ household grid export, kWh.
    pub grid_export_kwh: f64,
    /// Peak of the community's net import power over the slots, kW.
    pub peak_import_kw: f64,
    /// Σ household bills (grid energy, degradation, overload penalties).
    pub community_cost: f64,
    /// What the same community would pay with no battery use and no P2P.
    pub grid_only_cost: f64,
    /// Σ energy sold P2P (= Σ bought), kWh.
    pub p2p_kwh: f64,
    /// Share of the load not imported from the grid, %.
    pub self_sufficiency_pct: f64,
    /// Share of the PV output not exported to the grid, %.
    pub self_consumption_pct: f64,
    /// Σ import × the slot's CO2 intensity, kg.
    pub co2_kg: f64,
    /// Equivalent full battery cycles of the community's storage.
    pub battery_cycles: f64,
    /// Gini coefficient of per-household savings against grid-only.
    pub gini_savings: f64,
    /// Energy lost in P2P distribution (bought − received), kWh.
    pub p2p_losses_kwh: f64,
    /// Energy lost in battery charging and discharging, kWh.
    pub battery_losses_kwh: f64,
    /// EV energy missing at departures and for trips, kWh.
    pub ev_shortfall_kwh: f64,
    /// Energy imported above the feeder limit, kWh.
    pub overload_kwh: f64,
    /// Mean per-household, per-slot reward.
    pub mean_reward: f64,
    /// Demand charge on the per-period peaks of net import (included in
    /// `community_cost`); 0, and left out of serialised KPIs, without one.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub demand_charge: f64,
}

fn is_zero(v: &f64) -> bool {
    *v == 0.0
}

/// Everything the KPIs need from one household's slot.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct HouseholdSlot {
    /// Consumption, kWh.
    pub load_kwh: f64,
    /// PV generation, kWh.
    pub pv_kwh: f64,
    /// What the battery did.
    pub battery: BatteryStep,
    /// The household's settled trades and grid exchange.
    pub settlement: Settlement,
    /// Battery degradation cost of the slot.
    pub degradation_cost: f64,
    /// CO2 of the slot's grid import, kg.
    pub co2_kg: f64,
    /// EV energy missing at a departure or for a trip this slot, kWh.
    pub ev_shortfall_kwh: f64,
    /// The reward the household received.
    pub reward: f64,
}

/// Sums settled household slots into [`Kpis`].
#[derive(Clone, Debug, Default)]
pub struct KpiAccumulator {
    k: Kpis,
    battery_capacity_kwh: f64,
    cost_by_household: Vec<f64>,
    grid_only_by_household: Vec<f64>,
    baseline: Option<Vec<f64>>,
    slot_import_kwh: f64,
    slot_export_kwh: f64,
    reward_sum: f64,
    samples: u64,
    demand_per_kw: f64,
    /// The period being accumulated and its peak net import so far, kW.
    demand_period: Option<u64>,
    period_peak_kw: f64,
    /// Demand charge of the periods already closed.
    demand_closed: f64,
}

impl KpiAccumulator {
    /// `battery_capacity_kwh` is the community's total storage capacity.
    pub fn new(n_households: usize, battery_capacity_kwh: f64) -> KpiAccumulator {
        KpiAccumulator {
            k: Kpis { prosumers: n_households as u64, ..Kpis::default() },
            battery_capacity_kwh,
            cost_by_household: vec![0.0; n_households],
            grid_only_by_household: vec![0.0; n_households],
            ..KpiAccumulator::default()
        }
    }

    /// Grows the community to at least `n_households` (ids `0..n`), adding
    /// `added_capacity_kwh` of storage: for a market whose nodes join over time.
    pub fn add_households(&mut self, n_households: usize, added_capacity_kwh: f64) {
        if n_households > self.cost_by_household.len() {
            self.cost_by_household.resize(n_households, 0.0);
            self.grid_only_by_household.resize(n_households, 0.0);
            self.k.prosumers = n_households as u64;
        }
        self.battery_capacity_kwh += added_capacity_kwh;
    }

    /// Use these per-household bills (e.g. from a grid-only run over the same
    /// slots) as the reference for savings and `grid_only_cost`.
    pub fn with_baseline_costs(mut self, costs: Vec<f64>) -> KpiAccumulator {
        assert_eq!(costs.len(), self.cost_by_household.len(), "one baseline cost per household");
        self.baseline = Some(costs);
        self
    }

    /// Charge `per_kw` of each period's peak net import (0 = none: then
    /// nothing changes, whatever periods [`Self::end_slot_in`] is given).
    pub fn with_demand_charge(mut self, per_kw: f64) -> KpiAccumulator {
        self.demand_per_kw = per_kw;
        self
    }

    /// Each household's bill so far (energy, degradation, penalties).
    pub fn household_costs(&self) -> &[f64] {
        &self.cost_by_household
    }

    /// Adds household `i`'s settled slot `h`, priced at `tariff`.
    pub fn record(&mut self, i: usize, h: &HouseholdSlot, tariff: &SlotTariff) {
        let s = &h.settlement;
        let k = &mut self.k;
        k.load_kwh += h.load_kwh;
        k.pv_kwh += h.pv_kwh;
        k.grid_import_kwh += s.grid_import_kwh;
        k.grid_export_kwh += s.grid_export_kwh;
        k.p2p_kwh += s.p2p_sold_kwh;
        k.p2p_losses_kwh += s.p2p_bought_kwh - s.p2p_received_kwh;
        k.co2_kg += h.co2_kg;
        k.battery_losses_kwh += h.battery.losses_kwh;
        k.battery_cycles += h.battery.discharged_kwh;
        k.ev_shortfall_kwh += h.ev_shortfall_kwh;
        let cost = s.import_cost - s.export_revenue + h.degradation_cost + s.overload_penalty;
        k.community_cost += cost;
        // The household's bill carries its demand-charge share; the
        // community's cost has the whole charge once (`finish`).
        self.cost_by_household[i] += s.energy_cost() + h.degradation_cost + s.shared_charges();
        let net = h.load_kwh - h.pv_kwh;
        let grid_only =
            net.max(0.0) * tariff.retail.per_kwh() - (-net).max(0.0) * tariff.feed_in.per_kwh();
        self.grid_only_by_household[i] += grid_only;
        k.grid_only_cost += grid_only;
        self.slot_import_kwh += s.grid_import_kwh;
        self.slot_export_kwh += s.grid_export_kwh;
        self.reward_sum += h.reward;
        self.samples += 1;
    }

    /// [`Self::end_slot`] for a slot of demand-charge period `period`
    /// (consecutive slots with the same number form one period).
    pub fn end_slot_in(&mut self, hours: f64, overload_kwh: f64, period: u64) {
        if self.demand_per_kw > 0.0 {
            if self.demand_period != Some(period) {
                self.demand_closed += self.demand_per_kw * self.period_peak_kw;
                self.demand_period = Some(period);
                self.period_peak_kw = 0.0;
            }
            let net_kw = (self.slot_import_kwh - self.slot_export_kwh) / hours;
            self.period_peak_kw = self.period_peak_kw.max(net_kw);
        }
        self.end_slot(hours, overload_kwh);
    }

    /// Closes a slot of `hours` in which `overload_kwh` exceeded a feeder limit.
    pub fn end_slot(&mut self, hours: f64, overload_kwh: f64) {
        let net_kw = (self.slot_import_kwh - self.slot_export_kwh) / hours;
        self.k.peak_import_kw = self.k.peak_import_kw.max(net_kw);
        self.k.overload_kwh += overload_kwh;
        self.k.slots += 1;
        self.slot_import_kwh = 0.0;
        self.slot_export_kwh = 0.0;
    }

    /// The KPIs of everything recorded so far.
    pub fn finish(&self) -> Kpis {
        let mut k = self.k.clone();
        k.self_sufficiency_pct =
            if k.load_kwh > 0.0 { 100.0 * (1.0 - k.grid_import_kwh / k.load_kwh) } else { 100.0 };
        k.self_consumption_pct =
            if k.pv_kwh > 0.0 { 100.0 * (1.0 - k.grid_export_kwh / k.pv_kwh) } else { 100.0 };
        k.battery_cycles = if self.battery_capacity_kwh > 0.0 {
            k.battery_cycles / self.battery_capacity_kwh
        } else {
            0.0
        };
        let reference = self.baseline.as_ref().unwrap_or(&self.grid_only_by_household);
        if self.baseline.is_some() {
            k.grid_only_cost = reference.iter().sum();
        }
        let savings: Vec<f64> =
            reference.iter().zip(&self.cost_by_household).map(|(g, c)| g - c).collect();
        k.gini_savings = gini(&savings);
        k.mean_reward = if self.samples > 0 { self.reward_sum / self.samples as f64 } else { 0.0 };
        if self.demand_per_kw > 0.0 {
            k.demand_charge = self.demand_closed + self.demand_per_kw * self.period_peak_kw;
            k.community_cost += k.demand_charge;
        }
        k
    }
}

/// Gini coefficient `Σ_i Σ_j |x_i − x_j| / (2 n² |mean|)`, computed in
/// O(n log n) on sorted values. Defined as 0 when all values are (nearly)
/// zero. With negative values (households that lose money) it can exceed 1.
pub fn gini(values: &[f64]) -> f64 {
    let n = values.len();
    if n == 0 {
        return 0.0;
    }
    let mut x: Vec<f64> = values.to_vec();
    x.sort_by(f64::total_cmp);
    let mean = x.iter().sum::<f64>() / n as f64;
    if mean.abs() < 1e-12 {
        return 0.0;
    }
    // Σ_i Σ_j |x_i − x_j| = 2 Σ_i (2i − n + 1) x_(i) for 0-based sorted i.
    let weighted: f64 =
        x.iter().enumerate().map(|(i, v)| (2.0 * i as f64 - n as f64 + 1.0) * v).sum();
    weighted / (n as f64 * n as f64 * mean.abs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tariff::TariffConfig;

    #[test]
    fn gini_matches_hand_computed_values() {
        assert_eq!(gini(&[1.0, 1.0, 1.0]), 0.0);
        assert_eq!(gini(&[0.0, 0.0]), 0.0);
        // [0, 0, 0, 1]: Σ|xi−xj| = 6, mean 0.25, n = 4 ⇒ 6 / (2·16·0.25) = 0.75.
        assert!((gini(&[0.0, 1.0, 0.0, 0.0]) - 0.75).abs() < 1e-12);
        // [1, 2, 3]: Σ|xi−xj| = 8, mean 2 ⇒ 8 / (2·9·2) = 2/9.
        assert!((gini(&[3.0, 1.0, 2.0]) - 2.0 / 9.0).abs() < 1e-12);
    }

    #[test]
    fn ratios_follow_their_definitions() {
        let t = TariffConfig::default().slot(12, None);
        let mut acc = KpiAccumulator::new(2, 10.0);
        let s0 = Settlement { grid_import_kwh: 1.0, import_cost: 0.28, ..Default::default() };
        let s1 = Settlement { grid_export_kwh: 2.0, export_revenue: 0.1, ..Default::default() };
        acc.record(
            0,
            &HouseholdSlot { load_kwh: 2.0, pv_kwh: 1.0, settlement: s0, ..Default::default() },
            &t,
        );
        acc.record(
            1,
            &HouseholdSlot { load_kwh: 1.0, pv_kwh: 3.0, settlement: s1, ..Default::default() },
            &t,
        );
        acc.end_slot(0.5, 0.0);
        let k = acc.finish();
        assert!((k.self_sufficiency_pct - 100.0 * (1.0 - 1.0 / 3.0)).abs() < 1e-9);
        assert!((k.self_consumption_pct - 100.0 * (1.0 - 2.0 / 4.0)).abs() < 1e-9);
        assert_eq!(k.peak_import_kw, 0.0, "net export is not an import peak");
        assert!((k.community_cost - 0.18).abs() < 1e-12);
        assert!((k.grid_only_cost - 0.18).abs() < 1e-12);
        assert_eq!(k.gini_savings, 0.0);
    }

    #[test]
    fn the_demand_charge_prices_each_periods_peak_once() {
        let t = TariffConfig::default().slot(12, None);
        // Net imports of 2, 4 and 1 kWh in 0.5 h slots (4, 8, 2 kW), then a
        // net export; periods 0, 0, 1, 1.
        let mut acc = KpiAccumulator::new(1, 0.0).with_demand_charge(10.0);
        for (import, export, period) in [(2.0, 0.0, 0), (4.0, 0.0, 0), (1.0, 0.0, 1), (0.0, 3.0, 1)]
        {
            let s = Settlement {
                grid_import_kwh: import,
                grid_export_kwh: export,
                ..Default::default()
            };
            acc.record(0, &HouseholdSlot { settlement: s, ..Default::default() }, &t);
            acc.end_slot_in(0.5, 0.0, period);
        }
        let k = acc.finish();
        assert_eq!(k.demand_charge, 10.0 * 8.0 + 10.0 * 2.0);
        assert_eq!(k.community_cost, k.demand_charge, "no energy was priced in this test");
        assert_eq!(k.peak_import_kw, 8.0);
        // Without a charge nothing is added and nothing is serialised.
        let mut plain = KpiAccumulator::new(1, 0.0);
        plain.end_slot_in(0.5, 0.0, 3);
        let k = plain.finish();
        assert_eq!(k.demand_charge, 0.0);
        assert!(!serde_json::to_string(&k).unwrap().contains("demand"));
    }
}
