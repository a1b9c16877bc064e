//! What the MPC baseline costs and how long its LPs take, on the bundled
//! data's test days with the default 24-household community, beside
//! rule-based and the perfect-foresight optimum. Prints a Markdown table
//! (`cargo bench -p peergrid-eval --bench mpc`).

// A benchmark measures wall-clock time: the pure crates' ban on reading
// the clock (clippy.toml) does not apply here.
#![allow(clippy::disallowed_methods)]

use std::sync::Arc;
use std::time::Instant;

use peergrid_core::data::citylearn::bundled_citylearn;
use peergrid_core::data::split::{SplitPart, WeekSplit};
use peergrid_core::evaluation::evaluate;
use peergrid_core::forecast::ForecastConfig;
use peergrid_core::policy::RuleBased;
use peergrid_core::prosumer::{generate_community, CommunityConfig};
use peergrid_core::simulation::SimConfig;
use peergrid_eval::days::days_of_part;
use peergrid_eval::mpc::run_mpc;
use peergrid_eval::optimum::solve_optimum;
use peergrid_eval::EvalScenario;

fn main() {
    let ds = Arc::new(bundled_citylearn().expect("bundled data loads"));
    let all_days = days_of_part(&ds, &WeekSplit::default(), SplitPart::Test);
    let prosumers = generate_community(
        &ds,
        &CommunityConfig { n_prosumers: 24, seed: 7, ..CommunityConfig::default() },
    )
    .expect("community");
    println!("| days | horizon h | rule-based | mpc | optimum | mpc gap closed | LPs | fallbacks | mean LP vars | mean solve per slot | slowest slot | mpc wall |");
    println!("| ---: | --------: | ---------: | --: | ------: | -------------: | --: | --------: | -----------: | ------------------: | -----------: | -------: |");
    let week = 7;
    let all = all_days.len();
    for (n_days, horizon_hours) in [(week, 6), (week, 12), (week, 24), (week, 48), (all, 24)] {
        let scenario = EvalScenario {
            ds: ds.clone(),
            prosumers: prosumers.clone(),
            sim: SimConfig::default(),
            days: all_days[..n_days].to_vec(),
        };
        let slots = scenario.slots();
        let rule = evaluate(&ds, &prosumers, &scenario.sim, &slots, &mut [&mut RuleBased])
            .expect("rule-based")[0]
            .kpis
            .community_cost;
        let optimum = solve_optimum(&ds, &prosumers, &scenario.sim, &slots)
            .expect("optimum")
            .summary
            .lower_bound_cost;
        let forecast = ForecastConfig { horizon_hours, ..ForecastConfig::default() };
        let started = Instant::now();
        let run = run_mpc(&scenario, &forecast, None).expect("mpc");
        let wall = started.elapsed();
        let mpc = run.row.kpis.community_cost;
        let r = &run.report;
        println!(
            "| {n_days} | {horizon_hours} | {rule:.2} | {mpc:.2} | {optimum:.2} | {:.1} % | {} | {} | {:.0} | {:.1} ms | {:.1} ms | {:.1} s |",
            100.0 * (rule - mpc) / (rule - optimum),
            r.solves,
            r.fallback_slots,
            r.mean_variables,
            1e3 * run.solve_total.as_secs_f64() / r.solves as f64,
            1e3 * run.solve_max.as_secs_f64(),
            wall.as_secs_f64()
        );
    }
}
