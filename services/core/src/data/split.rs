//! Train / validation / test weeks.
//!
//! Owns the one deterministic rule that decides which slots a policy may
//! train on, which are kept for choosing hyperparameters and checkpoints
//! (validation) and which are kept for the reported result (test). Weeks
//! start at the first Monday 00:00 of the dataset and are numbered from 1;
//! whole week `w` is
//!
//! - **test** if `w` is a multiple of `test_every_nth_week` (the 4th, 8th, …
//!   for 4: the weeks `peergrid run` has always reported on),
//! - otherwise **validation** if `w ≡ 2 (mod validation_every_nth_week)`
//!   (weeks 2, 10, 18, … for 8: between test weeks, spread over the year),
//! - otherwise **train**.
//!
//! Every other whole day (before the first Monday, after the last whole
//! week) is training data. Partial days at either end belong to no part, so
//! an episode drawn from a range always starts at midnight. `0` for either
//! period turns that part off.
//!
//! Ranges are slot indices into the dataset; this module never copies series
//! and never draws random numbers.

use std::fmt;
use std::ops::Range;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::Dataset;
use crate::error::CoreError;

/// The three parts of a dataset.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SplitPart {
    /// Days the market plays while training.
    Train,
    /// Days for choosing hyperparameters and checkpoints; never trained on.
    Validation,
    /// Days for the reported result, evaluated once at the end; never trained on.
    Test,
}

impl SplitPart {
    /// The lower-case name (`train`, `validation`, `test`).
    pub fn name(self) -> &'static str {
        match self {
            SplitPart::Train => "train",
            SplitPart::Validation => "validation",
            SplitPart::Test => "test",
        }
    }
}

impl fmt::Display for SplitPart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for SplitPart {
    type Err = CoreError;

    fn from_str(s: &str) -> Result<SplitPart, CoreError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "train" => Ok(SplitPart::Train),
            "validation" => Ok(SplitPart::Validation),
            "test" => Ok(SplitPart::Test),
            _ => Err(CoreError::InvalidField {
                field: "split".into(),
                reason: format!("`{s}`: expected `train`, `validation` or `test`"),
            }),
        }
    }
}

/// Which whole weeks are test and which validation (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WeekSplit {
    /// Week `w` is a test week if `w` is a multiple of this (0: no test weeks).
    pub test_every_nth_week: u32,
    /// Week `w` is a validation week if it is not a test week and
    /// `w ≡ 2 (mod this)` (0: no validation weeks).
    pub validation_every_nth_week: u32,
}

impl Default for WeekSplit {
    /// Test every 4th week, validation weeks 2, 10, 18, …: on a year, 13 test,
    /// 7 validation and 32 training weeks.
    fn default() -> Self {
        WeekSplit { test_every_nth_week: 4, validation_every_nth_week: 8 }
    }
}

impl WeekSplit {
    /// The part of whole week `week` (1-based, counted from the first Monday).
    pub fn part_of_week(&self, week: usize) -> SplitPart {
        let (test, validation) =
            (self.test_every_nth_week as usize, self.validation_every_nth_week as usize);
        if test > 0 && week % test == 0 {
            SplitPart::Test
        } else if validation > 0 && week % validation == 2 % validation {
            SplitPart::Validation
        } else {
            SplitPart::Train
        }
    }

    /// Splits `ds` and checks that no part is empty; the error names the
    /// flag (`--test-every-nth-week` or `--validation-every-nth-week`) whose
    /// value leaves a part empty, and the weeks the dataset has.
    pub fn split_checked(&self, ds: &Dataset) -> Result<DatasetSplit, CoreError> {
        let split = split_weeks(ds, self);
        let weeks = split.whole_weeks;
        let invalid =
            |field: &str, reason: String| CoreError::InvalidField { field: field.into(), reason };
        if split.test.is_empty() {
            return Err(invalid(
                "--test-every-nth-week",
                format!(
                    "{} leaves no test week: must be 1..={weeks} on this dataset of {weeks} whole weeks",
                    self.test_every_nth_week
                ),
            ));
        }
        if split.validation.is_empty() {
            return Err(invalid(
                "--validation-every-nth-week",
                format!(
                    "{} leaves no validation week beside the test weeks (every {}): must be ≥ 1 and pick a week 2, 2+n, … that is not a test week, on {weeks} whole weeks",
                    self.validation_every_nth_week, self.test_every_nth_week
                ),
            ));
        }
        if split.train.is_empty() {
            return Err(invalid(
                "--validation-every-nth-week",
                format!(
                    "{} with test every {} leaves no training day",
                    self.validation_every_nth_week, self.test_every_nth_week
                ),
            ));
        }
        Ok(split)
    }
}

/// Disjoint slot ranges, each a whole number of days starting at midnight,
/// in increasing order; adjacent days of one part are merged into one range.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DatasetSplit {
    /// Slot ranges a policy may train on.
    pub train: Vec<Range<usize>>,
    /// Slot ranges for validation.
    pub validation: Vec<Range<usize>>,
    /// Slot ranges for the reported (test) result.
    pub test: Vec<Range<usize>>,
    /// Whole weeks in the dataset (from the first Monday).
    pub whole_weeks: usize,
}

impl DatasetSplit {
    /// The ranges of `part`.
    pub fn ranges(&self, part: SplitPart) -> &[Range<usize>] {
        match part {
            SplitPart::Train => &self.train,
            SplitPart::Validation => &self.validation,
            SplitPart::Test => &self.test,
        }
    }

    /// Slots in the ranges of `part`.
    pub fn slots(&self, part: SplitPart) -> usize {
        self.ranges(part).iter().map(ExactSizeIterator::len).sum()
    }
}

/// Splits `ds` into training, validation and test days (see the module docs).
pub fn split_weeks(ds: &Dataset, split: &WeekSplit) -> DatasetSplit {
    let slots_per_day = ds.slots_per_day() as usize;
    let first_midnight = (slots_per_day - ds.first_slot_of_day as usize) % slots_per_day;
    let n_whole_days = ds.n_slots().saturating_sub(first_midnight) / slots_per_day;
    let first_monday =
        (0..n_whole_days.min(7)).find(|&d| ds.day_of_week(first_midnight + d * slots_per_day) == 0);

    let mut out = DatasetSplit {
        whole_weeks: first_monday.map_or(0, |m| (n_whole_days - m) / 7),
        ..DatasetSplit::default()
    };
    for day in 0..n_whole_days {
        let start = first_midnight + day * slots_per_day;
        let part = match first_monday {
            Some(m) if day >= m && (day - m) / 7 < out.whole_weeks => {
                split.part_of_week((day - m) / 7 + 1)
            }
            _ => SplitPart::Train,
        };
        let side = match part {
            SplitPart::Train => &mut out.train,
            SplitPart::Validation => &mut out.validation,
            SplitPart::Test => &mut out.test,
        };
        push_merged(side, start..start + slots_per_day);
    }
    out
}

fn push_merged(ranges: &mut Vec<Range<usize>>, day: Range<usize>) {
    match ranges.last_mut() {
        Some(last) if last.end == day.start => last.end = day.end,
        _ => ranges.push(day),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::synthetic::synthetic_dataset;
    use proptest::prelude::*;

    /// A dataset of `n_slots` hourly slots starting at the given calendar point.
    fn hourly(n_slots: usize, first_slot_of_day: u32, first_day_of_week: u32) -> Dataset {
        let mut ds = synthetic_dataset(1, n_slots.div_ceil(24), 60, 1);
        for home in &mut ds.homes {
            home.load_kwh.truncate(n_slots);
            home.pv_kwh_per_kwp.truncate(n_slots);
        }
        ds.carbon_kg_per_kwh.truncate(n_slots);
        ds.price_per_kwh.truncate(n_slots);
        ds.first_slot_of_day = first_slot_of_day;
        ds.first_day_of_week = first_day_of_week;
        ds
    }

    fn split(test: u32, validation: u32) -> WeekSplit {
        WeekSplit { test_every_nth_week: test, validation_every_nth_week: validation }
    }

    /// The three parts are disjoint, whole days from midnight, and together
    /// cover every whole day of the dataset; validation and test are whole
    /// weeks from Monday.
    fn check_invariants(ds: &Dataset, split: &DatasetSplit) {
        let mut all: Vec<&Range<usize>> =
            split.train.iter().chain(&split.validation).chain(&split.test).collect();
        all.sort_by_key(|r| r.start);
        for pair in all.windows(2) {
            assert!(pair[0].end <= pair[1].start, "overlap {pair:?}");
        }
        for r in &all {
            assert_eq!(ds.slot_of_day(r.start), 0, "{r:?} does not start at midnight");
            assert_eq!(r.len() % 24, 0, "{r:?} is not whole days");
            assert!(r.end <= ds.n_slots());
        }
        let first_midnight = (24 - ds.first_slot_of_day as usize) % 24;
        let whole_days = ds.n_slots().saturating_sub(first_midnight) / 24;
        let covered: usize = all.iter().map(|r| r.len()).sum();
        assert_eq!(covered, whole_days * 24, "the parts do not cover every whole day");
        for r in split.validation.iter().chain(&split.test) {
            assert_eq!(ds.day_of_week(r.start), 0, "{r:?} does not start on Monday");
            assert_eq!(r.len() % (7 * 24), 0);
        }
    }

    #[test]
    fn citylearn_shaped_year_default_split() {
        // 365 days from Monday 00:00: 52 whole weeks and one Monday left over.
        let ds = hourly(8760, 0, 0);
        let s = split_weeks(&ds, &WeekSplit::default());
        check_invariants(&ds, &s);
        assert_eq!(s.whole_weeks, 52);
        // Test: weeks 4, 8, …, 52 (what `peergrid run` always held out).
        assert_eq!(s.test.len(), 13);
        assert_eq!(s.test[0], 3 * 168..4 * 168);
        assert_eq!(s.slots(SplitPart::Test), 13 * 168);
        // Validation: weeks 2, 10, 18, 26, 34, 42, 50.
        let starts: Vec<usize> = s.validation.iter().map(|r| r.start / 168 + 1).collect();
        assert_eq!(starts, vec![2, 10, 18, 26, 34, 42, 50]);
        assert_eq!(s.slots(SplitPart::Train), 8760 - 20 * 168);
    }

    #[test]
    fn test_weeks_do_not_depend_on_the_validation_period() {
        let ds = hourly(8760, 0, 0);
        let reference = split_weeks(&ds, &split(4, 0)).test;
        for m in [1, 2, 3, 5, 8, 13] {
            assert_eq!(split_weeks(&ds, &split(4, m)).test, reference, "validation every {m}");
        }
    }

    #[test]
    fn partial_first_day_and_days_before_monday_are_handled() {
        // Starts Saturday 23:00: the partial hour is dropped, Sunday trains,
        // weeks start at slot 25 (Monday 00:00).
        let ds = hourly(1 + 24 * 60, 23, 5);
        let s = split_weeks(&ds, &split(2, 0));
        check_invariants(&ds, &s);
        assert_eq!(s.train[0].start, 1);
        assert_eq!(s.test[0].start, 1 + 24 + 168);
        assert!(s.validation.is_empty());
        assert_eq!(s.slots(SplitPart::Train) + s.slots(SplitPart::Test), 24 * 60);
    }

    #[test]
    fn zero_turns_a_part_off_and_short_data_has_no_test() {
        let ds = hourly(24 * 30, 0, 2);
        assert!(split_weeks(&ds, &split(0, 0)).test.is_empty());
        assert_eq!(split_weeks(&ds, &split(0, 0)).train, vec![0..24 * 30]);
        let short = hourly(24 * 10, 0, 0);
        assert!(split_weeks(&short, &split(4, 8)).test.is_empty());
    }

    #[test]
    fn checked_split_names_the_flag_that_empties_a_part() {
        let year = hourly(8760, 0, 0);
        assert!(WeekSplit::default().split_checked(&year).is_ok());
        let err = |s: WeekSplit, ds: &Dataset| s.split_checked(ds).unwrap_err().to_string();
        let e = err(split(0, 8), &year);
        assert!(
            e.contains("--test-every-nth-week") && e.contains("no test week") && e.contains("52"),
            "{e}"
        );
        let e = err(split(53, 8), &year);
        assert!(e.contains("--test-every-nth-week") && e.contains("1..=52"), "{e}");
        // Every validation candidate (weeks 2, 4, …) is a test week.
        let e = err(split(2, 2), &year);
        assert!(
            e.contains("--validation-every-nth-week") && e.contains("no validation week"),
            "{e}"
        );
        let e = err(split(4, 0), &year);
        assert!(e.contains("--validation-every-nth-week"), "{e}");
        // Two whole weeks from Monday, nothing else: week 1 validation, week 2 test.
        let e = err(split(2, 1), &hourly(24 * 14, 0, 0));
        assert!(e.contains("no training day"), "{e}");
    }

    #[test]
    fn parts_parse_and_print() {
        for part in [SplitPart::Train, SplitPart::Validation, SplitPart::Test] {
            assert_eq!(part.to_string().parse::<SplitPart>().unwrap(), part);
        }
        assert_eq!(" Validation ".parse::<SplitPart>().unwrap(), SplitPart::Validation);
        let e = "dev".parse::<SplitPart>().unwrap_err().to_string();
        assert!(e.contains("split") && e.contains("`dev`"), "{e}");
    }

    proptest! {
        #[test]
        fn parts_partition_the_whole_days_deterministically(
            days in 0usize..400,
            first_slot in 0u32..24,
            first_dow in 0u32..7,
            test in 0u32..9,
            validation in 0u32..12,
        ) {
            let ds = hourly(days * 24 + first_slot as usize, first_slot, first_dow);
            let rule = split(test, validation);
            let s = split_weeks(&ds, &rule);
            check_invariants(&ds, &s);
            prop_assert_eq!(&s, &split_weeks(&ds, &rule));
            // Each whole week lies in exactly the part `part_of_week` names.
            for part in [SplitPart::Validation, SplitPart::Test] {
                for r in s.ranges(part) {
                    for week_start in r.clone().step_by(168) {
                        let monday0 = (0..7 * 24 + 24).find(|&t| ds.slot_of_day(t) == 0 && ds.day_of_week(t) == 0).unwrap();
                        prop_assert_eq!(rule.part_of_week((week_start - monday0) / 168 + 1), part);
                    }
                }
            }
        }
    }
}
