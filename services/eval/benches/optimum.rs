//! How long the perfect-foresight LP takes to build and solve, by community
//! size and horizon, on the bundled data's held-out days with the default
//! community mix. Prints a Markdown table (`cargo bench -p peergrid-eval`);
//! each case is solved `RUNS` times and the fastest run is reported.

// A benchmark measures wall-clock time: the pure crates' ban on reading
// the clock (clippy.toml) does not apply here.
#![allow(clippy::disallowed_methods)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use peergrid_core::data::citylearn::bundled_citylearn;
use peergrid_core::data::split::{SplitPart, WeekSplit};
use peergrid_core::prosumer::{generate_community, CommunityConfig};
use peergrid_core::simulation::SimConfig;
use peergrid_eval::days::{days_of_part, schedule_of};
use peergrid_eval::optimum::solve_optimum;

const RUNS: usize = 3;

fn main() {
    let ds = Arc::new(bundled_citylearn().expect("bundled data loads"));
    let days = days_of_part(&ds, &WeekSplit::default(), SplitPart::Test);
    let cfg = SimConfig::default();
    println!("| households | days | slots | battery households | variables | constraints | solve (incl. build) | iterations |");
    println!("| ---------: | ---: | ----: | -----------------: | --------: | ----------: | ------------------: | ---------: |");
    for (households, n_days) in [(24, 1), (24, 7), (24, 28), (24, days.len()), (100, 7), (240, 7)] {
        let community =
            CommunityConfig { n_prosumers: households, seed: 7, ..CommunityConfig::default() };
        let prosumers = generate_community(&ds, &community).expect("community");
        let slots = schedule_of(&days[..n_days]);
        let mut best = Duration::MAX;
        let mut summary = None;
        for _ in 0..RUNS {
            let started = Instant::now();
            let plan = solve_optimum(&ds, &prosumers, &cfg, &slots).expect("optimum");
            best = best.min(started.elapsed());
            summary = Some(plan.summary);
        }
        let s = summary.expect("at least one run");
        println!(
            "| {households} | {n_days} | {} | {} | {} | {} | {:.3} s | {} |",
            slots.len(),
            s.battery_households,
            s.variables,
            s.constraints,
            best.as_secs_f64(),
            s.solver_iterations
        );
    }
}
