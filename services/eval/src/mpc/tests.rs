use std::sync::Arc;

use peergrid_core::data::split::{SplitPart, WeekSplit};
use peergrid_core::data::synthetic::synthetic_dataset;
use peergrid_core::data::Dataset;
use peergrid_core::evaluation::evaluate;
use peergrid_core::household::Household;
use peergrid_core::policy::RuleBased;
use peergrid_core::prosumer::{generate_community, CommunityConfig};
use peergrid_core::simulation::{slot_context, SimConfig};

use super::*;
use crate::days::days_of_part;
use crate::optimum::solve_optimum;

/// 8 households on 8 synthetic weeks, the first two test days.
fn scenario(seed: u64) -> EvalScenario {
    let ds = Arc::new(synthetic_dataset(4, 56, 60, seed));
    let prosumers =
        generate_community(&ds, &CommunityConfig { n_prosumers: 8, seed, ..Default::default() })
            .unwrap();
    let days = days_of_part(&ds, &WeekSplit::default(), SplitPart::Test)[..2].to_vec();
    EvalScenario { ds, prosumers, sim: SimConfig::default(), days }
}

#[test]
fn mpc_lies_between_the_optimum_and_rule_based_and_is_deterministic() {
    let s = scenario(3);
    let cfg = ForecastConfig::default();
    let run = run_mpc(&s, &cfg, None).unwrap();
    assert_eq!(run.report.solves, 48);
    assert_eq!(run.report.fallback_slots, 0);
    assert_eq!(run.report.window_slots, 25);
    assert_eq!(run.row.records.len(), 48);
    for r in &run.row.records {
        assert!(r.energy_balance_error_kwh().abs() < 1e-9 * r.load_kwh.max(1.0), "{r:?}");
    }
    let mpc = run.row.kpis.community_cost;
    let optimum = solve_optimum(&s.ds, &s.prosumers, &s.sim, &s.slots()).unwrap();
    let rows = evaluate(&s.ds, &s.prosumers, &s.sim, &s.slots(), &mut [&mut RuleBased]).unwrap();
    let rule = rows[0].kpis.community_cost;
    assert!(mpc >= optimum.summary.lower_bound_cost - 1e-6, "{mpc} vs {optimum:?}");
    assert!(mpc < rule, "MPC {mpc} should beat rule-based {rule}");
    assert_eq!(run.row.kpis.grid_only_cost, rows[0].kpis.grid_only_cost, "same baseline");
    let again = run_mpc(&s, &cfg, None).unwrap();
    assert_eq!(again.row.kpis, run.row.kpis);
    assert_eq!(again.report, run.report);
}

#[test]
fn with_a_demand_charge_mpc_lowers_its_peak_and_is_never_below_the_optimum() {
    let mut s = scenario(3);
    let plain = run_mpc(&s, &ForecastConfig::default(), None).unwrap();
    s.sim.tariff.demand_charge_per_kw = 2.0;
    let run = run_mpc(&s, &ForecastConfig::default(), None).unwrap();
    let optimum = solve_optimum(&s.ds, &s.prosumers, &s.sim, &s.slots()).unwrap();
    let k = &run.row.kpis;
    assert!(k.demand_charge > 0.0 && k.community_cost >= optimum.summary.lower_bound_cost - 1e-6);
    assert!(k.peak_import_kw <= plain.row.kpis.peak_import_kw + 1e-6, "{k:?}");
    assert_eq!(run.report.fallback_slots, 0);
}

#[test]
fn a_window_never_reads_load_or_pv_after_its_slot() {
    let s = scenario(5);
    let mut prosumers = s.prosumers.clone();
    for p in &mut prosumers {
        // Run slot = dataset slot, so "after t" is the same in both.
        p.trace.shift_slots = 0;
    }
    let t = s.slots()[30];
    let mut later = (*s.ds).clone();
    for home in &mut later.homes {
        for v in home.load_kwh[t + 1..].iter_mut().chain(home.pv_kwh_per_kwp[t + 1..].iter_mut()) {
            *v = *v * 3.0 + 0.5;
        }
    }
    let input_on = |ds: &Dataset| {
        let ctx = slot_context(ds, &s.sim, t, None);
        let mut households: Vec<Household> =
            prosumers.iter().map(|p| Household::new(p.clone(), 0)).collect();
        for h in &mut households {
            h.begin_slot(&ctx);
        }
        let cfg = ForecastConfig::default();
        let mut f = Forecasts::new(SeriesShape::of(ds, &cfg), cfg.horizon_slots(ds), 8);
        window_input(ds, &s.sim, &households, t, &mut f, 0.0, 0.0)
    };
    let (a, b) = (input_on(&s.ds), input_on(&later));
    assert_eq!(a.schedule, (t..t + 25).collect::<Vec<_>>());
    assert_eq!(a.prices, b.prices);
    for (x, y) in a.households.iter().zip(&b.households) {
        assert_eq!(x.net_kwh, y.net_kwh);
        assert_eq!(x.net_kwh.len(), 25);
    }
    // …while the truth after t did change.
    assert_ne!(
        prosumers[0].trace.load_kwh(&s.ds, t + 1),
        prosumers[0].trace.load_kwh(&later, t + 1)
    );
}
