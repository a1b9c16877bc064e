//! What the MPC baseline costs and how long its LPs take, on the bundled
//! data's test days with the default 24-household community, beside
//! rule-based and the perfect-foresight optimum, with and without a demand
//! charge; and the forecaster's error on the validation days for a few
//! settings (how the defaults were chosen) and on the test days. Prints
//! Markdown tables (`cargo bench -p peergrid-eval --bench mpc`).

// A benchmark measures wall-clock time: the pure crates' ban on reading
// the clock (clippy.toml) does not apply here.
#![allow(clippy::disallowed_methods)]

use std::sync::Arc;
use std::time::Instant;

use peergrid_core::data::citylearn::bundled_citylearn;
use peergrid_core::data::split::{SplitPart, WeekSplit};
use peergrid_core::data::Dataset;
use peergrid_core::evaluation::evaluate;
use peergrid_core::forecast::{measure_forecast_errors, ForecastConfig};
use peergrid_core::policy::RuleBased;
use peergrid_core::prosumer::{generate_community, CommunityConfig, ProsumerSpec, TraceRef};
use peergrid_core::simulation::SimConfig;
use peergrid_core::tariff::TariffConfig;
use peergrid_eval::days::{days_of_part, schedule_of};
use peergrid_eval::mpc::run_mpc;
use peergrid_eval::optimum::solve_optimum;
use peergrid_eval::EvalScenario;

fn main() {
    let ds = Arc::new(bundled_citylearn().expect("bundled data loads"));
    let prosumers = generate_community(
        &ds,
        &CommunityConfig { n_prosumers: 24, seed: 7, ..CommunityConfig::default() },
    )
    .expect("community");
    forecast_tables(&ds, &prosumers);
    mpc_table(&ds, &prosumers);
}

fn forecast_tables(ds: &Dataset, prosumers: &[ProsumerSpec]) {
    let traces: Vec<TraceRef> = prosumers.iter().map(|p| p.trace).collect();
    let validation = schedule_of(&days_of_part(ds, &WeekSplit::default(), SplitPart::Validation));
    println!("Forecaster on the validation days (mean MAE over 1..24 h ahead, kWh per household-slot):\n");
    println!("| history days | half-life h | load MAE | PV MAE |");
    println!("| -----------: | ----------: | -------: | -----: |");
    for history_days in [3, 7, 14] {
        for half_life in [1.0, 2.0, 4.0] {
            let cfg = ForecastConfig {
                history_days,
                anomaly_half_life_hours: half_life,
                ..ForecastConfig::default()
            };
            let e = measure_forecast_errors(ds, &traces, &validation, &cfg).expect("forecast");
            let (load, pv) = e.mean_mae_kwh();
            println!("| {history_days} | {half_life} | {load:.4} | {pv:.4} |");
        }
    }
    let test = schedule_of(&days_of_part(ds, &WeekSplit::default(), SplitPart::Test));
    let e =
        measure_forecast_errors(ds, &traces, &test, &ForecastConfig::default()).expect("forecast");
    println!(
        "\nDefault forecaster on the test days (mean load {:.3} kWh, mean PV {:.3} kWh per household-slot):\n",
        e.mean_load_kwh, e.mean_pv_kwh
    );
    println!(
        "| hours ahead | load MAE | load RMSE | load naive MAE | PV MAE | PV RMSE | PV naive MAE |"
    );
    println!(
        "| ----------: | -------: | --------: | -------------: | -----: | ------: | -----------: |"
    );
    for h in [1.0, 2.0, 3.0, 6.0, 12.0, 24.0] {
        let x = e.at_hours(h).expect("measured");
        println!(
            "| {h} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} |",
            x.load_mae_kwh,
            x.load_rmse_kwh,
            x.load_naive_mae_kwh,
            x.pv_mae_kwh,
            x.pv_rmse_kwh,
            x.pv_naive_mae_kwh
        );
    }
    println!();
}

fn mpc_table(ds: &Arc<Dataset>, prosumers: &[ProsumerSpec]) {
    let all_days = days_of_part(ds, &WeekSplit::default(), SplitPart::Test);
    let charged = SimConfig {
        tariff: TariffConfig { demand_charge_per_kw: 0.3, ..TariffConfig::default() },
        ..SimConfig::default()
    };
    println!("| days | horizon h | demand charge | rule-based | mpc | optimum | mpc gap closed | peak kW rule / mpc / optimum | LPs | fallbacks | mean LP vars | mean solve per slot | slowest slot | mpc wall |");
    println!("| ---: | --------: | ------------: | ---------: | --: | ------: | -------------: | ---------------------------: | --: | --------: | -----------: | ------------------: | -----------: | -------: |");
    let (week, all) = (7, all_days.len());
    let plain = SimConfig::default();
    for (n_days, horizon_hours, sim) in [
        (week, 6, &plain),
        (week, 12, &plain),
        (week, 24, &plain),
        (week, 48, &plain),
        (all, 24, &plain),
        (all, 24, &charged),
    ] {
        let scenario = EvalScenario {
            ds: ds.clone(),
            prosumers: prosumers.to_vec(),
            sim: sim.clone(),
            days: all_days[..n_days].to_vec(),
        };
        let slots = scenario.slots();
        let rule = &evaluate(ds, prosumers, sim, &slots, &mut [&mut RuleBased]).expect("rule")[0];
        let plan = solve_optimum(ds, prosumers, sim, &slots).expect("optimum");
        let optimum = plan.settle(ds, prosumers, sim, None).expect("settle").kpis;
        let forecast = ForecastConfig { horizon_hours, ..ForecastConfig::default() };
        let started = Instant::now();
        let run = run_mpc(&scenario, &forecast, None).expect("mpc");
        let wall = started.elapsed();
        let (r, m) = (&rule.kpis, &run.row.kpis);
        let rep = &run.report;
        println!(
            "| {n_days} | {horizon_hours} | {} | {:.2} | {:.2} | {:.2} | {:.1} % | {:.1} / {:.1} / {:.1} | {} | {} | {:.0} | {:.1} ms | {:.1} ms | {:.1} s |",
            sim.tariff.demand_charge_per_kw,
            r.community_cost,
            m.community_cost,
            optimum.community_cost,
            100.0 * (r.community_cost - m.community_cost)
                / (r.community_cost - optimum.community_cost),
            r.peak_import_kw,
            m.peak_import_kw,
            optimum.peak_import_kw,
            rep.solves,
            rep.fallback_slots,
            rep.mean_variables,
            1e3 * run.solve_total.as_secs_f64() / rep.solves as f64,
            1e3 * run.solve_max.as_secs_f64(),
            wall.as_secs_f64()
        );
    }
}
