//! Measured and synthetic time series the simulation runs on.
//!
//! A [`Dataset`] is a set of homes on one common time axis (fixed slot
//! length), plus per-slot grid signals (carbon intensity, measured price).
//! Loaders fill it from the bundled CityLearn-derived file ([`citylearn`]),
//! from Ausgrid Solar Home CSVs ([`ausgrid`]), or from a seeded synthetic
//! generator for tests and huge scaled runs ([`synthetic`]);
//! [`DatasetSource`] names one of them the same way in every node and command
//! and loads it; [`split`] holds
//! whole weeks out for evaluation. Scaling a dataset up to a large community
//! happens in `crate::prosumer`, which references homes of a dataset instead
//! of copying their series.
//!
//! This module owns the dataset type, its calendar (slot of day, day of week)
//! and its invariants ([`Dataset::validate`]). Loaders validate everything
//! and either return a complete dataset or an error naming file, line and
//! column: never a partial one. Nothing here reads a clock or draws an
//! unseeded random number.

pub mod ausgrid;
mod cells;
pub mod citylearn;
mod source;
pub mod split;
pub mod synthetic;

use crate::error::CoreError;
use serde::{Deserialize, Serialize};

pub use source::{DatasetKind, DatasetSource};

/// One measured home.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HomeSeries {
    /// Source label, e.g. `Building_3` or `ausgrid-17`.
    pub name: String,
    /// Household consumption per slot, kWh (≥ 0).
    pub load_kwh: Vec<f32>,
    /// PV generation per slot per kWp installed, kWh/kWp (≥ 0). All zeros for a home without PV.
    pub pv_kwh_per_kwp: Vec<f32>,
    /// Installed PV of the measured home, kWp (0 = no PV).
    pub pv_kwp: f64,
}

/// Homes and grid signals on one time axis.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Dataset {
    /// Where the data came from, shown in reports.
    pub name: String,
    /// Slot length in minutes (60 for CityLearn, 30 for Ausgrid).
    pub slot_minutes: u32,
    /// Slot-of-day (0-based) of slot 0, so `slot_of_day(t) = (first_slot_of_day + t) % slots_per_day`.
    pub first_slot_of_day: u32,
    /// Day of week of slot 0 (0 = Monday … 6 = Sunday).
    pub first_day_of_week: u32,
    /// Every home has exactly `n_slots()` values in each series.
    pub homes: Vec<HomeSeries>,
    /// Grid CO2 intensity per slot, kg/kWh; empty if the source has none.
    pub carbon_kg_per_kwh: Vec<f32>,
    /// Measured retail price per slot, currency/kWh; empty if the source has none.
    pub price_per_kwh: Vec<f32>,
}

impl Dataset {
    /// Slots on the time axis.
    pub fn n_slots(&self) -> usize {
        self.homes.first().map_or(0, |h| h.load_kwh.len())
    }

    /// PV yield of the sunniest slot of any home, kWh per kWp installed:
    /// what bounds a prosumer's PV report (see [`crate::physics`]).
    pub fn pv_peak_kwh_per_kwp(&self) -> f64 {
        self.homes.iter().flat_map(|h| h.pv_kwh_per_kwp.iter()).fold(0.0f32, |m, &v| m.max(v))
            as f64
    }

    /// Slots in a day.
    pub fn slots_per_day(&self) -> u32 {
        24 * 60 / self.slot_minutes
    }

    /// Slot length in hours.
    pub fn slot_hours(&self) -> f64 {
        self.slot_minutes as f64 / 60.0
    }

    /// Slot of day (0-based) of slot `t`; slot 0 of a day starts at 00:00.
    pub fn slot_of_day(&self, t: usize) -> u32 {
        ((self.first_slot_of_day as usize + t) % self.slots_per_day() as usize) as u32
    }

    /// Day of week of slot `t`, 0 = Monday … 6 = Sunday.
    pub fn day_of_week(&self, t: usize) -> u32 {
        let days_since_start =
            (self.first_slot_of_day as usize + t) / self.slots_per_day() as usize;
        ((self.first_day_of_week as usize + days_since_start) % 7) as u32
    }

    /// Household consumption of all homes over the whole axis, kWh.
    pub fn total_load_kwh(&self) -> f64 {
        self.homes.iter().map(HomeSeries::total_load_kwh).sum()
    }

    /// PV generation of all homes (as measured, i.e. scaled by their kWp), kWh.
    pub fn total_pv_kwh(&self) -> f64 {
        self.homes.iter().map(HomeSeries::total_pv_kwh).sum()
    }

    /// Checks every invariant documented on the fields. Loaders report a
    /// problem with file, line and column before building a dataset; this is
    /// the last line of defence for datasets built in code (synthetic,
    /// deserialised, hand-written in tests).
    pub fn validate(&self) -> Result<(), CoreError> {
        self.validate_calendar()?;
        let n = self.n_slots();
        for home in &self.homes {
            home.validate(n)?;
        }
        validate_signal("carbon_kg_per_kwh", &self.carbon_kg_per_kwh, n, true)?;
        validate_signal("price_per_kwh", &self.price_per_kwh, n, false)
    }

    fn validate_calendar(&self) -> Result<(), CoreError> {
        // A slot must tile the day exactly, or slot_of_day drifts.
        if self.slot_minutes == 0 || 1440 % self.slot_minutes != 0 {
            return Err(CoreError::invalid(
                "slot_minutes",
                format!("{} does not divide a day", self.slot_minutes),
            ));
        }
        if self.first_slot_of_day >= self.slots_per_day() {
            return Err(CoreError::invalid(
                "first_slot_of_day",
                format!("{} ≥ {} slots per day", self.first_slot_of_day, self.slots_per_day()),
            ));
        }
        if self.first_day_of_week > 6 {
            return Err(CoreError::invalid(
                "first_day_of_week",
                format!("{} is not 0..=6", self.first_day_of_week),
            ));
        }
        Ok(())
    }
}

impl HomeSeries {
    /// Household consumption over the whole axis, kWh.
    pub fn total_load_kwh(&self) -> f64 {
        self.load_kwh.iter().map(|&x| x as f64).sum()
    }

    /// Annual-style yield: PV energy per kWp over the whole axis, kWh/kWp.
    pub fn total_pv_kwh_per_kwp(&self) -> f64 {
        self.pv_kwh_per_kwp.iter().map(|&x| x as f64).sum()
    }

    /// PV generation over the whole axis (scaled by `pv_kwp`), kWh.
    pub fn total_pv_kwh(&self) -> f64 {
        self.total_pv_kwh_per_kwp() * self.pv_kwp
    }

    fn validate(&self, n_slots: usize) -> Result<(), CoreError> {
        let field = |f: &str| format!("{}.{f}", self.name);
        for (f, series) in [("load_kwh", &self.load_kwh), ("pv_kwh_per_kwp", &self.pv_kwh_per_kwp)]
        {
            if series.len() != n_slots {
                return Err(CoreError::invalid(
                    field(f),
                    format!("{} slots, expected {n_slots}", series.len()),
                ));
            }
            if let Some(t) = series.iter().position(|x| !x.is_finite() || *x < 0.0) {
                return Err(CoreError::invalid(
                    field(f),
                    format!("slot {t}: {} is not a finite value ≥ 0", series[t]),
                ));
            }
        }
        if !self.pv_kwp.is_finite() || self.pv_kwp < 0.0 {
            return Err(CoreError::invalid(
                field("pv_kwp"),
                format!("{} is not a finite value ≥ 0", self.pv_kwp),
            ));
        }
        Ok(())
    }
}

/// A per-slot grid signal is either absent (empty) or covers every slot.
fn validate_signal(
    field: &str,
    values: &[f32],
    n_slots: usize,
    non_negative: bool,
) -> Result<(), CoreError> {
    if !values.is_empty() && values.len() != n_slots {
        return Err(CoreError::invalid(
            field,
            format!("{} slots, expected 0 or {n_slots}", values.len()),
        ));
    }
    let bad = |x: &f32| !x.is_finite() || (non_negative && *x < 0.0);
    if let Some(t) = values.iter().position(bad) {
        return Err(CoreError::invalid(field, format!("slot {t}: {} is out of range", values[t])));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny(
        slot_minutes: u32,
        first_slot_of_day: u32,
        first_day_of_week: u32,
        n: usize,
    ) -> Dataset {
        Dataset {
            name: "tiny".into(),
            slot_minutes,
            first_slot_of_day,
            first_day_of_week,
            homes: vec![HomeSeries {
                name: "h".into(),
                load_kwh: vec![1.0; n],
                pv_kwh_per_kwp: vec![0.5; n],
                pv_kwp: 2.0,
            }],
            carbon_kg_per_kwh: vec![],
            price_per_kwh: vec![0.2; n],
        }
    }

    #[test]
    fn calendar_wraps_days_and_weeks() {
        // Starts Sunday 23:00 (hourly): slot 1 is Monday 00:00.
        let ds = tiny(60, 23, 6, 48);
        assert_eq!((ds.slot_of_day(0), ds.day_of_week(0)), (23, 6));
        assert_eq!((ds.slot_of_day(1), ds.day_of_week(1)), (0, 0));
        assert_eq!((ds.slot_of_day(25), ds.day_of_week(25)), (0, 1));
    }

    #[test]
    fn totals_scale_pv_by_kwp() {
        let ds = tiny(30, 0, 0, 10);
        assert_eq!(ds.total_load_kwh(), 10.0);
        assert_eq!(ds.total_pv_kwh(), 10.0);
    }

    #[test]
    fn validate_rejects_broken_invariants() {
        assert!(tiny(60, 0, 0, 24).validate().is_ok());
        assert!(tiny(7, 0, 0, 24).validate().is_err());
        assert!(tiny(60, 24, 0, 24).validate().is_err());
        assert!(tiny(60, 0, 7, 24).validate().is_err());
        let mut ds = tiny(60, 0, 0, 24);
        ds.homes[0].load_kwh[3] = -1.0;
        assert!(ds.validate().is_err());
        let mut ds = tiny(60, 0, 0, 24);
        ds.homes[0].pv_kwh_per_kwp.pop();
        assert!(ds.validate().is_err());
        let mut ds = tiny(60, 0, 0, 24);
        ds.price_per_kwh[0] = f32::NAN;
        assert!(ds.validate().is_err());
    }
}
