use std::cell::Cell;

use proptest::prelude::*;

use super::*;
use crate::data::synthetic::synthetic_dataset;
use crate::prosumer::{generate_community, CommunityConfig};

fn shape(day: usize, history_days: usize, decay: f64) -> SeriesShape {
    SeriesShape { slots_per_day: day, history_days, decay_per_slot: decay }
}

#[test]
fn a_daily_pattern_is_forecast_exactly_and_an_anomaly_fades() {
    // Four slots a day: 0, 1, 2, 1, repeated.
    let pattern = [0.0, 1.0, 2.0, 1.0];
    let x = |s: usize| pattern[s % 4];
    let mut out = [0.0; 6];
    forecast_series(x, 9, &shape(4, 2, 0.5), &mut out);
    assert_eq!(out, [2.0, 1.0, 0.0, 1.0, 2.0, 1.0]);

    // Now slot 9 reads 3 where it usually reads 1: +2, halved every slot
    // ahead. Slot 13's profile averages slots 9 (now 3) and 5 (1): 2.
    let bumped = |s: usize| if s == 9 { 3.0 } else { pattern[s % 4] };
    forecast_series(bumped, 9, &shape(4, 2, 0.5), &mut out);
    assert_eq!(out, [2.0 + 1.0, 1.0 + 0.5, 0.0 + 0.25, 2.0 + 0.125, 2.0 + 0.0625, 1.0 + 0.03125]);

    // A dip below the usual never forecasts negative energy.
    let dipped = |s: usize| if s == 9 { 0.0 } else { pattern[s % 4] };
    forecast_series(dipped, 9, &shape(4, 2, 1.0), &mut out);
    assert_eq!(out, [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]);
}

#[test]
fn without_a_past_day_it_is_persistence() {
    let mut out = [9.0; 3];
    forecast_series(|s| s as f64 + 1.0, 2, &shape(4, 7, 0.5), &mut out);
    assert_eq!(out, [3.0; 3]);
}

#[test]
fn the_profile_averages_only_the_configured_days() {
    // Day d holds the value d in every slot; 3 days of history from day 5.
    let x = |s: usize| (s / 4) as f64;
    let mut out = [0.0; 1];
    // At slot 20 (day 5) for slot 21: days 4, 3, 2 → 3; now 5 vs usual 3 → +2·φ.
    forecast_series(x, 20, &shape(4, 3, 0.5), &mut out);
    assert_eq!(out, [3.0 + 1.0]);
}

#[test]
fn config_errors_name_the_field_and_the_bound() {
    let ds = synthetic_dataset(2, 10, 60, 1);
    assert!(ForecastConfig::default().validate(&ds).is_ok());
    let e = ForecastConfig { horizon_hours: 240, ..Default::default() }
        .validate(&ds)
        .unwrap_err()
        .to_string();
    assert!(e.contains("forecast.horizon_hours") && e.contains("1..=168"), "{e}");
    let short = synthetic_dataset(2, 1, 60, 1);
    let e = ForecastConfig::default().validate(&short).unwrap_err().to_string();
    assert!(e.contains("forecast.horizon_hours") && e.contains("1..=23"), "{e}");
    let e = ForecastConfig { history_days: 0, ..Default::default() }
        .validate(&ds)
        .unwrap_err()
        .to_string();
    assert!(e.contains("forecast.history_days") && e.contains("1..=9"), "{e}");
    let e = ForecastConfig { anomaly_half_life_hours: f64::NAN, ..Default::default() }
        .validate(&ds)
        .unwrap_err()
        .to_string();
    assert!(e.contains("forecast.anomaly_half_life_hours"), "{e}");
}

#[test]
fn errors_are_measured_per_hour_ahead_and_skip_targets_beyond_the_data() {
    let ds = synthetic_dataset(3, 14, 60, 5);
    let community =
        generate_community(&ds, &CommunityConfig { n_prosumers: 5, ..Default::default() }).unwrap();
    let traces: Vec<TraceRef> = community.iter().map(|p| p.trace).collect();
    let cfg = ForecastConfig { horizon_hours: 6, history_days: 3, ..Default::default() };
    let last = ds.n_slots() - 1;
    let slots: Vec<usize> = (7 * 24..8 * 24).chain([last]).collect();
    let e = measure_forecast_errors(&ds, &traces, &slots, &cfg).unwrap();
    assert_eq!(e.by_horizon.len(), 6);
    assert_eq!(e.by_horizon[0].hours_ahead, 1.0);
    // The last slot has no target inside the data.
    assert_eq!(e.by_horizon[0].samples, 5 * 24);
    for h in &e.by_horizon {
        for v in [h.load_mae_kwh, h.load_rmse_kwh, h.pv_mae_kwh, h.load_naive_mae_kwh] {
            assert!(v.is_finite() && v >= 0.0, "{h:?}");
        }
        assert!(h.load_rmse_kwh >= h.load_mae_kwh - 1e-12, "RMSE ≥ MAE: {h:?}");
    }
    assert!(e.mean_load_kwh > 0.0);
    assert!(e.at_hours(6.0).is_some() && e.at_hours(7.0).is_none());
    let e = measure_forecast_errors(&ds, &traces, &[ds.n_slots()], &cfg).unwrap_err();
    assert!(e.to_string().contains("schedule"), "{e}");
}

#[test]
fn household_forecasts_follow_the_trace() {
    let ds = synthetic_dataset(2, 10, 30, 2);
    let community =
        generate_community(&ds, &CommunityConfig { n_prosumers: 3, ..Default::default() }).unwrap();
    let cfg = ForecastConfig::default();
    let shape = SeriesShape::of(&ds, &cfg);
    assert_eq!(cfg.horizon_slots(&ds), 48, "24 hours of 30-minute slots");
    let mut f = HouseholdForecast::with_horizon(cfg.horizon_slots(&ds));
    let trace = community[0].trace;
    f.update(&ds, &trace, 200, &shape);
    let mut load = vec![0.0; 48];
    forecast_series(|s| trace.load_kwh(&ds, s), 200, &shape, &mut load);
    assert_eq!(f.load_kwh, load);
    assert!(f.pv_kwh.iter().all(|v| *v >= 0.0));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// The forecast made at `t` reads nothing after `t`: the series is only
    /// ever asked for slots ≤ t, and rewriting everything after `t`
    /// changes nothing.
    #[test]
    fn never_reads_the_future(
        values in proptest::collection::vec(0.0f64..10.0, 1..200),
        noise in proptest::collection::vec(-5.0f64..5.0, 200),
        t_frac in 0.0f64..1.0,
        day in 1usize..30,
        history in 1usize..10,
        decay in 0.0f64..=1.0,
        horizon in 1usize..80,
    ) {
        let t = ((values.len() - 1) as f64 * t_frac) as usize;
        let shape = shape(day, history, decay);
        let latest = Cell::new(0usize);
        let truth = |s: usize| {
            latest.set(latest.get().max(s));
            values.get(s).copied().unwrap_or(1.0)
        };
        let mut a = vec![0.0; horizon];
        forecast_series(truth, t, &shape, &mut a);
        prop_assert!(latest.get() <= t, "read slot {} at t = {t}", latest.get());
        let rewritten = |s: usize| {
            let v = values.get(s).copied().unwrap_or(1.0);
            if s > t { v + noise[s % noise.len()] } else { v }
        };
        let mut b = vec![0.0; horizon];
        forecast_series(rewritten, t, &shape, &mut b);
        prop_assert_eq!(&a, &b);
        prop_assert!(a.iter().all(|v| v.is_finite() && *v >= 0.0));
    }
}
