//! Measured and synthetic time series the simulation runs on.
//!
//! A [`Dataset`] is a set of homes on one common time axis (fixed slot
//! length), plus per-slot grid signals (carbon intensity, measured price).
//! Loaders fill it from the bundled CityLearn-derived file (`citylearn.rs`),
//! from Ausgrid Solar Home CSVs (`ausgrid.rs`), or from a seeded synthetic
//! generator for tests (`synthetic.rs`). Scaling a dataset up to a large
//! community happens in `crate::prosumer`, which references homes of a
//! dataset instead of copying their series.
//!
//! Loaders validate everything and either return a complete dataset or an
//! error naming file, line and column: never a partial one.

use serde::{Deserialize, Serialize};

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
    pub fn n_slots(&self) -> usize {
        self.homes.first().map_or(0, |h| h.load_kwh.len())
    }

    pub fn slots_per_day(&self) -> u32 {
        24 * 60 / self.slot_minutes
    }

    pub fn slot_hours(&self) -> f64 {
        self.slot_minutes as f64 / 60.0
    }
}
