//! The forecasts a household's observation carries: a few sums of the
//! forecaster's values over its own next hours.
//!
//! The policy sees the next slot's net load, the mean load and PV per slot
//! over the next [`NEAR_HOURS`] and the mean net load per slot over the
//! next [`DAY_HOURS`] (means, not sums: kWh per slot like the observed
//! load, so every feature stays of order one whatever the horizon), each from
//! [`forecast_each`] with the default [`ForecastConfig`] (the same rule and
//! settings the MPC baseline plans with), so it knows what is coming as well
//! as a real controller can, and never the truth. Horizons are in hours and
//! become slots by the dataset's slot length.
//!
//! It reads each series up to the observed slot only (tested: rewriting the
//! data after it changes nothing), allocates nothing and costs
//! `O(day slots · history days)` reads per series: it runs per household and
//! slot.

use super::{forecast_each, ForecastConfig, SeriesShape};
use crate::data::Dataset;

/// Hours of the near sums (load and PV over the next hours).
pub const NEAR_HOURS: f64 = 6.0;
/// Hours of the day-ahead net load sum; the longest the observation looks.
pub const DAY_HOURS: f64 = 24.0;

/// What a household expects of its own load and PV after the current slot,
/// kWh per slot.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct OwnForecast {
    /// Load − PV of the next slot.
    pub next_net_load_kwh: f64,
    /// Mean load of the slots in the next [`NEAR_HOURS`].
    pub mean_load_near_kwh: f64,
    /// Mean PV of the slots in the next [`NEAR_HOURS`].
    pub mean_pv_near_kwh: f64,
    /// Mean load − PV of the slots in the next [`DAY_HOURS`].
    pub mean_net_load_day_kwh: f64,
}

/// How the observation forecasts on one dataset: the forecaster's shape and
/// the horizons in slots. Cheap to make; [`OwnForecaster::of`] per slot is fine.
#[derive(Clone, Copy, Debug)]
pub struct OwnForecaster {
    shape: SeriesShape,
    near_slots: usize,
    day_slots: usize,
}

impl OwnForecaster {
    /// The observation's forecaster on `ds`: the default [`ForecastConfig`],
    /// horizons of [`NEAR_HOURS`] and [`DAY_HOURS`] in `ds`'s slots (at least one).
    pub fn of(ds: &Dataset) -> OwnForecaster {
        let slots = |hours: f64| ((hours / ds.slot_hours()).round() as usize).max(1);
        OwnForecaster {
            shape: SeriesShape::of(ds, &ForecastConfig::default()),
            near_slots: slots(NEAR_HOURS),
            day_slots: slots(DAY_HOURS),
        }
    }

    /// The forecast made at slot `t` from the series `load` and `pv`, which
    /// are only ever read at slots `≤ t`.
    pub fn forecast(
        &self,
        load: impl Fn(usize) -> f64,
        pv: impl Fn(usize) -> f64,
        t: usize,
    ) -> OwnForecast {
        let mut f = OwnForecast::default();
        forecast_each(load, t, &self.shape, self.day_slots, |i, v| {
            if i == 0 {
                f.next_net_load_kwh += v;
            }
            if i < self.near_slots {
                f.mean_load_near_kwh += v;
            }
            f.mean_net_load_day_kwh += v;
        });
        forecast_each(pv, t, &self.shape, self.day_slots, |i, v| {
            if i == 0 {
                f.next_net_load_kwh -= v;
            }
            if i < self.near_slots {
                f.mean_pv_near_kwh += v;
            }
            f.mean_net_load_day_kwh -= v;
        });
        let near = self.near_slots.min(self.day_slots) as f64;
        f.mean_load_near_kwh /= near;
        f.mean_pv_near_kwh /= near;
        f.mean_net_load_day_kwh /= self.day_slots as f64;
        f
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::synthetic::synthetic_dataset;
    use crate::forecast::forecast_series;

    #[test]
    fn the_means_are_the_forecasters_values_over_the_hours_in_slots() {
        let ds = synthetic_dataset(1, 10, 30, 4);
        let f = OwnForecaster::of(&ds);
        assert_eq!((f.near_slots, f.day_slots), (12, 48), "30-minute slots");
        let home = &ds.homes[0];
        let load = |s: usize| home.load_kwh[s] as f64;
        let pv = |s: usize| home.pv_kwh_per_kwp[s] as f64 * 3.0;
        let t = 300;
        let (mut l, mut p) = (vec![0.0; 48], vec![0.0; 48]);
        forecast_series(load, t, &f.shape, &mut l);
        forecast_series(pv, t, &f.shape, &mut p);
        let got = f.forecast(load, pv, t);
        let close = |a: f64, b: f64| (a - b).abs() < 1e-9;
        assert!(close(got.next_net_load_kwh, l[0] - p[0]), "{got:?}");
        assert!(close(got.mean_load_near_kwh, l[..12].iter().sum::<f64>() / 12.0), "{got:?}");
        assert!(close(got.mean_pv_near_kwh, p[..12].iter().sum::<f64>() / 12.0), "{got:?}");
        let day: f64 = l.iter().zip(&p).map(|(a, b)| a - b).sum();
        assert!(close(got.mean_net_load_day_kwh, day / 48.0), "{got:?}");
        assert!(got.mean_pv_near_kwh >= 0.0 && got.mean_load_near_kwh > 0.0);
    }
}
