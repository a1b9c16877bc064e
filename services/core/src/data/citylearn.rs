//! Loader for peergrid's tidy CityLearn CSV (`data/citylearn2022/`).
//!
//! Owns the parsing and validation of the one-row-per-(home, hour) layout
//! written by `scripts/prepare_citylearn.py` (columns documented in
//! `data/citylearn2022/PROVENANCE.md`) and the copy of that file compiled
//! into the binary, so that [`bundled_citylearn`] works offline from any
//! working directory. It must never return a partially loaded dataset or
//! repair a bad value: every problem is a [`CoreError::Data`] naming the
//! file, the 1-based line (header = line 1) and the column.
//!
//! Conventions of the file (checked here, not assumed): slots are
//! consecutive hours, `hour` is the hour of day at the *start* of the slot,
//! `day_of_week` is 0 = Monday … 6 = Sunday, `pv_kwp = 0` marks a consumer
//! whose PV column is all zeros (Building_15 in the bundled data), and the
//! grid columns (price, carbon) are identical on every home's rows.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use super::cells::{csv_error, open, CellAt};
use super::{Dataset, HomeSeries};
use crate::error::CoreError;

/// The bundled file (~5.8 MB). Compiled in because it is well under the 8 MB
/// we allow for embedded data and it makes every binary self-contained.
const BUNDLED_CSV: &str = include_str!("../../../../data/citylearn2022/fontana_hourly.csv");
const BUNDLED_LABEL: &str = "data/citylearn2022/fontana_hourly.csv";

/// Column names, in the order of [`Columns`]' fields.
const COLUMN_NAMES: [&str; 10] = [
    "building",
    "slot",
    "month",
    "day_of_week",
    "hour",
    "load_kwh",
    "pv_kwh_per_kwp",
    "pv_kwp",
    "price_per_kwh",
    "carbon_kg_per_kwh",
];

/// The 17 Fontana homes of the CityLearn Challenge 2022, hourly, one year
/// starting Monday 00:00 (see `data/citylearn2022/PROVENANCE.md`).
pub fn bundled_citylearn() -> Result<Dataset, CoreError> {
    let mut ds = parse_citylearn(BUNDLED_CSV.as_bytes(), BUNDLED_LABEL)?;
    ds.name = "citylearn2022-fontana".to_string();
    Ok(ds)
}

/// Reads a CityLearn CSV file in the tidy layout (see the module docs).
pub fn load_citylearn_csv(path: &Path) -> Result<Dataset, CoreError> {
    parse_citylearn(open(path)?, &path.display().to_string())
}

/// Parses the tidy CityLearn layout; `file_label` is used in error messages
/// and as the dataset name.
pub fn parse_citylearn(reader: impl Read, file_label: &str) -> Result<Dataset, CoreError> {
    let mut csv = csv::ReaderBuilder::new().has_headers(true).from_reader(reader);
    let headers = csv.headers().map_err(|e| csv_error(file_label, e))?.clone();
    let columns = Columns::find(&headers, file_label)?;
    let mut acc = Accumulator::default();
    for record in csv.records() {
        let record = record.map_err(|e| csv_error(file_label, e))?;
        let line = record.position().map_or(0, |p| p.line());
        let row = columns.parse_row(&record, file_label, line)?;
        acc.push(row, file_label, line)?;
    }
    acc.finish(file_label)
}

/// Indices of the required columns in the header.
struct Columns([usize; 10]);

impl Columns {
    fn find(headers: &csv::StringRecord, file: &str) -> Result<Columns, CoreError> {
        let mut idx = [0; 10];
        for (slot, name) in idx.iter_mut().zip(COLUMN_NAMES) {
            *slot = headers
                .iter()
                .position(|h| h.trim() == name)
                .ok_or_else(|| CoreError::data(file, 1, name, "missing column"))?;
        }
        Ok(Columns(idx))
    }

    fn parse_row(
        &self,
        record: &csv::StringRecord,
        file: &str,
        line: u64,
    ) -> Result<Row, CoreError> {
        let cell = |i: usize| {
            let at = CellAt { file, line, column: COLUMN_NAMES[i] };
            (at, record.get(self.0[i]).unwrap_or(""))
        };
        let int = |i: usize| cell(i).0.unsigned(cell(i).1);
        let energy = |i: usize| cell(i).0.non_negative(cell(i).1);
        let row = Row {
            building: int(0)?,
            slot: int(1)? as usize,
            month: int(2)?,
            day_of_week: int(3)?,
            hour: int(4)?,
            load_kwh: energy(5)?,
            pv_kwh_per_kwp: energy(6)?,
            pv_kwp: energy(7)?,
            // Prices may legitimately be negative in other markets; only finiteness is required.
            price_per_kwh: cell(8).0.finite(cell(8).1)?,
            carbon_kg_per_kwh: energy(9)?,
        };
        row.check_ranges(file, line)?;
        Ok(row)
    }
}

#[derive(Clone, Copy, Debug)]
struct Row {
    building: u64,
    slot: usize,
    month: u64,
    day_of_week: u64,
    hour: u64,
    load_kwh: f64,
    pv_kwh_per_kwp: f64,
    pv_kwp: f64,
    price_per_kwh: f64,
    carbon_kg_per_kwh: f64,
}

impl Row {
    fn check_ranges(&self, file: &str, line: u64) -> Result<(), CoreError> {
        let out_of = |column: &str, value: u64, range: &str| {
            CoreError::data(file, line, column, format!("{value} is outside {range}"))
        };
        if !(1..=12).contains(&self.month) {
            return Err(out_of("month", self.month, "1..=12"));
        }
        if self.day_of_week > 6 {
            return Err(out_of("day_of_week", self.day_of_week, "0..=6"));
        }
        if self.hour > 23 {
            return Err(out_of("hour", self.hour, "0..=23"));
        }
        if self.pv_kwp == 0.0 && self.pv_kwh_per_kwp != 0.0 {
            return Err(CoreError::data(
                file,
                line,
                "pv_kwh_per_kwp",
                "non-zero PV for a home with pv_kwp 0",
            ));
        }
        Ok(())
    }

    /// (day_of_week, hour) the slot must have if slots are consecutive hours
    /// after a first slot at `start`.
    fn expected_calendar(start: (u64, u64), slot: usize) -> (u64, u64) {
        let hours_since_midnight = start.1 as usize + slot;
        let dow = (start.0 as usize + hours_since_midnight / 24) % 7;
        (dow as u64, (hours_since_midnight % 24) as u64)
    }
}

/// One home being filled row by row.
struct HomeAcc {
    load_kwh: Vec<f32>,
    pv_kwh_per_kwp: Vec<f32>,
    pv_kwp: f64,
    last_line: u64,
}

/// Rows collected so far; nothing leaves it until [`Accumulator::finish`]
/// has checked the whole file.
#[derive(Default)]
struct Accumulator {
    homes: BTreeMap<u64, HomeAcc>,
    /// (day_of_week, hour) of slot 0, from the first row of the file.
    start: Option<(u64, u64)>,
    price_per_kwh: Vec<f32>,
    carbon_kg_per_kwh: Vec<f32>,
    /// Building whose rows set the grid signals, for error messages.
    signal_source: u64,
}

impl Accumulator {
    fn push(&mut self, row: Row, file: &str, line: u64) -> Result<(), CoreError> {
        let start = *self.start.get_or_insert((row.day_of_week, row.hour));
        self.check_calendar(&row, start, file, line)?;
        let home = self.homes.entry(row.building).or_insert_with(|| HomeAcc {
            load_kwh: Vec::new(),
            pv_kwh_per_kwp: Vec::new(),
            pv_kwp: row.pv_kwp,
            last_line: line,
        });
        let at = |column| CellAt { file, line, column };
        if row.slot != home.load_kwh.len() {
            let reason = format!(
                "slot {} of Building_{} is not consecutive: expected {}",
                row.slot,
                row.building,
                home.load_kwh.len()
            );
            return Err(at("slot").error(reason));
        }
        if row.pv_kwp != home.pv_kwp {
            return Err(at("pv_kwp").error(format!(
                "{} differs from this home's earlier {}",
                row.pv_kwp, home.pv_kwp
            )));
        }
        home.load_kwh.push(row.load_kwh as f32);
        home.pv_kwh_per_kwp.push(row.pv_kwh_per_kwp as f32);
        home.last_line = line;
        self.push_signals(&row, file, line)
    }

    /// The file has no explicit resolution; hour and weekday advancing by
    /// exactly one hour per slot is what makes it hourly.
    fn check_calendar(
        &self,
        row: &Row,
        start: (u64, u64),
        file: &str,
        line: u64,
    ) -> Result<(), CoreError> {
        let (dow, hour) = Row::expected_calendar(start, row.slot);
        if row.hour != hour {
            let reason = format!(
                "slot {} has hour {}, expected {hour} for consecutive hourly slots",
                row.slot, row.hour
            );
            return Err(CoreError::data(file, line, "hour", reason));
        }
        if row.day_of_week != dow {
            let reason =
                format!("slot {} has day_of_week {}, expected {dow}", row.slot, row.day_of_week);
            return Err(CoreError::data(file, line, "day_of_week", reason));
        }
        Ok(())
    }

    /// Grid signals are per slot: the first home to reach a slot sets them,
    /// every other home must repeat them exactly.
    fn push_signals(&mut self, row: &Row, file: &str, line: u64) -> Result<(), CoreError> {
        let (price, carbon) = (row.price_per_kwh as f32, row.carbon_kg_per_kwh as f32);
        if row.slot == self.price_per_kwh.len() {
            if row.slot == 0 {
                self.signal_source = row.building;
            }
            self.price_per_kwh.push(price);
            self.carbon_kg_per_kwh.push(carbon);
            return Ok(());
        }
        for (column, seen, now) in [
            ("price_per_kwh", self.price_per_kwh[row.slot], price),
            ("carbon_kg_per_kwh", self.carbon_kg_per_kwh[row.slot], carbon),
        ] {
            if seen != now {
                let reason = format!(
                    "{now} differs from {seen} of Building_{} at slot {}",
                    self.signal_source, row.slot
                );
                return Err(CoreError::data(file, line, column, reason));
            }
        }
        Ok(())
    }

    fn finish(self, file: &str) -> Result<Dataset, CoreError> {
        let Some((day_of_week, hour)) = self.start else {
            return Err(CoreError::data(file, 1, "-", "no data rows"));
        };
        let n_slots = self.price_per_kwh.len();
        let mut homes = Vec::with_capacity(self.homes.len());
        for (building, home) in self.homes {
            if home.load_kwh.len() != n_slots {
                let reason = format!(
                    "Building_{building} ends after {} slots, the longest home has {n_slots}",
                    home.load_kwh.len()
                );
                return Err(CoreError::data(file, home.last_line, "slot", reason));
            }
            homes.push(HomeSeries {
                name: format!("Building_{building}"),
                load_kwh: home.load_kwh,
                pv_kwh_per_kwp: home.pv_kwh_per_kwp,
                pv_kwp: home.pv_kwp,
            });
        }
        let ds = Dataset {
            name: file.to_string(),
            slot_minutes: 60,
            first_slot_of_day: hour as u32,
            first_day_of_week: day_of_week as u32,
            homes,
            carbon_kg_per_kwh: self.carbon_kg_per_kwh,
            price_per_kwh: self.price_per_kwh,
        };
        ds.validate()?;
        Ok(ds)
    }
}

#[cfg(test)]
#[path = "citylearn_tests.rs"]
mod tests;
