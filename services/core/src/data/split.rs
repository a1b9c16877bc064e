//! Held-out evaluation weeks.
//!
//! Owns the one deterministic rule that decides which slots a policy may
//! train on and which are kept for evaluation: weeks start at the first
//! Monday 00:00 of the dataset, and every `n`-th whole week (the 4th, 8th, …
//! for `n = 4`) is held out. Everything else that is a whole day (including
//! the days before the first Monday and after the last whole week) is
//! training data. Partial days at either end belong to neither side, so an
//! episode drawn from a range always starts at midnight.
//!
//! Ranges are slot indices into the dataset; this module never copies series
//! and never draws random numbers.

use std::ops::Range;

use super::Dataset;

/// Disjoint slot ranges, each a whole number of days starting at midnight,
/// in increasing order; adjacent days of one side are merged into one range.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DatasetSplit {
    /// Slot ranges a policy may train on.
    pub train: Vec<Range<usize>>,
    /// Slot ranges held out for evaluation.
    pub eval: Vec<Range<usize>>,
}

impl DatasetSplit {
    /// Slots in the training ranges.
    pub fn train_slots(&self) -> usize {
        self.train.iter().map(ExactSizeIterator::len).sum()
    }

    /// Slots in the evaluation ranges.
    pub fn eval_slots(&self) -> usize {
        self.eval.iter().map(ExactSizeIterator::len).sum()
    }
}

/// Splits `ds` into training and evaluation days (see the module docs);
/// `every_nth = 0` puts every whole day into training.
pub fn split_weeks(ds: &Dataset, every_nth: u32) -> DatasetSplit {
    let slots_per_day = ds.slots_per_day() as usize;
    let first_midnight = (slots_per_day - ds.first_slot_of_day as usize) % slots_per_day;
    let n_whole_days = ds.n_slots().saturating_sub(first_midnight) / slots_per_day;
    let first_monday = (0..n_whole_days.min(7)).find(|&d| ds.day_of_week(first_midnight + d * slots_per_day) == 0);

    let mut split = DatasetSplit::default();
    for day in 0..n_whole_days {
        let start = first_midnight + day * slots_per_day;
        let held_out = first_monday.is_some_and(|m| is_eval_day(day, m, n_whole_days, every_nth));
        let side = if held_out { &mut split.eval } else { &mut split.train };
        push_merged(side, start..start + slots_per_day);
    }
    split
}

/// True if `day` lies in a whole week (counted from the first Monday, day
/// `first_monday`) whose 1-based number is a multiple of `every_nth`.
fn is_eval_day(day: usize, first_monday: usize, n_whole_days: usize, every_nth: u32) -> bool {
    if every_nth == 0 || day < first_monday {
        return false;
    }
    let week = (day - first_monday) / 7;
    let week_is_whole = first_monday + 7 * (week + 1) <= n_whole_days;
    week_is_whole && (week + 1) % every_nth as usize == 0
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

    fn check_invariants(ds: &Dataset, split: &DatasetSplit) {
        let mut all: Vec<&Range<usize>> = split.train.iter().chain(&split.eval).collect();
        all.sort_by_key(|r| r.start);
        for pair in all.windows(2) {
            assert!(pair[0].end <= pair[1].start, "overlap {pair:?}");
        }
        for r in &all {
            assert_eq!(ds.slot_of_day(r.start), 0, "{r:?} does not start at midnight");
            assert_eq!(r.len() % 24, 0, "{r:?} is not whole days");
            assert!(r.end <= ds.n_slots());
        }
        for r in &split.eval {
            assert_eq!(ds.day_of_week(r.start), 0, "eval {r:?} does not start on Monday");
            assert_eq!(r.len() % (7 * 24), 0);
        }
    }

    #[test]
    fn citylearn_shaped_year_holds_out_every_fourth_week() {
        // 365 days from Monday 00:00: 52 whole weeks and one Monday left over.
        let ds = hourly(8760, 0, 0);
        let split = split_weeks(&ds, 4);
        check_invariants(&ds, &split);
        assert_eq!(split.eval.len(), 13);
        assert_eq!(split.eval[0], 3 * 168..4 * 168);
        assert_eq!(split.eval_slots(), 13 * 168);
        assert_eq!(split.train_slots() + split.eval_slots(), 8760);
    }

    #[test]
    fn partial_first_day_and_days_before_monday_are_handled() {
        // Starts Saturday 23:00: the partial hour is dropped, Sunday trains,
        // weeks start at slot 25 (Monday 00:00).
        let ds = hourly(1 + 24 * 60, 23, 5);
        let split = split_weeks(&ds, 2);
        check_invariants(&ds, &split);
        assert_eq!(split.train[0].start, 1);
        assert_eq!(split.eval[0].start, 1 + 24 + 168);
        assert_eq!(split.train_slots() + split.eval_slots(), 24 * 60);
    }

    #[test]
    fn zero_holds_out_nothing_and_short_data_has_no_eval() {
        let ds = hourly(24 * 30, 0, 2);
        assert!(split_weeks(&ds, 0).eval.is_empty());
        assert_eq!(split_weeks(&ds, 0).train, vec![0..24 * 30]);
        let short = hourly(24 * 10, 0, 0);
        assert!(split_weeks(&short, 4).eval.is_empty());
    }

    #[test]
    fn every_week_held_out_leaves_only_edge_days_for_training() {
        let ds = hourly(24 * 16, 0, 3); // Thursday start: Thu–Sun train, 1 whole week, 5 days left.
        let split = split_weeks(&ds, 1);
        check_invariants(&ds, &split);
        assert_eq!(split.eval, vec![96..96 + 168]);
        assert_eq!(split.train, vec![0..96, 264..384]);
    }
}
