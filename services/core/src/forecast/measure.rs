//! How good the forecaster is: its error against the truth, per hour ahead.
//!
//! [`measure_forecast_errors`] makes the forecast every household would make
//! in every slot of a schedule and compares each of its `H` values with what
//! the data then holds. Errors are per household and slot, kWh; beside them
//! the error of the naive forecast "the same slot yesterday" (the last value
//! of that slot of day at or before `t`), so a reader sees what the
//! forecaster adds. Forecast targets beyond the dataset's end are skipped.

use serde::{Deserialize, Serialize};

use super::{forecast_series, ForecastConfig, SeriesShape};
use crate::data::Dataset;
use crate::error::CoreError;
use crate::prosumer::TraceRef;

/// The forecast error at one distance ahead, per household and slot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HorizonError {
    /// Hours between the forecast's slot and its target.
    pub hours_ahead: f64,
    /// Forecasts compared (households × slots).
    pub samples: u64,
    /// Mean absolute error of load, kWh.
    pub load_mae_kwh: f64,
    /// Root mean square error of load, kWh.
    pub load_rmse_kwh: f64,
    /// Mean absolute error of PV, kWh.
    pub pv_mae_kwh: f64,
    /// Root mean square error of PV, kWh.
    pub pv_rmse_kwh: f64,
    /// MAE of "load of the same slot yesterday", kWh.
    pub load_naive_mae_kwh: f64,
    /// MAE of "PV of the same slot yesterday", kWh.
    pub pv_naive_mae_kwh: f64,
}

/// The forecaster's settings and its error at every horizon slot.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ForecastErrors {
    /// What was measured.
    pub config: ForecastConfig,
    /// Mean load of the households per slot over the schedule, kWh: the scale of the errors.
    pub mean_load_kwh: f64,
    /// Mean PV per household and slot over the schedule, kWh.
    pub mean_pv_kwh: f64,
    /// One entry per slot ahead, `1..=H`.
    pub by_horizon: Vec<HorizonError>,
}

/// Sums of one horizon slot.
#[derive(Clone, Copy, Default)]
struct Sums {
    n: u64,
    abs: [f64; 2],
    sq: [f64; 2],
    naive_abs: [f64; 2],
}

/// Measures `cfg`'s forecasts of every household of `traces` made in every
/// slot of `slots` (validated against `ds` first).
pub fn measure_forecast_errors(
    ds: &Dataset,
    traces: &[TraceRef],
    slots: &[usize],
    cfg: &ForecastConfig,
) -> Result<ForecastErrors, CoreError> {
    cfg.validate(ds)?;
    if let Some(bad) = slots.iter().find(|t| **t >= ds.n_slots()) {
        return Err(CoreError::invalid(
            "schedule",
            format!("slot {bad} is beyond the dataset's {} slots", ds.n_slots()),
        ));
    }
    let shape = SeriesShape::of(ds, cfg);
    let horizon = cfg.horizon_slots(ds);
    let mut sums = vec![Sums::default(); horizon];
    let mut forecast = vec![0.0; horizon];
    let (mut load_total, mut pv_total, mut observed) = (0.0, 0.0, 0u64);
    for trace in traces {
        let series: [&dyn Fn(usize) -> f64; 2] =
            [&|s| trace.load_kwh(ds, s), &|s| trace.pv_kwh(ds, s)];
        for &t in slots {
            load_total += series[0](t);
            pv_total += series[1](t);
            observed += 1;
            for (which, x) in series.iter().enumerate() {
                forecast_series(x, t, &shape, &mut forecast);
                for (i, f) in forecast.iter().enumerate() {
                    let target = t + i + 1;
                    if target >= ds.n_slots() {
                        break;
                    }
                    let truth = x(target);
                    let naive = naive_same_slot(x, target, t, shape.slots_per_day);
                    let s = &mut sums[i];
                    s.abs[which] += (f - truth).abs();
                    s.sq[which] += (f - truth).powi(2);
                    s.naive_abs[which] += (naive - truth).abs();
                    if which == 0 {
                        s.n += 1;
                    }
                }
            }
        }
    }
    let hours = ds.slot_hours();
    let mean = |total: f64, n: u64| if n > 0 { total / n as f64 } else { 0.0 };
    let by_horizon = sums
        .iter()
        .enumerate()
        .map(|(i, s)| HorizonError {
            hours_ahead: (i + 1) as f64 * hours,
            samples: s.n,
            load_mae_kwh: mean(s.abs[0], s.n),
            load_rmse_kwh: mean(s.sq[0], s.n).sqrt(),
            pv_mae_kwh: mean(s.abs[1], s.n),
            pv_rmse_kwh: mean(s.sq[1], s.n).sqrt(),
            load_naive_mae_kwh: mean(s.naive_abs[0], s.n),
            pv_naive_mae_kwh: mean(s.naive_abs[1], s.n),
        })
        .collect();
    Ok(ForecastErrors {
        config: *cfg,
        mean_load_kwh: mean(load_total, observed),
        mean_pv_kwh: mean(pv_total, observed),
        by_horizon,
    })
}

/// The last value of `target`'s slot of day at or before `t` (or `x(t)` if
/// there is none).
fn naive_same_slot(x: &dyn Fn(usize) -> f64, target: usize, t: usize, day: usize) -> f64 {
    let lag = (target - t).div_ceil(day).max(1) * day;
    target.checked_sub(lag).map_or_else(|| x(t), x)
}

impl ForecastErrors {
    /// The error `hours` ahead, if measured.
    pub fn at_hours(&self, hours: f64) -> Option<&HorizonError> {
        self.by_horizon.iter().find(|e| (e.hours_ahead - hours).abs() < 1e-9)
    }

    /// Mean over all horizon slots of (load MAE, PV MAE), kWh.
    pub fn mean_mae_kwh(&self) -> (f64, f64) {
        let n = self.by_horizon.len().max(1) as f64;
        (
            self.by_horizon.iter().map(|e| e.load_mae_kwh).sum::<f64>() / n,
            self.by_horizon.iter().map(|e| e.pv_mae_kwh).sum::<f64>() / n,
        )
    }
}
