//! Calendar dates as written in the Ausgrid files.
//!
//! Owns the three date spellings of the yearly files and the conversion to
//! and from days since 1970-01-01 (proleptic Gregorian, H. Hinnant's civil
//! algorithms), so the loader can build a gap-free axis without a date
//! crate. Must never guess an ambiguous spelling: anything else is `None`.

const MONTHS: [&str; 12] =
    ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"];

/// Days since 1970-01-01 of `1/07/2012` (d/m/yyyy), `01-Jul-10` (dd-Mon-yy,
/// read as 20yy; four-digit years also accepted) or `2010-07-01`.
pub fn parse_ausgrid_date(text: &str) -> Option<i64> {
    let text = text.trim();
    let (year, month, day) = if let Some((d, rest)) = text.split_once('/') {
        let (m, y) = rest.split_once('/')?;
        (four_digit_year(y)?, number(m)?, number(d)?)
    } else {
        let mut parts = text.split('-');
        let (a, b, c) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        if a.len() == 4 {
            (four_digit_year(a)?, number(b)?, number(c)?)
        } else {
            let month = MONTHS.iter().position(|m| m.eq_ignore_ascii_case(b))? as u32 + 1;
            let year = match c.len() {
                2 => 2000 + number(c)? as i64,
                _ => four_digit_year(c)?,
            };
            (year, month, number(a)?)
        }
    };
    if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
        return None;
    }
    Some(days_from_civil(year, month, day))
}

/// 0 = Monday … 6 = Sunday.
pub(super) fn day_of_week(days: i64) -> u32 {
    // 1970-01-01 was a Thursday (3).
    (days + 3).rem_euclid(7) as u32
}

/// `yyyy-mm-dd`, for messages.
pub(super) fn format_iso(days: i64) -> String {
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}")
}

fn number(text: &str) -> Option<u32> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

fn four_digit_year(text: &str) -> Option<i64> {
    (text.len() == 4).then(|| number(text)).flatten().map(i64::from)
}

fn days_in_month(year: i64, month: u32) -> u32 {
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_spellings_of_one_day_agree() {
        let d = parse_ausgrid_date("1/07/2012").unwrap();
        assert_eq!(Some(d), parse_ausgrid_date("01-Jul-12"));
        assert_eq!(Some(d), parse_ausgrid_date("2012-07-01"));
        assert_eq!(format_iso(d), "2012-07-01");
        // 1 July 2012 was a Sunday.
        assert_eq!(day_of_week(d), 6);
    }

    #[test]
    fn invalid_dates_are_rejected() {
        for bad in [
            "31/06/2012",
            "29/02/2013",
            "1/7/12",
            "01-Foo-10",
            "2010-13-01",
            "",
            "2010-07-01-1",
            "1/07/2012x",
        ] {
            assert_eq!(parse_ausgrid_date(bad), None, "{bad}");
        }
        assert!(parse_ausgrid_date("29/02/2012").is_some());
    }

    #[test]
    fn round_trips_over_decades() {
        for days in (-1000..20_000).step_by(37) {
            let iso = format_iso(days);
            assert_eq!(parse_ausgrid_date(&iso), Some(days), "{iso}");
        }
    }
}
