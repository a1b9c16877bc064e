//! Tests of the Ausgrid loader: the fixture files under
//! `tests/fixtures/ausgrid/` for the accepted layouts, and inline texts for
//! every rejected case. Kept beside `ausgrid.rs` so that file stays about parsing.

use std::path::PathBuf;

use super::*;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ausgrid").join(name)
}

fn header() -> String {
    let slots: Vec<String> =
        (1..=48).map(|k| k * 30 % 1440).map(|m| format!("{}:{:02}", m / 60, m % 60)).collect();
    format!("Customer,Generator Capacity,Postcode,Consumption Category,date,{}", slots.join(","))
}

/// A data row with every half-hour set to `value`, except `special` at slot `at`.
fn row(customer: u32, category: &str, date: &str, value: &str, at: usize, special: &str) -> String {
    let values: Vec<&str> = (0..48).map(|k| if k == at { special } else { value }).collect();
    format!("{customer},2,2000,{category},{date},{}", values.join(","))
}

/// One complete customer over one day, plus `extra` rows.
fn text_with(extra: &[String]) -> String {
    let mut lines = vec![
        header(),
        row(1, "GC", "1/07/2012", "0.5", 0, "0.5"),
        row(1, "GG", "1/07/2012", "0", 24, "1"),
    ];
    lines.extend_from_slice(extra);
    lines.join("\n") + "\n"
}

fn data_error(text: &str) -> (u64, String, String) {
    match parse_ausgrid(text.as_bytes(), "inline.csv") {
        Err(CoreError::Data { file, line, column, reason }) => {
            assert_eq!(file, "inline.csv");
            (line, column, reason)
        }
        other => panic!("expected a data error, got {other:?}"),
    }
}

#[test]
fn title_line_dmy_dates_and_controlled_load() {
    let ds = load_ausgrid_csv(&fixture("title_dmy_controlled_load.csv")).unwrap();
    assert_eq!((ds.slot_minutes, ds.first_slot_of_day, ds.n_slots()), (30, 0, 96));
    assert_eq!(ds.first_day_of_week, 6, "1 July 2012 was a Sunday");
    assert_eq!(
        ds.homes.iter().map(|h| h.name.as_str()).collect::<Vec<_>>(),
        ["ausgrid-1", "ausgrid-2"]
    );
    let (one, two) = (&ds.homes[0], &ds.homes[1]);
    // load = GC + CL: CL is 0.25 kWh in the first 12 half-hours.
    assert_eq!((one.load_kwh[0], one.load_kwh[12], one.load_kwh[48]), (0.75, 0.5, 0.75));
    assert_eq!(two.load_kwh[0], 0.5);
    // PV per kWp = GG / capacity; column 12:30 ends half-hour 24.
    assert_eq!(one.pv_kwp, 3.78);
    assert!((one.pv_kwh_per_kwp[24] - 0.1).abs() < 1e-6 && one.pv_kwh_per_kwp[23] == 0.0);
    assert!((two.pv_kwh_per_kwp[48 + 25] - 0.2).abs() < 1e-6);
    assert!(ds.carbon_kg_per_kwh.is_empty() && ds.price_per_kwh.is_empty());
}

#[test]
fn no_title_line_and_dd_mon_yy_dates() {
    let ds = load_ausgrid_csv(&fixture("no_title_dd_mon_yy.csv")).unwrap();
    assert_eq!(ds.n_slots(), 96);
    assert_eq!(ds.first_day_of_week, 3, "1 July 2010 was a Thursday");
    assert_eq!(ds.homes[0].pv_kwh_per_kwp[23], 0.5);
    assert_eq!(ds.total_load_kwh() as f32, 96.0 * 0.1);
}

#[test]
fn customer_missing_a_day_is_excluded_and_reported() {
    let file = std::fs::File::open(fixture("iso_missing_day.csv")).unwrap();
    let import = parse_ausgrid_with_report(file, "iso").unwrap();
    let names: Vec<&str> = import.dataset.homes.iter().map(|h| h.name.as_str()).collect();
    assert_eq!(names, ["ausgrid-2", "ausgrid-10"]);
    assert_eq!(import.dataset.n_slots(), 3 * 48);
    assert_eq!(
        import.excluded,
        vec![ExcludedCustomer { customer: "3".into(), reason: "no GC row on 2011-07-02".into() }]
    );
}

#[test]
fn no_complete_customer_is_an_error() {
    // The only customer's GG row is missing on the second day.
    let (line, column, reason) =
        data_error(&text_with(&[row(1, "GC", "2/07/2012", "0.5", 0, "0.5")]));
    assert_eq!((line, column.as_str()), (1, "Customer"), "{reason}");
    assert!(reason.contains("2012-07-01 to 2012-07-02"), "{reason}");
}

#[test]
fn nan_negative_and_empty_values_name_line_and_column() {
    let bad = |special: &str| data_error(&text_with(&[row(1, "CL", "1/07/2012", "0", 5, special)]));
    for special in ["NaN", "-0.1", "", "inf"] {
        let (line, column, reason) = bad(special);
        assert_eq!((line, column.as_str()), (4, "3:00"), "{special}: {reason}");
    }
}

#[test]
fn duplicate_rows_are_errors() {
    let (line, column, reason) =
        data_error(&text_with(&[row(1, "GC", "01-Jul-12", "0.5", 0, "0.5")]));
    assert_eq!((line, column.as_str()), (4, "Consumption Category"));
    assert!(
        reason.contains("duplicate GC row for customer 1 on 2012-07-01 (first on line 2)"),
        "{reason}"
    );
}

#[test]
fn malformed_rows_are_errors() {
    let cases = [
        (row(1, "XX", "1/07/2012", "0", 0, "0"), "Consumption Category"),
        (row(1, "CL", "31/06/2012", "0", 0, "0"), "date"),
        (row(1, "CL", "1/07/2012", "0", 0, "0").replacen(",2,", ",3,", 1), "Generator Capacity"),
        (row(1, "CL", "1/07/2012", "0", 0, "0") + ",extra", "-"),
    ];
    for (bad_row, expected_column) in cases {
        let (line, column, reason) = data_error(&text_with(&[bad_row]));
        assert_eq!((line, column.as_str()), (4, expected_column), "{reason}");
    }
}

#[test]
fn header_problems_are_errors() {
    let missing = text_with(&[]).replace("Consumption Category", "Category");
    assert_eq!(data_error(&missing).1, "Consumption Category");
    let misordered = text_with(&[]).replace("1:00,1:30", "1:30,1:00");
    let (line, column, _) = data_error(&misordered);
    assert_eq!((line, column.as_str()), (1, "1:30"));
    let (line, _, _) = data_error("title\nanother title\n");
    assert_eq!(line, 1);
}

#[test]
fn zero_capacity_is_a_consumer_unless_it_generates() {
    let zero_cap = |gg: &str| {
        [
            header(),
            "5,0,2000,GC,1/07/2012,".to_string() + &["0.1"; 48].join(","),
            format!("5,0,2000,GG,1/07/2012,{}", [gg; 48].join(",")),
        ]
        .join("\n")
    };
    let ds = parse_ausgrid(zero_cap("0").as_bytes(), "z").unwrap();
    assert_eq!((ds.homes[0].pv_kwp, ds.homes[0].total_pv_kwh_per_kwp()), (0.0, 0.0));
    assert!(matches!(
        parse_ausgrid(zero_cap("0.2").as_bytes(), "z"),
        Err(CoreError::Data { line: 3, .. })
    ));
}
