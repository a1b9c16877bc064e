//! Episode KPIs: `peergrid_core::kpi::Kpis` ⇄ wire `Kpis`.
//!
//! KPIs only travel from the market to observers, so both directions are
//! plain field copies; the exhaustive destructuring makes adding a KPI to the
//! core without adding it here a compile error.

use peergrid_core::kpi::Kpis;

use crate::pb::common::v1 as pb;

impl From<&Kpis> for pb::Kpis {
    fn from(k: &Kpis) -> pb::Kpis {
        let Kpis {
            slots,
            prosumers,
            load_kwh,
            pv_kwh,
            grid_import_kwh,
            grid_export_kwh,
            peak_import_kw,
            community_cost,
            grid_only_cost,
            p2p_kwh,
            self_sufficiency_pct,
            self_consumption_pct,
            co2_kg,
            battery_cycles,
            gini_savings,
            p2p_losses_kwh,
            battery_losses_kwh,
            ev_shortfall_kwh,
            overload_kwh,
            mean_reward,
            demand_charge,
        } = k.clone();
        pb::Kpis {
            slots,
            prosumers,
            load_kwh,
            pv_kwh,
            grid_import_kwh,
            grid_export_kwh,
            peak_import_kw,
            community_cost,
            grid_only_cost,
            p2p_kwh,
            self_sufficiency_pct,
            self_consumption_pct,
            co2_kg,
            battery_cycles,
            gini_savings,
            p2p_losses_kwh,
            battery_losses_kwh,
            ev_shortfall_kwh,
            overload_kwh,
            mean_reward,
            demand_charge,
        }
    }
}

impl From<&pb::Kpis> for Kpis {
    fn from(k: &pb::Kpis) -> Kpis {
        let pb::Kpis {
            slots,
            prosumers,
            load_kwh,
            pv_kwh,
            grid_import_kwh,
            grid_export_kwh,
            peak_import_kw,
            community_cost,
            grid_only_cost,
            p2p_kwh,
            self_sufficiency_pct,
            self_consumption_pct,
            co2_kg,
            battery_cycles,
            gini_savings,
            p2p_losses_kwh,
            battery_losses_kwh,
            ev_shortfall_kwh,
            overload_kwh,
            mean_reward,
            demand_charge,
        } = *k;
        Kpis {
            slots,
            prosumers,
            load_kwh,
            pv_kwh,
            grid_import_kwh,
            grid_export_kwh,
            peak_import_kw,
            community_cost,
            grid_only_cost,
            p2p_kwh,
            self_sufficiency_pct,
            self_consumption_pct,
            co2_kg,
            battery_cycles,
            gini_savings,
            p2p_losses_kwh,
            battery_losses_kwh,
            ev_shortfall_kwh,
            overload_kwh,
            mean_reward,
            demand_charge,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_field() {
        // Distinct values per field, so a swapped pair would show.
        let k = Kpis {
            slots: 1,
            prosumers: 2,
            load_kwh: 3.0,
            pv_kwh: 4.0,
            grid_import_kwh: 5.0,
            grid_export_kwh: 6.0,
            peak_import_kw: 7.0,
            community_cost: 8.0,
            grid_only_cost: 9.0,
            p2p_kwh: 10.0,
            self_sufficiency_pct: 11.0,
            self_consumption_pct: 12.0,
            co2_kg: 13.0,
            battery_cycles: 14.0,
            gini_savings: 15.0,
            p2p_losses_kwh: 16.0,
            battery_losses_kwh: 17.0,
            ev_shortfall_kwh: 18.0,
            overload_kwh: 19.0,
            mean_reward: -20.0,
            demand_charge: 21.0,
        };
        let wire = pb::Kpis::from(&k);
        assert_eq!(wire.co2_kg, 13.0);
        assert_eq!(wire.mean_reward, -20.0);
        assert_eq!(Kpis::from(&wire), k);
    }
}
