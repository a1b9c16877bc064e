//! A seeded synthetic community for tests and huge scaled runs.
//!
//! Owns a small generative model that is plausible rather than calibrated:
//! household load with a morning and an evening peak (later and flatter at
//! weekends), day-to-day and slot-to-slot noise; a clear-sky-like PV bell
//! whose day length follows the seasons, scaled down on cloudy days; a grid
//! carbon intensity that dips when the sun shines and peaks in the evening;
//! and a time-of-use price. The dataset starts Monday 00:00.
//!
//! Every draw comes from a [`SeededRng`] derived from `seed` per stream
//! (`weather`, `home-<i>`), so adding homes never changes the weather or the
//! earlier homes. Must never read data files or a clock.

use std::f64::consts::PI;

use super::{Dataset, HomeSeries};
use crate::rng::{derive_seed, SeededRng};

/// Share of homes that own PV; the rest are consumers (`pv_kwp = 0`).
const PV_OWNER_SHARE: f64 = 0.7;
/// Peak PV power on a clear summer noon, kW per kWp (losses, temperature).
const CLEAR_SKY_PEAK_KW_PER_KWP: f64 = 0.8;
/// Share of days that are cloudy.
const CLOUDY_DAY_SHARE: f64 = 0.25;

/// The synthetic year every node and the CLI agree on (`--dataset
/// synthetic`): 17 homes, 364 days, hourly, weather seed 1. Run seeds vary
/// the community generated from it, not the weather, so a market and its
/// agent-nodes always play the same dataset.
pub fn standard_synthetic() -> Dataset {
    synthetic_dataset(17, 364, 60, 1)
}

/// `n_homes` homes over `n_days` days of `slot_minutes` slots.
///
/// # Panics
/// If `slot_minutes` is 0 or does not divide a day (a caller bug, not data).
pub fn synthetic_dataset(n_homes: usize, n_days: usize, slot_minutes: u32, seed: u64) -> Dataset {
    assert!(
        slot_minutes > 0 && 1440 % slot_minutes == 0,
        "slot_minutes {slot_minutes} must divide a day"
    );
    let clock = Clock {
        slots_per_day: (1440 / slot_minutes) as usize,
        slot_hours: slot_minutes as f64 / 60.0,
    };
    let weather = daily_weather(n_days, derive_seed(seed, "weather"));
    let sun: Vec<f64> =
        (0..n_days * clock.slots_per_day).map(|t| clock.sun_kw_per_kwp(t, &weather)).collect();
    let homes = (0..n_homes)
        .map(|i| synthetic_home(i, &clock, &sun, derive_seed(seed, &format!("home-{i}"))))
        .collect();
    Dataset {
        name: format!("synthetic-{n_homes}x{n_days}d-{slot_minutes}min-seed{seed}"),
        slot_minutes,
        first_slot_of_day: 0,
        first_day_of_week: 0,
        homes,
        carbon_kg_per_kwh: sun
            .iter()
            .enumerate()
            .map(|(t, &s)| clock.carbon_kg_per_kwh(t, s))
            .collect(),
        price_per_kwh: (0..sun.len()).map(|t| clock.tou_price_per_kwh(t)).collect(),
    }
}

/// Calendar arithmetic for a dataset starting Monday 00:00.
struct Clock {
    slots_per_day: usize,
    slot_hours: f64,
}

impl Clock {
    fn day(&self, t: usize) -> usize {
        t / self.slots_per_day
    }

    /// Hour of day at the middle of slot `t`.
    fn mid_hour(&self, t: usize) -> f64 {
        ((t % self.slots_per_day) as f64 + 0.5) * self.slot_hours
    }

    fn is_weekend(&self, t: usize) -> bool {
        self.day(t) % 7 >= 5
    }

    /// PV power per kWp at the middle of slot `t`: a bell between sunrise and
    /// sunset (day length 9.5–14.5 h over the year), times the day's clearness.
    fn sun_kw_per_kwp(&self, t: usize, clearness: &[f64]) -> f64 {
        let day = self.day(t);
        // Day 0 is taken as early August: longest days ~50 days earlier.
        let day_length_h = 12.0 + 2.5 * (2.0 * PI * (day as f64 + 50.0) / 365.0).cos();
        let from_noon_h = self.mid_hour(t) - 12.5;
        if from_noon_h.abs() >= day_length_h / 2.0 {
            return 0.0;
        }
        let bell = (PI * from_noon_h / day_length_h).cos().powf(1.5);
        // Lower sun in winter: clear-sky peak 75 % of summer's.
        let season = 0.75 + 0.25 * (day_length_h - 9.5) / 5.0;
        CLEAR_SKY_PEAK_KW_PER_KWP * bell * season * clearness[day]
    }

    /// Grid intensity: gas-heavy evenings, solar-heavy middays.
    fn carbon_kg_per_kwh(&self, t: usize, sun_kw_per_kwp: f64) -> f32 {
        let evening = gaussian(self.mid_hour(t), 19.0, 2.0);
        (0.38 + 0.08 * evening - 0.2 * sun_kw_per_kwp).max(0.05) as f32
    }

    /// Time of use: peak 16:00–21:00, cheaper peak at weekends.
    fn tou_price_per_kwh(&self, t: usize) -> f32 {
        let h = self.mid_hour(t);
        match ((16.0..21.0).contains(&h), self.is_weekend(t)) {
            (false, _) => 0.22,
            (true, false) => 0.50,
            (true, true) => 0.40,
        }
    }
}

/// Clearness factor per day: most days near 1, cloudy days 0.15–0.6.
fn daily_weather(n_days: usize, seed: u64) -> Vec<f64> {
    let mut rng = SeededRng::new(seed);
    (0..n_days)
        .map(|_| {
            if rng.next_f64() < CLOUDY_DAY_SHARE {
                rng.uniform(0.15, 0.6)
            } else {
                rng.uniform(0.85, 1.0)
            }
        })
        .collect()
}

/// Per-home habits drawn once.
struct Habits {
    daily_kwh: f64,
    morning_peak_h: f64,
    evening_peak_h: f64,
    evening_weight: f64,
}

fn synthetic_home(index: usize, clock: &Clock, sun: &[f64], seed: u64) -> HomeSeries {
    let mut rng = SeededRng::new(seed);
    let habits = Habits {
        daily_kwh: rng.uniform(12.0, 35.0),
        morning_peak_h: 7.0 + 0.6 * rng.normal(),
        evening_peak_h: 19.0 + 0.8 * rng.normal(),
        evening_weight: rng.uniform(1.2, 2.2),
    };
    let pv_kwp = if rng.next_f64() < PV_OWNER_SHARE {
        (rng.uniform(3.0, 8.0) * 10.0).round() / 10.0
    } else {
        0.0
    };
    // Shape integral of a weekday, so `daily_kwh` is the mean weekday energy.
    let weekday_kwh: f64 =
        (0..clock.slots_per_day).map(|t| load_shape_kw(clock, t, &habits)).sum::<f64>()
            * clock.slot_hours;
    let mut day_factor = 1.0;
    let load_kwh = (0..sun.len())
        .map(|t| {
            if t % clock.slots_per_day == 0 {
                day_factor = (1.0 + 0.12 * rng.normal()).max(0.5);
            }
            let noise = (1.0 + 0.25 * rng.normal()).max(0.1);
            let kwh = load_shape_kw(clock, t, &habits) * clock.slot_hours * habits.daily_kwh
                / weekday_kwh;
            (kwh * day_factor * noise) as f32
        })
        .collect();
    // Orientation and shading make each roof a little different.
    let roof = rng.uniform(0.9, 1.05);
    let pv_kwh_per_kwp = match pv_kwp > 0.0 {
        true => sun.iter().map(|&p| (p * roof * clock.slot_hours) as f32).collect(),
        false => vec![0.0; sun.len()],
    };
    HomeSeries { name: format!("synthetic-{index}"), load_kwh, pv_kwh_per_kwp, pv_kwp }
}

/// Relative power demand at slot `t`: base load plus two peaks; at weekends
/// the morning is later and the day fuller.
fn load_shape_kw(clock: &Clock, t: usize, habits: &Habits) -> f64 {
    let h = clock.mid_hour(t);
    let base = 0.35;
    if clock.is_weekend(t) {
        base + 0.6 * gaussian(h, habits.morning_peak_h + 2.0, 1.8)
            + 0.5 * gaussian(h, 13.5, 3.0)
            + habits.evening_weight * gaussian(h, habits.evening_peak_h, 2.0)
    } else {
        base + gaussian(h, habits.morning_peak_h, 1.2)
            + habits.evening_weight * gaussian(h, habits.evening_peak_h, 1.8)
    }
}

fn gaussian(x: f64, mean: f64, sd: f64) -> f64 {
    (-0.5 * ((x - mean) / sd).powi(2)).exp()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_data_other_seed_other_data() {
        let a = synthetic_dataset(5, 14, 30, 42);
        assert_eq!(a, synthetic_dataset(5, 14, 30, 42));
        let b = synthetic_dataset(5, 14, 30, 43);
        assert_ne!(a.homes[0].load_kwh, b.homes[0].load_kwh);
        assert_ne!(a.homes[0].pv_kwh_per_kwp, b.homes[0].pv_kwh_per_kwp);
    }

    #[test]
    fn adding_homes_keeps_existing_homes_and_weather() {
        let small = synthetic_dataset(3, 7, 60, 9);
        let big = synthetic_dataset(6, 7, 60, 9);
        assert_eq!(small.homes[..], big.homes[..3]);
        assert_eq!(small.carbon_kg_per_kwh, big.carbon_kg_per_kwh);
    }

    #[test]
    fn valid_non_negative_and_sized() {
        for slot_minutes in [15, 30, 60] {
            let ds = synthetic_dataset(8, 10, slot_minutes, 1);
            ds.validate().unwrap();
            assert_eq!(ds.n_slots(), 10 * ds.slots_per_day() as usize);
            assert_eq!(ds.price_per_kwh.len(), ds.n_slots());
            assert!(ds.homes.iter().all(|h| h.load_kwh.iter().all(|&x| x >= 0.0)));
        }
    }

    #[test]
    fn pv_is_zero_at_night_and_consumers_have_none() {
        let ds = synthetic_dataset(20, 365, 30, 5);
        assert!(
            ds.homes.iter().any(|h| h.pv_kwp == 0.0) && ds.homes.iter().any(|h| h.pv_kwp > 0.0)
        );
        for home in &ds.homes {
            for (t, &x) in home.pv_kwh_per_kwp.iter().enumerate() {
                let hour = ds.slot_of_day(t) as f64 * ds.slot_hours();
                if !(5.0..20.0).contains(&hour) || home.pv_kwp == 0.0 {
                    assert_eq!(x, 0.0, "{} slot {t}", home.name);
                }
            }
        }
    }

    #[test]
    fn yearly_totals_and_daily_shape_are_plausible() {
        let ds = synthetic_dataset(20, 365, 60, 11);
        let pv_home = ds.homes.iter().find(|h| h.pv_kwp > 0.0).unwrap();
        let yield_kwh_per_kwp = pv_home.total_pv_kwh_per_kwp();
        assert!((1_000.0..2_000.0).contains(&yield_kwh_per_kwp), "{yield_kwh_per_kwp}");
        let per_home_kwh = ds.total_load_kwh() / 20.0;
        assert!((4_000.0..13_000.0).contains(&per_home_kwh), "{per_home_kwh}");
        // Evenings use more than the small hours, on average over homes and days.
        let mean_at = |hour: usize| -> f64 {
            ds.homes
                .iter()
                .flat_map(|h| h.load_kwh.iter().skip(hour).step_by(24))
                .map(|&x| x as f64)
                .sum()
        };
        assert!(mean_at(19) > 1.5 * mean_at(3));
    }

    #[test]
    fn weekends_differ_from_weekdays() {
        let ds = synthetic_dataset(10, 28, 60, 3);
        let at = |day_of_week: usize, hour: usize| -> f64 {
            (0..4)
                .map(|w| (w * 7 + day_of_week) * 24 + hour)
                .flat_map(|t| ds.homes.iter().map(move |h| h.load_kwh[t] as f64))
                .sum()
        };
        // 07:00 on weekdays is a peak; at weekends the morning is later and the midday fuller.
        assert!(at(1, 7) > 1.15 * at(6, 7), "{} vs {}", at(1, 7), at(6, 7));
        assert!(at(6, 13) > 1.15 * at(1, 13), "{} vs {}", at(6, 13), at(1, 13));
        assert_ne!(ds.price_per_kwh[17], ds.price_per_kwh[5 * 24 + 17]);
    }
}
