//! Loader for the Ausgrid "Solar home electricity data" wide CSV layout.
//!
//! Owns the parsing of the published yearly files (users bring their own
//! copy): an optional title line, then the header `Customer, Generator
//! Capacity, Postcode, Consumption Category, date, 0:30, 1:00, …, 23:30,
//! 0:00[, Row Quality]`; one row per customer, date and category (`GC`
//! general consumption, `CL` controlled load, `GG` gross generation) with 48
//! half-hour kWh values labelled by the interval's *end*, so `0:30` is slot 0
//! of the day and `0:00` is slot 47. Dates may be `1/07/2012` (d/m/yyyy),
//! `01-Jul-10` (dd-Mon-yy, 20yy) or `2010-07-01`.
//!
//! Policies (must never be relaxed silently):
//! - The time axis is every date from the earliest to the latest date in the
//!   file, 48 slots each, starting 00:00 of the earliest date.
//! - A customer is kept only if it has a `GC` and a `GG` row for every date
//!   of the axis, and a `CL` row for every date if it has one for any date.
//!   Incomplete customers (a missing day) are excluded, not padded, and are
//!   listed in [`AusgridImport::excluded`]; if none is left it is an error.
//! - A second row for one customer, date and category is an error, as is a
//!   non-finite, negative or empty value, or a changing Generator Capacity.
//! - load = GC + CL, PV per kWp = GG / Generator Capacity; a capacity of 0
//!   with all-zero GG is a consumer.
//! - Daylight saving: the files have 48 values on every day, including the
//!   transition days. We take them as published: no interval is shifted,
//!   dropped or duplicated, and the axis is uniform.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use super::cells::{csv_error, open, CellAt};
use super::{Dataset, HomeSeries};
use crate::error::CoreError;

mod dates;

pub use dates::parse_ausgrid_date;

const SLOTS_PER_DAY: usize = 48;
const REQUIRED_COLUMNS: [&str; 4] =
    ["Customer", "Generator Capacity", "Consumption Category", "date"];

/// A loaded file and the customers that were left out, with why.
#[derive(Clone, Debug, PartialEq)]
pub struct AusgridImport {
    /// The homes that were kept.
    pub dataset: Dataset,
    /// The customers that were left out.
    pub excluded: Vec<ExcludedCustomer>,
}

/// A customer of the file left out of the dataset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExcludedCustomer {
    /// The customer's number as written in the file.
    pub customer: String,
    /// Why it was left out.
    pub reason: String,
}

/// Reads an Ausgrid solar home file (see the module docs).
pub fn load_ausgrid_csv(path: &Path) -> Result<Dataset, CoreError> {
    parse_ausgrid(open(path)?, &path.display().to_string())
}

/// Parses Ausgrid's layout; `file_label` names the file in errors and the dataset.
pub fn parse_ausgrid(reader: impl Read, file_label: &str) -> Result<Dataset, CoreError> {
    parse_ausgrid_with_report(reader, file_label).map(|import| import.dataset)
}

/// Like [`parse_ausgrid`], also reporting the excluded customers.
pub fn parse_ausgrid_with_report(
    reader: impl Read,
    file_label: &str,
) -> Result<AusgridImport, CoreError> {
    let mut csv = csv::ReaderBuilder::new().has_headers(false).flexible(true).from_reader(reader);
    let mut records = csv.records();
    let mut next = || records.next().transpose().map_err(|e| csv_error(file_label, e));
    let (header, header_line) = read_header(&mut next, file_label)?;
    let layout = Layout::find(&header, header_line, file_label)?;
    let mut customers: BTreeMap<CustomerKey, Customer> = BTreeMap::new();
    while let Some(record) = next()? {
        let line = record.position().map_or(0, |p| p.line());
        if record.len() != header.len() {
            let reason =
                format!("row has {} fields, the header has {}", record.len(), header.len());
            return Err(CoreError::data(file_label, line, "-", reason));
        }
        let row = layout.parse_row(&record, file_label, line)?;
        add_row(&mut customers, row, file_label, line)?;
    }
    assemble(customers, file_label, header_line)
}

/// Skips the optional title line; the header is the first record whose
/// first field is `Customer`, on line 1 or 2.
fn read_header(
    next: &mut impl FnMut() -> Result<Option<csv::StringRecord>, CoreError>,
    file: &str,
) -> Result<(csv::StringRecord, u64), CoreError> {
    for _ in 0..2 {
        let Some(record) = next()? else { break };
        if record.get(0).is_some_and(|f| f.trim().eq_ignore_ascii_case("Customer")) {
            let line = record.position().map_or(1, |p| p.line());
            return Ok((record, line));
        }
    }
    Err(CoreError::data(
        file,
        1,
        "Customer",
        "no header line starting with Customer in the first two lines",
    ))
}

/// Column positions found in the header.
struct Layout {
    customer: usize,
    capacity: usize,
    category: usize,
    date: usize,
    /// Header label of each of the 48 value columns, for error messages.
    slot_labels: Vec<String>,
}

impl Layout {
    fn find(header: &csv::StringRecord, line: u64, file: &str) -> Result<Layout, CoreError> {
        let mut idx = [0; 4];
        for (slot, name) in idx.iter_mut().zip(REQUIRED_COLUMNS) {
            *slot = header
                .iter()
                .position(|h| h.trim().eq_ignore_ascii_case(name))
                .ok_or_else(|| CoreError::data(file, line, name, "missing column"))?;
        }
        let date = idx[3];
        let slot_labels: Vec<String> = header
            .iter()
            .skip(date + 1)
            .take(SLOTS_PER_DAY)
            .map(|h| h.trim().to_string())
            .collect();
        check_slot_labels(&slot_labels, line, file)?;
        Ok(Layout { customer: idx[0], capacity: idx[1], category: idx[2], date, slot_labels })
    }

    fn parse_row(
        &self,
        record: &csv::StringRecord,
        file: &str,
        line: u64,
    ) -> Result<Row, CoreError> {
        let field = |i: usize| record.get(i).unwrap_or("").trim();
        let at = |column| CellAt { file, line, column };
        let customer = field(self.customer);
        if customer.is_empty() {
            return Err(at("Customer").error("empty cell"));
        }
        let capacity_kwp = at("Generator Capacity").non_negative(field(self.capacity))?;
        let category = match field(self.category) {
            "GC" => Category::GeneralConsumption,
            "CL" => Category::ControlledLoad,
            "GG" => Category::GrossGeneration,
            other => {
                return Err(
                    at("Consumption Category").error(format!("{other:?} is not GC, CL or GG"))
                )
            }
        };
        let date_text = field(self.date);
        let day = parse_ausgrid_date(date_text).ok_or_else(|| {
            at("date").error(format!("{date_text:?} is not d/m/yyyy, dd-Mon-yy or yyyy-mm-dd"))
        })?;
        let mut kwh = [0.0f32; SLOTS_PER_DAY];
        for (k, value) in kwh.iter_mut().enumerate() {
            *value = at(&self.slot_labels[k]).non_negative(field(self.date + 1 + k))? as f32;
        }
        Ok(Row { customer: customer.to_string(), capacity_kwp, category, day, kwh })
    }
}

/// The 48 columns after `date` must be 0:30, 1:00, …, 23:30, 0:00.
fn check_slot_labels(labels: &[String], line: u64, file: &str) -> Result<(), CoreError> {
    if labels.len() != SLOTS_PER_DAY {
        return Err(CoreError::data(
            file,
            line,
            "date",
            format!("{} half-hour columns after date, expected 48", labels.len()),
        ));
    }
    for (k, label) in labels.iter().enumerate() {
        let expected_min = ((k + 1) * 30) % 1440;
        if parse_clock_minutes(label).map(|m| m % 1440) != Some(expected_min) {
            let reason = format!(
                "expected {}:{:02} (end of half-hour {k})",
                expected_min / 60,
                expected_min % 60
            );
            return Err(CoreError::data(file, line, label.as_str(), reason));
        }
    }
    Ok(())
}

fn parse_clock_minutes(label: &str) -> Option<usize> {
    let (h, m) = label.split_once(':')?;
    Some(h.parse::<usize>().ok()? * 60 + m.parse::<usize>().ok()?)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Category {
    GeneralConsumption,
    ControlledLoad,
    GrossGeneration,
}

impl Category {
    fn code(self) -> &'static str {
        match self {
            Category::GeneralConsumption => "GC",
            Category::ControlledLoad => "CL",
            Category::GrossGeneration => "GG",
        }
    }
}

struct Row {
    customer: String,
    capacity_kwp: f64,
    category: Category,
    /// Days since 1970-01-01.
    day: i64,
    kwh: [f32; SLOTS_PER_DAY],
}

/// Sorts customer ids numerically when they are numbers (they are in the
/// published files), so `ausgrid-2` comes before `ausgrid-10`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct CustomerKey(u64, String);

impl CustomerKey {
    fn new(id: &str) -> CustomerKey {
        CustomerKey(id.parse().unwrap_or(u64::MAX), id.to_string())
    }
}

/// One category's values for one day, with the line they came from.
type DayValues = Option<(u64, [f32; SLOTS_PER_DAY])>;

struct Customer {
    capacity_kwp: f64,
    has_controlled_load: bool,
    /// Per day: GC, CL, GG.
    days: BTreeMap<i64, [DayValues; 3]>,
}

fn add_row(
    customers: &mut BTreeMap<CustomerKey, Customer>,
    row: Row,
    file: &str,
    line: u64,
) -> Result<(), CoreError> {
    let customer = customers.entry(CustomerKey::new(&row.customer)).or_insert_with(|| Customer {
        capacity_kwp: row.capacity_kwp,
        has_controlled_load: false,
        days: BTreeMap::new(),
    });
    if row.capacity_kwp != customer.capacity_kwp {
        let reason = format!(
            "{} kWp differs from this customer's earlier {} kWp",
            row.capacity_kwp, customer.capacity_kwp
        );
        return Err(CoreError::data(file, line, "Generator Capacity", reason));
    }
    customer.has_controlled_load |= row.category == Category::ControlledLoad;
    let entry = &mut customer.days.entry(row.day).or_default()[row.category as usize];
    if let Some((first_line, _)) = entry {
        let reason = format!(
            "duplicate {} row for customer {} on {} (first on line {first_line})",
            row.category.code(),
            row.customer,
            dates::format_iso(row.day)
        );
        return Err(CoreError::data(file, line, "Consumption Category", reason));
    }
    *entry = Some((line, row.kwh));
    Ok(())
}

/// Applies the completeness policy and builds the dataset.
fn assemble(
    customers: BTreeMap<CustomerKey, Customer>,
    file: &str,
    header_line: u64,
) -> Result<AusgridImport, CoreError> {
    let first_day = customers.values().filter_map(|c| c.days.keys().next()).min().copied();
    let last_day = customers.values().filter_map(|c| c.days.keys().next_back()).max().copied();
    let (Some(first_day), Some(last_day)) = (first_day, last_day) else {
        return Err(CoreError::data(file, header_line, "-", "no data rows"));
    };
    let mut homes = Vec::new();
    let mut excluded = Vec::new();
    for (CustomerKey(_, id), customer) in customers {
        match first_gap(&customer, first_day, last_day) {
            Some(reason) => excluded.push(ExcludedCustomer { customer: id, reason }),
            None => homes.push(build_home(&id, &customer, file)?),
        }
    }
    if homes.is_empty() {
        let reason = format!(
            "no customer has complete data from {} to {}",
            dates::format_iso(first_day),
            dates::format_iso(last_day)
        );
        return Err(CoreError::data(file, header_line, "Customer", reason));
    }
    let dataset = Dataset {
        name: file.to_string(),
        slot_minutes: 30,
        first_slot_of_day: 0,
        first_day_of_week: dates::day_of_week(first_day),
        homes,
        carbon_kg_per_kwh: Vec::new(),
        price_per_kwh: Vec::new(),
    };
    dataset.validate()?;
    Ok(AusgridImport { dataset, excluded })
}

/// The first missing (day, category) of a customer on the axis, as a reason.
fn first_gap(customer: &Customer, first_day: i64, last_day: i64) -> Option<String> {
    let mut needed = vec![Category::GeneralConsumption, Category::GrossGeneration];
    if customer.has_controlled_load {
        needed.push(Category::ControlledLoad);
    }
    for day in first_day..=last_day {
        let rows = customer.days.get(&day);
        if let Some(category) =
            needed.iter().find(|c| rows.is_none_or(|r| r[**c as usize].is_none()))
        {
            return Some(format!("no {} row on {}", category.code(), dates::format_iso(day)));
        }
    }
    None
}

/// load = GC + CL, PV per kWp = GG / capacity; assumes [`first_gap`] found none.
fn build_home(id: &str, customer: &Customer, file: &str) -> Result<HomeSeries, CoreError> {
    let values = |rows: &[DayValues; 3], c: Category| {
        rows[c as usize].map_or([0.0; SLOTS_PER_DAY], |(_, v)| v)
    };
    let mut load_kwh = Vec::with_capacity(customer.days.len() * SLOTS_PER_DAY);
    let mut pv_kwh_per_kwp = Vec::with_capacity(load_kwh.capacity());
    for rows in customer.days.values() {
        let (gc, cl) =
            (values(rows, Category::GeneralConsumption), values(rows, Category::ControlledLoad));
        load_kwh.extend(gc.iter().zip(cl).map(|(g, c)| g + c));
        let gg = values(rows, Category::GrossGeneration);
        if customer.capacity_kwp == 0.0 {
            if let Some((line, _)) =
                rows[Category::GrossGeneration as usize].filter(|(_, v)| v.iter().any(|&x| x > 0.0))
            {
                return Err(CoreError::data(
                    file,
                    line,
                    "Generator Capacity",
                    "generation with a capacity of 0 kWp",
                ));
            }
            pv_kwh_per_kwp.extend([0.0; SLOTS_PER_DAY]);
        } else {
            pv_kwh_per_kwp.extend(gg.iter().map(|&g| (g as f64 / customer.capacity_kwp) as f32));
        }
    }
    Ok(HomeSeries {
        name: format!("ausgrid-{id}"),
        load_kwh,
        pv_kwh_per_kwp,
        pv_kwp: customer.capacity_kwp,
    })
}

#[cfg(test)]
#[path = "ausgrid_tests.rs"]
mod tests;
