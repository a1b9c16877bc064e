//! `report.md`: the human-readable report.
//!
//! Everything a reader needs to know what was run and how each policy did,
//! in a fixed order: the command and data, the community, tariff, market and
//! feeder settings, the held-out days, the KPI table (the same numbers as
//! `kpis.json`, rounded as the table says), the gap closed, the optimum's
//! LP, links to the plots and files, and the wall-clock timings.

use std::fmt::Write;

use peergrid_core::market::Mechanism;
use peergrid_core::tariff::{DemandPeriod, GridConfig, TariffConfig};

use super::day::RepresentativeDay;
use super::files::community_summary;
use super::mpc_text::write_mpc;
use super::plots::Plot;
use super::table::kpi_table;
use super::{LearningPoint, RunInfo};
use crate::compare::{EvalScenario, Evaluation, LEARNED, OPTIMUM, RULE_BASED};

/// Renders the report (writing to a `String` cannot fail).
pub(super) fn report(
    info: &RunInfo,
    scenario: &EvalScenario,
    evaluation: &Evaluation,
    day: &RepresentativeDay,
    curve: &[LearningPoint],
    plots: &[Plot],
) -> String {
    let mut md = String::new();
    let _ = write_report(&mut md, info, scenario, evaluation, day, curve, plots);
    md
}

fn write_report(
    md: &mut String,
    info: &RunInfo,
    scenario: &EvalScenario,
    evaluation: &Evaluation,
    day: &RepresentativeDay,
    curve: &[LearningPoint],
    plots: &[Plot],
) -> std::fmt::Result {
    writeln!(md, "# peergrid evaluation report\n")?;
    writeln!(
        md,
        "`{}` on dataset `{}` ({}-minute slots), seed {}.\n",
        info.command, info.dataset, info.slot_minutes, info.seed
    )?;
    write_scenario(md, info, scenario, evaluation)?;
    write_kpis(md, info, evaluation)?;
    writeln!(md, "## Plots\n")?;
    for p in plots.iter().filter(|p| p.policy.is_none() && p.file == "kpis.png") {
        writeln!(md, "![{}]({})\n", p.title, p.file)?;
    }
    writeln!(
        md,
        "### A representative held-out day\n\nHeld-out day {} ({}), the day of median community PV ({:.1} kWh) among \
         those evaluated. Energy panel: community totals per slot; battery SoC: all storage of the community \
         (an EV away from home keeps its charge); prices: retail and feed-in, with the P2P clearing price where \
         the auction cleared.\n",
        day.day.number,
        day.day.weekday_name(),
        day.pv_kwh
    )?;
    for p in plots.iter().filter(|p| p.policy.is_some()) {
        writeln!(md, "![{}]({})\n", p.title, p.file)?;
    }
    if let Some(v) = &info.validation {
        validation_section(md, v, plots)?;
    }
    writeln!(md, "### Learning curve\n")?;
    match plots.iter().find(|p| p.file == "learning-curve.png") {
        Some(p) => writeln!(
            md,
            "{} PPO updates, from update {} to {}.\n\n![{}]({})\n",
            curve.len(),
            curve.first().map_or(0, |p| p.update),
            curve.last().map_or(0, |p| p.update),
            p.title,
            p.file
        )?,
        None => writeln!(md, "No training in this run, so no learning curve.\n")?,
    }
    writeln!(
        md,
        "## Files\n\n- [kpis.csv](kpis.csv): every KPI of every policy at full precision.\n\
         - [kpis.json](kpis.json): the same, with this run's settings, the LP's summary and the learning curve.\n\
         - [slots.csv](slots.csv): every slot of every policy (community energy flows, stored energy, prices).\n\
         - [config.json](config.json): the effective configuration (`--scenario config.json` reruns it).\n"
    )?;
    writeln!(md, "## Timings\n\nWall clock on the machine that wrote this report:\n")?;
    for (step, took) in &evaluation.timings {
        writeln!(md, "- {step}: {:.3} s", took.as_secs_f64())?;
    }
    Ok(())
}

fn write_scenario(
    md: &mut String,
    info: &RunInfo,
    scenario: &EvalScenario,
    evaluation: &Evaluation,
) -> std::fmt::Result {
    writeln!(md, "## Scenario and settings\n")?;
    let (households, by_kind, storage) = community_summary(scenario);
    let kinds: Vec<String> = by_kind.iter().map(|(kind, n)| format!("{n} {kind}")).collect();
    writeln!(
        md,
        "- Community: {households} households ({}), {storage:.1} kWh of storage (home batteries and EVs); \
         generator seed {}.",
        kinds.join(", "),
        info.community.seed
    )?;
    writeln!(md, "- Tariff: {}.", tariff_text(&info.sim.tariff))?;
    writeln!(
        md,
        "- Market: {}; grid: {}.",
        mechanism_text(&info.sim.mechanism),
        grid_text(&info.sim.grid)
    )?;
    let slots = scenario.slots().len();
    writeln!(
        md,
        "- Evaluated on the **{} split**: test weeks are {} of the dataset, validation weeks are {}, \
         the rest trains; `--days {}` selects {} of the {} days ({slots} slots), played back to back.",
        info.evaluated_on,
        every_nth_week(info.split.test_every_nth_week),
        validation_weeks(info.split.validation_every_nth_week),
        info.days,
        scenario.days.len(),
        info.evaluated_on
    )?;
    match (&info.checkpoint, evaluation.row(LEARNED).is_some()) {
        (Some(c), _) => {
            writeln!(md, "- Learned policy: `{}` (policy version {}).", c.path, c.policy_version)?
        }
        (None, true) => writeln!(md, "- Learned policy: the policy trained in this run.")?,
        (None, false) => writeln!(md, "- Learned policy: none in this run.")?,
    }
    writeln!(md)
}

fn write_kpis(md: &mut String, info: &RunInfo, evaluation: &Evaluation) -> std::fmt::Result {
    writeln!(md, "## KPIs ({} split)\n", info.evaluated_on)?;
    let rows: Vec<(&str, &peergrid_core::kpi::Kpis)> =
        evaluation.rows.iter().map(|r| (r.policy.as_str(), &r.kpis)).collect();
    writeln!(md, "{}", kpi_table(&rows))?;
    let cost = |name| evaluation.row(name).map(|r| r.kpis.community_cost);
    match (evaluation.gap_closed_pct(), cost(RULE_BASED), cost(OPTIMUM)) {
        (Some(pct), Some(rule), Some(optimum)) => writeln!(
            md,
            "**Gap closed: {pct:.1} %.** The learned policy closes {pct:.1} % of the community-cost gap between \
             rule-based ({rule:.2}) and the optimum ({optimum:.2}).\n"
        )?,
        _ if evaluation.row(LEARNED).is_none() => writeln!(md, "Gap closed: not applicable, no learned policy in this run.\n")?,
        _ => writeln!(md, "Gap closed: not applicable (no optimum, or rule-based is already optimal).\n")?,
    }
    match (&evaluation.optimum, &evaluation.optimum_skipped) {
        (Some(o), _) => {
            let over = o.replayed_cost - o.lp.lower_bound_cost;
            writeln!(
                md,
                "The optimum is a perfect-foresight linear program over all {} slots ({} batteries, {} variables, \
                 {} constraints; Clarabel: {} in {} iterations). No policy can have a lower community cost. \
                 Played in the simulator, its plan costs {:.2} ({:+.3} %: whole-Wh order rounding{}).{}\n",
                o.lp.slots,
                o.lp.battery_households,
                o.lp.variables,
                o.lp.constraints,
                o.lp.solver_status,
                o.lp.solver_iterations,
                o.replayed_cost,
                100.0 * over / o.lp.lower_bound_cost.abs().max(1e-9),
                if over > 1e-3 * o.lp.lower_bound_cost.abs() { ", and energy the LP wastes but no household can" } else { "" },
                if o.lp.ev_shortfall_kwh > 0.0 {
                    format!(" Some EVs cannot charge in time: {:.1} kWh missing.", o.lp.ev_shortfall_kwh)
                } else {
                    String::new()
                }
            )?;
        }
        (None, Some(why)) => writeln!(md, "Optimum: {why}.\n")?,
        (None, None) => {}
    }
    write_mpc(md, evaluation)
}

fn tariff_text(t: &TariffConfig) -> String {
    let hours = |ranges: &[[u8; 2]]| {
        ranges.iter().map(|r| format!("{}–{} h", r[0], r[1])).collect::<Vec<_>>().join(", ")
    };
    let demand = if t.demand_charge_per_kw > 0.0 {
        let period = match t.demand_charge_period {
            DemandPeriod::Daily => "day",
            DemandPeriod::Monthly => "30 days",
        };
        format!(
            "; demand charge {} per kW of the community's peak net import every {period} \
             (in the community cost, not in the households' rewards)",
            t.demand_charge_per_kw
        )
    } else {
        String::new()
    };
    format!(
        "time of use {} / {} / {} per kWh (off-peak / shoulder {} / peak {}), feed-in {} per kWh{demand}",
        t.off_peak_per_kwh,
        t.shoulder_per_kwh,
        t.peak_per_kwh,
        hours(&t.shoulder_hours),
        hours(&t.peak_hours),
        t.feed_in_per_kwh
    )
}

fn mechanism_text(m: &Mechanism) -> String {
    match m {
        Mechanism::Uniform { k } => format!("uniform-price double auction (k = {k})"),
        Mechanism::PayAsBid { pricing } => format!("pay-as-bid ({pricing:?} pricing)"),
    }
}

fn grid_text(g: &GridConfig) -> String {
    let limit = |kw: f64| if kw.is_finite() { format!("{kw} kW") } else { "none".into() };
    format!(
        "P2P distribution loss {} %, feeder import limit {}, export limit {} (overload penalty {} per kWh)",
        100.0 * g.p2p_loss_fraction,
        limit(g.feeder_import_limit_kw),
        limit(g.feeder_export_limit_kw),
        g.overload_penalty_per_kwh
    )
}

/// "weeks 2, 10, 18, …" (the rule of `peergrid_core::data::split`).
fn validation_weeks(n: u32) -> String {
    match n {
        0 => "none".into(),
        1 => "every week that is not a test week".into(),
        n => format!(
            "weeks 2, {}, {}, … (every {})",
            2 + n,
            2 + 2 * n,
            every_nth_week(n).trim_start_matches("every ")
        ),
    }
}

/// "every week", "every 2nd week", "every 4th week", "every 11th week"…
fn every_nth_week(n: u32) -> String {
    let suffix = match (n % 10, n % 100) {
        (_, 11..=13) => "th",
        (1, _) => "st",
        (2, _) => "nd",
        (3, _) => "rd",
        _ => "th",
    };
    if n == 1 {
        "every week".into()
    } else {
        format!("every {n}{suffix} week")
    }
}

/// Which update's policy the run kept, on which days, against the baselines.
fn validation_section(
    md: &mut String,
    v: &super::validation::ValidationCurve,
    plots: &[Plot],
) -> std::fmt::Result {
    writeln!(md, "### Validation during training\n")?;
    let baselines: Vec<String> =
        v.baselines.iter().map(|b| format!("{} {:.2}", b.policy, b.community_cost)).collect();
    match v.best {
        Some(best) => writeln!(
            md,
            "Every {} updates the deterministic policy played the {} validation days \
             (never trained on, never reported); the policy of update {} (version {}) had the \
             lowest community cost there, {:.2} (baselines: {}), and is the learned policy of \
             this report.\n",
            v.every,
            v.days,
            best.update,
            best.policy_version,
            best.community_cost,
            baselines.join(", ")
        )?,
        None => writeln!(md, "No validation point was recorded.\n")?,
    }
    if let Some(p) = plots.iter().find(|p| p.file == "validation-curve.png") {
        writeln!(md, "![{}]({})\n", p.title, p.file)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinals_read_as_english() {
        let said: Vec<String> =
            [1, 2, 3, 4, 11, 12, 13, 21, 22, 104].into_iter().map(every_nth_week).collect();
        assert_eq!(
            said,
            [
                "every week",
                "every 2nd week",
                "every 3rd week",
                "every 4th week",
                "every 11th week",
                "every 12th week"
            ]
            .into_iter()
            .chain(["every 13th week", "every 21st week", "every 22nd week", "every 104th week"])
            .collect::<Vec<_>>()
        );
    }
}
