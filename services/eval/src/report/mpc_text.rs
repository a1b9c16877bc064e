//! The MPC baseline's part of `report.md`: what it planned with, how close
//! it came, and how good its forecasts were (MAE and RMSE per hour ahead
//! beside the naive "same slot yesterday").

use std::fmt::Write;

use peergrid_core::forecast::ForecastErrors;

use super::table::render;
use crate::compare::{Evaluation, LEARNED, MPC};
use crate::mpc::MpcReport;

/// Hours ahead the forecast table shows (those measured).
const SHOWN_HOURS: [f64; 7] = [1.0, 2.0, 3.0, 6.0, 12.0, 18.0, 24.0];

/// The MPC paragraph and the forecast table, or why MPC is missing.
pub(super) fn write_mpc(md: &mut String, evaluation: &Evaluation) -> std::fmt::Result {
    let (Some(report), Some(errors)) = (&evaluation.mpc, &evaluation.forecast_errors) else {
        if let Some(why) = &evaluation.mpc_skipped {
            writeln!(md, "MPC: {why}.\n")?;
        }
        return Ok(());
    };
    writeln!(md, "### MPC baseline\n")?;
    write_summary(md, evaluation, report)?;
    writeln!(md, "### Forecast error\n")?;
    write_forecast_table(md, errors)
}

fn write_summary(md: &mut String, evaluation: &Evaluation, r: &MpcReport) -> std::fmt::Result {
    let f = &r.forecast;
    write!(
        md,
        "`mpc` re-plans the whole community every slot with the optimum's linear program over a \
         rolling window of {} slots (this one and the next {} hours), from this slot's measured load \
         and PV, forecasts after it (same-hour mean of the last {} days plus the current anomaly, \
         half-life {} h; never the true future) and the known tariff, and applies only the first \
         slot's decision, through the same safety filter, auction and settlement as every policy. \
         {} LPs, mean {:.0} variables and {:.0} constraints, {:.1} Clarabel iterations; {} slots fell \
         back to the rule-based action. Solve times are under Timings.",
        r.window_slots,
        f.horizon_hours,
        f.history_days,
        f.anomaly_half_life_hours,
        r.solves,
        r.mean_variables,
        r.mean_constraints,
        r.mean_iterations,
        r.fallback_slots
    )?;
    if let Some(pct) = evaluation.gap_closed_by_pct(MPC) {
        write!(md, " It closes **{pct:.1} %** of the rule-based → optimum gap")?;
        if let Some(learned) = evaluation.gap_closed_pct() {
            write!(md, " (the {LEARNED} policy: {learned:.1} %)")?;
        }
        write!(md, ".")?;
    }
    writeln!(md, "\n")
}

fn write_forecast_table(md: &mut String, e: &ForecastErrors) -> std::fmt::Result {
    writeln!(
        md,
        "Per household and slot, kWh, over the evaluated slots (mean load {:.3} kWh, mean PV {:.3} kWh \
         per household and slot); `naive` is the same slot of the last day before the forecast.\n",
        e.mean_load_kwh, e.mean_pv_kwh
    )?;
    let header: Vec<String> = [
        "hours ahead",
        "load MAE",
        "load RMSE",
        "load naive MAE",
        "PV MAE",
        "PV RMSE",
        "PV naive MAE",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let body: Vec<Vec<String>> = SHOWN_HOURS
        .iter()
        .filter_map(|h| e.at_hours(*h))
        .map(|h| {
            let mut row = vec![format!("{}", h.hours_ahead)];
            row.extend(
                [
                    h.load_mae_kwh,
                    h.load_rmse_kwh,
                    h.load_naive_mae_kwh,
                    h.pv_mae_kwh,
                    h.pv_rmse_kwh,
                    h.pv_naive_mae_kwh,
                ]
                .iter()
                .map(|v| format!("{v:.3}")),
            );
            row
        })
        .collect();
    writeln!(md, "{}", render(&header, &body))?;
    let (load, pv) = e.mean_mae_kwh();
    writeln!(
        md,
        "Mean over all {} hours ahead: load MAE {load:.3} kWh, PV MAE {pv:.3} kWh ([kpis.json](kpis.json) \
         has every hour).\n",
        e.by_horizon.len()
    )
}
