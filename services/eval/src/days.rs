//! Held-out days: numbering them and selecting some by a short text syntax.
//!
//! The core's [`split_weeks`] divides the whole weeks into train, validation
//! and test; this module numbers the days of one held-out part (validation
//! or test) `1..=N` in dataset order and parses the `--days` syntax that
//! picks some of them:
//!
//! ```text
//! all              every held-out day (the default)
//! 3                held-out day 3
//! 1-7              days 1 to 7 inclusive (the first held-out week)
//! 1-7,15,22-28     any comma-separated mix of the two
//! ```
//!
//! Days are always played in dataset order, whatever order they are written
//! in; a day written twice, a day beyond `N`, `0` or a reversed range is an
//! error naming the flag and the bound. Nothing here reads series: a day is
//! a range of slot indices.

use std::fmt;
use std::ops::{Range, RangeInclusive};

use peergrid_core::data::split::{split_weeks, SplitPart, WeekSplit};
use peergrid_core::data::Dataset;

use crate::error::EvalError;

/// One day of the evaluated part (validation or test).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct HeldOutDay {
    /// 1-based number among all days of its part of the dataset.
    pub number: usize,
    /// Its slots in the dataset (a whole day, starting at midnight).
    pub slots: Range<usize>,
    /// Day of week, 0 = Monday … 6 = Sunday.
    pub weekday: u32,
}

impl HeldOutDay {
    pub fn weekday_name(&self) -> &'static str {
        ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
            [self.weekday as usize % 7]
    }
}

/// Every day of `part` of `ds` under `split`, numbered from 1.
pub fn days_of_part(ds: &Dataset, split: &WeekSplit, part: SplitPart) -> Vec<HeldOutDay> {
    let per_day = ds.slots_per_day() as usize;
    let mut days = Vec::new();
    for range in split_weeks(ds, split).ranges(part) {
        for start in range.clone().step_by(per_day) {
            days.push(HeldOutDay {
                number: days.len() + 1,
                slots: start..start + per_day,
                weekday: ds.day_of_week(start),
            });
        }
    }
    days
}

/// The slots of `days`, in order: the schedule every policy plays.
pub fn schedule_of(days: &[HeldOutDay]) -> Vec<usize> {
    days.iter().flat_map(|d| d.slots.clone()).collect()
}

/// Which held-out days to evaluate.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum DaySelection {
    #[default]
    All,
    /// Inclusive, 1-based ranges of held-out day numbers, as written.
    Ranges(Vec<RangeInclusive<usize>>),
}

impl DaySelection {
    /// Parses the syntax of the module docs; `flag` names the input in errors.
    pub fn parse(text: &str, flag: &str) -> Result<DaySelection, EvalError> {
        let text = text.trim();
        if text.eq_ignore_ascii_case("all") {
            return Ok(DaySelection::All);
        }
        if text.is_empty() {
            return Err(EvalError::invalid(
                flag,
                "is empty: give `all`, a day like `3`, or ranges like `1-7,15`",
            ));
        }
        let number = |s: &str, item: &str| -> Result<usize, EvalError> {
            let n: usize = s.trim().parse().map_err(|_| {
                EvalError::invalid(
                    flag,
                    format!("`{item}` is not a day number or range (expected e.g. `3` or `1-7`)"),
                )
            })?;
            if n == 0 {
                return Err(EvalError::invalid(
                    flag,
                    format!("`{item}`: held-out days are numbered from 1"),
                ));
            }
            Ok(n)
        };
        let mut ranges = Vec::new();
        for item in text.split(',') {
            let item = item.trim();
            let range = match item.split_once('-') {
                Some((a, b)) => {
                    let (a, b) = (number(a, item)?, number(b, item)?);
                    if a > b {
                        return Err(EvalError::invalid(
                            flag,
                            format!("range `{item}` is reversed (write `{b}-{a}`)"),
                        ));
                    }
                    a..=b
                }
                None => {
                    let n = number(item, item)?;
                    n..=n
                }
            };
            ranges.push(range);
        }
        Ok(DaySelection::Ranges(ranges))
    }

    /// The first `n` days (what `peergrid run --eval-weeks K` means, `n = 7K`).
    pub fn first(n: usize) -> DaySelection {
        DaySelection::Ranges(vec![1..=n.max(1)])
    }

    /// The selected days of `available` (numbered `1..=available.len()`), in
    /// dataset order. Errors name `flag` and the number of held-out days.
    pub fn select(
        &self,
        available: &[HeldOutDay],
        flag: &str,
    ) -> Result<Vec<HeldOutDay>, EvalError> {
        let n = available.len();
        if n == 0 {
            return Err(EvalError::invalid(
                flag,
                "the dataset has no whole held-out week to select days from",
            ));
        }
        let ranges = match self {
            DaySelection::All => return Ok(available.to_vec()),
            DaySelection::Ranges(r) => r,
        };
        let mut chosen = vec![false; n];
        for r in ranges {
            if *r.end() > n {
                return Err(EvalError::invalid(
                    flag,
                    format!("day {} is beyond the {n} held-out days (1-{n})", r.end()),
                ));
            }
            for d in r.clone() {
                if std::mem::replace(&mut chosen[d - 1], true) {
                    return Err(EvalError::invalid(flag, format!("day {d} is selected twice")));
                }
            }
        }
        Ok(available.iter().filter(|d| chosen[d.number - 1]).cloned().collect())
    }
}

impl fmt::Display for DaySelection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DaySelection::All => f.write_str("all"),
            DaySelection::Ranges(ranges) => {
                let items: Vec<String> = ranges
                    .iter()
                    .map(|r| {
                        if r.start() == r.end() {
                            r.start().to_string()
                        } else {
                            format!("{}-{}", r.start(), r.end())
                        }
                    })
                    .collect();
                f.write_str(&items.join(","))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use peergrid_core::data::synthetic::synthetic_dataset;

    fn days(n: usize) -> Vec<HeldOutDay> {
        (1..=n)
            .map(|number| HeldOutDay { number, slots: number * 24..number * 24 + 24, weekday: 0 })
            .collect()
    }

    #[test]
    fn numbers_every_day_of_the_held_out_weeks() {
        // 10 weeks from Monday 00:00, test every 4th week: weeks 4 and 8;
        // validation every 8th from week 2: weeks 2 and 10.
        let ds = synthetic_dataset(2, 70, 60, 1);
        let split = WeekSplit::default();
        let v = days_of_part(&ds, &split, SplitPart::Validation);
        assert_eq!((v.len(), v[0].slots.start, v[7].slots.start), (14, 168, 9 * 168));
        assert_eq!(v[13].number, 14);
        let d = days_of_part(&ds, &split, SplitPart::Test);
        assert_eq!(d.len(), 14);
        assert_eq!(d[0], HeldOutDay { number: 1, slots: 3 * 168..3 * 168 + 24, weekday: 0 });
        assert_eq!(d[7].slots.start, 7 * 168);
        assert_eq!(d[13].weekday_name(), "Sunday");
        assert_eq!(schedule_of(&d[..2]), (3 * 168..3 * 168 + 48).collect::<Vec<_>>());
    }

    #[test]
    fn parses_and_selects_in_dataset_order() {
        let all = days(30);
        let s = DaySelection::parse(" 22-24, 3 ,10-11", "--days").unwrap();
        assert_eq!(s.to_string(), "22-24,3,10-11");
        let picked: Vec<usize> =
            s.select(&all, "--days").unwrap().iter().map(|d| d.number).collect();
        assert_eq!(picked, vec![3, 10, 11, 22, 23, 24]);
        assert_eq!(
            DaySelection::parse("ALL", "--days").unwrap().select(&all, "--days").unwrap().len(),
            30
        );
        assert_eq!(DaySelection::first(7).select(&all, "--days").unwrap().len(), 7);
    }

    #[test]
    fn bad_selections_name_the_flag_and_the_bound() {
        let all = days(14);
        let err = |text: &str| match DaySelection::parse(text, "--days") {
            Ok(s) => s.select(&all, "--days").unwrap_err().to_string(),
            Err(e) => e.to_string(),
        };
        for (text, needle) in [
            ("", "empty"),
            ("0", "numbered from 1"),
            ("15", "beyond the 14 held-out days (1-14)"),
            ("3-20", "beyond the 14"),
            ("7-3", "reversed (write `3-7`)"),
            ("1-3,2", "day 2 is selected twice"),
            ("x", "`x` is not a day number"),
            ("1,,2", "`` is not a day number"),
            ("-3", "`-3` is not a day number"),
            ("1-2-3", "`1-2-3` is not a day number"),
        ] {
            let e = err(text);
            assert!(e.contains("--days") && e.contains(needle), "{text:?}: {e}");
        }
        let e = DaySelection::All.select(&[], "--days").unwrap_err().to_string();
        assert!(e.contains("no whole held-out week"), "{e}");
    }
}
