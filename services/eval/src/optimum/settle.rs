//! Settling an [`OptimumPlan`] into the KPIs and per-slot records every
//! simulated policy gets.
//!
//! Each slot is settled as the market would settle it if every household
//! offered its whole position: the P2P volume is shared pro rata among
//! buyers (by deficit) and sellers (by surplus), buyers receive it minus the
//! distribution loss, residuals go to the grid at the slot's tariff. Then the
//! core's own [`apply_feeder_limits`], [`DemandCharge`], [`household_slot`] and
//! [`KpiAccumulator`] take over, so every KPI (Gini included) has exactly
//! the definition it has for a simulated policy. The LP has no auction: P2P
//! energy is priced at the tariff midpoint, which only matters for the
//! per-household bills behind the Gini (payments cancel in the community
//! cost), and records carry no clearing price.

use peergrid_core::battery::BatteryStep;
use peergrid_core::data::Dataset;
use peergrid_core::household::HouseholdReport;
use peergrid_core::kpi::{KpiAccumulator, Kpis};
use peergrid_core::prosumer::ProsumerSpec;
use peergrid_core::settlement::{apply_feeder_limits, DemandCharge, Settlement};
use peergrid_core::simulation::{demand_period, slot_hour, SimConfig, SlotRecord};
use peergrid_core::slot_engine::household_slot;
use peergrid_core::tariff::SlotTariff;

use super::{HouseholdPlan, OptimumPlan};
use crate::error::EvalError;

/// The optimum as a policy row: KPIs and one record per slot.
#[derive(Clone, Debug)]
pub struct SettledOptimum {
    pub kpis: Kpis,
    pub records: Vec<SlotRecord>,
}

impl OptimumPlan {
    /// KPIs and per-slot records of the plan for the community it was
    /// solved for. `baseline_costs` are the per-household bills of a
    /// grid-only run over the same slots (what every evaluated policy's
    /// savings are measured against), or `None` for the plain load − PV bill.
    pub fn settle(
        &self,
        ds: &Dataset,
        prosumers: &[ProsumerSpec],
        cfg: &SimConfig,
        baseline_costs: Option<Vec<f64>>,
    ) -> Result<SettledOptimum, EvalError> {
        let n = prosumers.len();
        if self.households.len() != n {
            return Err(EvalError::invalid(
                "prosumers",
                format!("the plan is for {} households, got {n}", self.households.len()),
            ));
        }
        for p in prosumers {
            p.validate(ds)?;
        }
        let capacity: f64 =
            prosumers.iter().filter_map(|p| p.battery.map(|b| b.capacity_kwh)).sum();
        let mut kpi =
            KpiAccumulator::new(n, capacity).with_demand_charge(cfg.tariff.demand_charge_per_kw);
        if let Some(costs) = baseline_costs {
            if costs.len() != n || costs.iter().any(|c| !c.is_finite()) {
                return Err(EvalError::invalid(
                    "baseline_costs",
                    format!("need {n} finite values, got {}", costs.len()),
                ));
            }
            kpi = kpi.with_baseline_costs(costs);
        }
        let mut records = Vec::with_capacity(self.slots.len());
        let mut settlements = Vec::with_capacity(n);
        let mut demand = DemandCharge::new(cfg.tariff.demand_charge_per_kw);
        for (k, &t) in self.slots.iter().enumerate() {
            let tariff = cfg.tariff_of(ds, t);
            let hours = ds.slot_hours();
            self.settle_slot(k, &tariff, cfg.grid.p2p_loss_fraction, &mut settlements);
            let feeder = apply_feeder_limits(&mut settlements, &cfg.grid, hours);
            let period = demand_period(ds, cfg, t);
            demand.apply(&mut settlements, &feeder, period);
            let mut rec = SlotRecord {
                data_slot: t,
                hour: slot_hour(ds, t),
                retail_per_kwh: tariff.retail.per_kwh(),
                feed_in_per_kwh: tariff.feed_in.per_kwh(),
                ..SlotRecord::default()
            };
            for (i, ((p, h), s)) in
                prosumers.iter().zip(&self.households).zip(&settlements).enumerate()
            {
                let report = household_report(p, h, k, ds, t);
                let slot = household_slot(&report, s, &tariff, &cfg.reward);
                kpi.record(i, &slot, &tariff);
                rec.load_kwh += report.load_kwh;
                rec.pv_kwh += report.pv_kwh;
                rec.battery_charged_kwh += report.battery.charged_kwh;
                rec.battery_discharged_kwh += report.battery.discharged_kwh;
                rec.grid_import_kwh += s.grid_import_kwh;
                rec.grid_export_kwh += s.grid_export_kwh;
                rec.p2p_kwh += s.p2p_sold_kwh;
                rec.p2p_losses_kwh += s.p2p_bought_kwh - s.p2p_received_kwh;
                rec.p2p_paid += s.p2p_paid;
                rec.p2p_received += s.p2p_revenue;
                rec.stored_kwh += report.stored_kwh;
                rec.mean_reward += slot.reward;
            }
            rec.mean_reward /= n.max(1) as f64;
            kpi.end_slot_in(hours, feeder.overload_kwh, period);
            records.push(rec);
        }
        Ok(SettledOptimum { kpis: kpi.finish(), records })
    }

    /// Every household's settlement of slot `k` before feeder limits.
    fn settle_slot(&self, k: usize, tariff: &SlotTariff, loss: f64, out: &mut Vec<Settlement>) {
        let deficit: f64 = self.households.iter().map(|h| h.deficit_kwh[k]).sum();
        let surplus: f64 = self.households.iter().map(|h| h.surplus_kwh[k]).sum();
        let p2p = self.p2p_kwh[k];
        let price = tariff.midpoint().per_kwh();
        out.clear();
        for h in &self.households {
            let bought = if deficit > 0.0 { p2p * h.deficit_kwh[k] / deficit } else { 0.0 };
            let sold = if surplus > 0.0 { p2p * h.surplus_kwh[k] / surplus } else { 0.0 };
            let received = bought * (1.0 - loss);
            let (import, export) =
                ((h.deficit_kwh[k] - received).max(0.0), (h.surplus_kwh[k] - sold).max(0.0));
            out.push(Settlement {
                grid_import_kwh: import,
                grid_export_kwh: export,
                p2p_bought_kwh: bought,
                p2p_received_kwh: received,
                p2p_sold_kwh: sold,
                p2p_paid: bought * price,
                p2p_revenue: sold * price,
                import_cost: import * tariff.retail.per_kwh(),
                export_revenue: export * tariff.feed_in.per_kwh(),
                overload_penalty: 0.0,
                demand_charge: 0.0,
            });
        }
    }
}

/// What household `p`, following `h`, reports in slot `k` (dataset slot `t`).
fn household_report(
    p: &ProsumerSpec,
    h: &HouseholdPlan,
    k: usize,
    ds: &Dataset,
    t: usize,
) -> HouseholdReport {
    let (charged, discharged) = (h.charge_kwh[k], h.discharge_kwh[k]);
    let e = h.one_way_efficiency.unwrap_or(1.0);
    let battery = BatteryStep {
        charged_kwh: charged,
        discharged_kwh: discharged,
        losses_kwh: charged * (1.0 - e) + discharged * (1.0 / e - 1.0),
        stored_delta_kwh: charged * e - discharged / e,
    };
    HouseholdReport {
        prosumer_id: p.id,
        load_kwh: p.trace.load_kwh(ds, t),
        pv_kwh: p.trace.pv_kwh(ds, t),
        net_kwh: h.deficit_kwh[k] - h.surplus_kwh[k],
        battery,
        degradation_cost: p
            .battery
            .map_or(0.0, |b| b.degradation_cost_per_kwh * battery.throughput_kwh()),
        ev_shortfall_kwh: h.ev_shortfall_kwh[k],
        stored_kwh: h.stored_kwh[k],
        order: None,
    }
}
