//! Forecasts of a household's own load and PV over the next hours, from its
//! own past only.
//!
//! The rule ([`forecast_series`]) is climatology plus damped persistence of
//! the current anomaly. For a forecast made in slot `t` (whose load and PV
//! the household already measures: the observation carries them) of slot
//! `t + h`, `h = 1..=H`:
//!
//! ```text
//! profile(s)  = mean of x(s − k·day) over the D most recent whole days k ≥ 1 with s − k·day ≤ t
//! f(t + h)    = max(0, profile(t + h) + φ^h · (x(t) − profile(t)))
//! φ           = 0.5^(slot hours / anomaly half-life hours)
//! ```
//!
//! The same-hour average over the last `D` days carries the daily shape (PV
//! at noon, the evening load peak); the anomaly term says "it is cloudier (or
//! busier) than usual right now", which holds for the next few hours and
//! fades with the half-life. A series with no whole past day yet falls back
//! to persistence (`x(t)` for every `h`).
//!
//! It reads `x(s)` for `s ≤ t` only (tested: changing the data after `t`
//! never changes the forecast made at `t`), is deterministic, costs
//! `O(H·D)` reads per series and slot, and allocates nothing: the observation
//! uses it per household and slot ([`OwnForecaster`] sums it over the next
//! hours). [`measure`] says how good it is: MAE and RMSE per
//! hour ahead against the truth, beside the naive "same slot yesterday".
//!
//! It never reads a clock, draws a random number or sees another household.

mod measure;
mod own;
#[cfg(test)]
mod tests;

use serde::{Deserialize, Serialize};

use crate::data::Dataset;
use crate::error::CoreError;
use crate::prosumer::TraceRef;

pub use measure::{measure_forecast_errors, ForecastErrors, HorizonError};
pub use own::{OwnForecast, OwnForecaster, DAY_HOURS, NEAR_HOURS};

/// Longest horizon the forecaster accepts, hours (a week).
pub const MAX_HORIZON_HOURS: usize = 168;
/// Most past days the profile may average.
pub const MAX_HISTORY_DAYS: usize = 28;

/// How far ahead and how far back the forecaster looks.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ForecastConfig {
    /// Hours forecast ahead (`H` in slots is this over the slot length).
    pub horizon_hours: usize,
    /// Past days the same-slot profile averages (`D`).
    pub history_days: usize,
    /// Half-life of the current anomaly, hours: after this many hours the
    /// forecast has moved half-way from "like now" to "like usual".
    pub anomaly_half_life_hours: f64,
}

impl Default for ForecastConfig {
    fn default() -> Self {
        ForecastConfig { horizon_hours: 24, history_days: 7, anomaly_half_life_hours: 2.0 }
    }
}

impl ForecastConfig {
    /// Checks the settings against `ds`: the horizon within
    /// 1..=[`MAX_HORIZON_HOURS`] and shorter than the data, a whole number
    /// of slots; the history within 1..=[`MAX_HISTORY_DAYS`] and shorter
    /// than the data; a finite, positive half-life. Errors name `forecast.<field>`.
    pub fn validate(&self, ds: &Dataset) -> Result<(), CoreError> {
        let data_hours = ds.n_slots() as f64 * ds.slot_hours();
        let max_hours = MAX_HORIZON_HOURS.min((data_hours as usize).saturating_sub(1));
        if self.horizon_hours == 0 || self.horizon_hours > max_hours {
            return Err(CoreError::invalid(
                "forecast.horizon_hours",
                format!(
                    "must lie in 1..={max_hours} (at most {MAX_HORIZON_HOURS} and shorter than the \
                     dataset's {data_hours} hours), got {}",
                    self.horizon_hours
                ),
            ));
        }
        let data_days = ds.n_slots() / ds.slots_per_day().max(1) as usize;
        let max_days = MAX_HISTORY_DAYS.min(data_days.saturating_sub(1)).max(1);
        if self.history_days == 0 || self.history_days > max_days {
            return Err(CoreError::invalid(
                "forecast.history_days",
                format!(
                    "must lie in 1..={max_days} (at most {MAX_HISTORY_DAYS} and shorter than the \
                     dataset's {data_days} days), got {}",
                    self.history_days
                ),
            ));
        }
        let h = self.anomaly_half_life_hours;
        if !h.is_finite() || h <= 0.0 || h > 1000.0 {
            return Err(CoreError::invalid(
                "forecast.anomaly_half_life_hours",
                format!("must lie in (0, 1000], got {h}"),
            ));
        }
        Ok(())
    }

    /// Slots forecast ahead on `ds` (at least one).
    pub fn horizon_slots(&self, ds: &Dataset) -> usize {
        ((self.horizon_hours as f64 / ds.slot_hours()).round() as usize).max(1)
    }

    /// The anomaly's decay per slot of `slot_hours`, `φ`.
    pub fn decay_per_slot(&self, slot_hours: f64) -> f64 {
        0.5f64.powf(slot_hours / self.anomaly_half_life_hours)
    }
}

/// Where the forecaster finds the past of one series: a slot's value
/// (`x(s)`), the slots in a day and the anomaly's decay per slot.
#[derive(Clone, Copy, Debug)]
pub struct SeriesShape {
    /// Slots in a day (the profile's period).
    pub slots_per_day: usize,
    /// Past days the profile averages.
    pub history_days: usize,
    /// `φ`, the anomaly's decay per slot.
    pub decay_per_slot: f64,
}

impl SeriesShape {
    /// The shape `cfg` gives series of `ds`.
    pub fn of(ds: &Dataset, cfg: &ForecastConfig) -> SeriesShape {
        SeriesShape {
            slots_per_day: ds.slots_per_day() as usize,
            history_days: cfg.history_days,
            decay_per_slot: cfg.decay_per_slot(ds.slot_hours()),
        }
    }

    /// Mean of `x(s − k·day)` over the `history_days` most recent whole days
    /// with `s − k·day ≤ t` (and ≥ 0); `None` when there is none.
    fn profile(&self, x: &impl Fn(usize) -> f64, s: usize, t: usize) -> Option<f64> {
        let day = self.slots_per_day;
        // The first lag that reaches back to t or earlier.
        let first_lag = (s - t).div_ceil(day).max(1);
        let (mut sum, mut n) = (0.0, 0usize);
        for k in first_lag..first_lag + self.history_days {
            let Some(past) = s.checked_sub(k * day) else { break };
            sum += x(past);
            n += 1;
        }
        (n > 0).then(|| sum / n as f64)
    }
}

/// Forecasts `x(t + 1)`, …, `x(t + out.len())` into `out` from `x(s)`,
/// `s ≤ t` (the module docs give the rule). `x` is never called with a slot
/// after `t`.
pub fn forecast_series(x: impl Fn(usize) -> f64, t: usize, shape: &SeriesShape, out: &mut [f64]) {
    let horizon = out.len();
    forecast_each(x, t, shape, horizon, |i, f| out[i] = f);
}

/// Calls `each(i, f)` with the forecast `f` of `x(t + i + 1)` for
/// `i = 0..horizon`, in order: the values [`forecast_series`] writes, for a
/// caller that only sums them and must not allocate (the observation).
/// `x` is never called with a slot after `t`.
pub fn forecast_each(
    x: impl Fn(usize) -> f64,
    t: usize,
    shape: &SeriesShape,
    horizon: usize,
    mut each: impl FnMut(usize, f64),
) {
    let now = x(t);
    let Some(usual_now) = shape.profile(&x, t, t) else {
        (0..horizon).for_each(|i| each(i, now.max(0.0)));
        return;
    };
    let anomaly = now - usual_now;
    let mut weight = 1.0;
    for i in 0..horizon {
        weight *= shape.decay_per_slot;
        let usual = shape.profile(&x, t + i + 1, t).unwrap_or(usual_now);
        each(i, (usual + weight * anomaly).max(0.0));
    }
}

/// A household's forecast of its own load and PV for the slots after `t`, kWh.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HouseholdForecast {
    /// Load of slots `t + 1 ..= t + H`, kWh.
    pub load_kwh: Vec<f64>,
    /// PV of slots `t + 1 ..= t + H`, kWh.
    pub pv_kwh: Vec<f64>,
}

impl HouseholdForecast {
    /// An empty forecast of `horizon` slots, to be filled by [`Self::update`].
    pub fn with_horizon(horizon: usize) -> HouseholdForecast {
        HouseholdForecast { load_kwh: vec![0.0; horizon], pv_kwh: vec![0.0; horizon] }
    }

    /// Forecasts the household of `trace` at slot `t` of `ds`, in place.
    pub fn update(&mut self, ds: &Dataset, trace: &TraceRef, t: usize, shape: &SeriesShape) {
        forecast_series(|s| trace.load_kwh(ds, s), t, shape, &mut self.load_kwh);
        forecast_series(|s| trace.pv_kwh(ds, s), t, shape, &mut self.pv_kwh);
    }
}
