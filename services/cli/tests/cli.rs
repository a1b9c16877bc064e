//! The `peergrid` binary as a user runs it: real process, real files, exit codes.

use std::path::PathBuf;
use std::process::{Command, Output};

fn peergrid(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_peergrid")).args(args).output().expect("peergrid runs")
}

fn data(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(name).display().to_string()
}

fn scratch_file(name: &str, contents: &str) -> String {
    let dir = std::env::temp_dir().join(format!("peergrid-cli-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path.display().to_string()
}

fn json(out: &Output) -> serde_json::Value {
    assert!(out.status.success(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("stdout is JSON")
}

#[test]
fn market_clear_golden_uniform() {
    let v = json(&peergrid(&["market", "clear", "--orders", &data("golden_book.csv")]));
    assert_eq!(v["mechanism"], "uniform");
    assert_eq!(v["clearing_price"], 0.145);
    assert_eq!(v["matched_kwh"], 5.0);
    let fills: Vec<(String, String, f64)> = v["fills"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["id"].as_str().unwrap().into(), f["side"].as_str().unwrap().into(), f["kwh"].as_f64().unwrap()))
        .collect();
    let expected = [
        ("A1", "sell", 2.0),
        ("A2", "sell", 3.0),
        ("A3", "sell", 0.0),
        ("B1", "buy", 3.0),
        ("B2", "buy", 2.0),
        ("B3", "buy", 0.0),
    ];
    assert_eq!(fills.len(), expected.len());
    for ((id, side, kwh), (eid, eside, ekwh)) in fills.iter().zip(expected) {
        assert_eq!((id.as_str(), side.as_str(), *kwh), (eid, eside, ekwh));
    }
    assert!(v["fills"][2]["price"].is_null());
}

#[test]
fn market_clear_pay_as_bid_trades_at_buyer_limits() {
    let v = json(&peergrid(&["market", "clear", "--orders", &data("golden_book.csv"), "--mechanism", "pay-as-bid"]));
    assert_eq!(v["mechanism"], "pay-as-bid");
    assert!(v["clearing_price"].is_null());
    assert_eq!(v["matched_kwh"], 5.0);
    // B1 buys 3 kWh at its own limit 0.22; B2 2 kWh at 0.15.
    assert_eq!(v["fills"][3]["price"], 0.22);
    assert_eq!(v["fills"][4]["price"], 0.15);
}

#[test]
fn market_clear_rejects_bad_rows_with_line_and_column() {
    let bad = scratch_file("bad.csv", "id,side,kwh,limit_price\nA,sell,1,0.1\nB,buy,-2,0.2\n");
    let out = peergrid(&["market", "clear", "--orders", &bad]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(":3:") && err.contains("column kwh"), "{err}");
    assert!(out.stdout.is_empty(), "nothing is printed for a rejected book");

    let missing = peergrid(&["market", "clear", "--orders", "/nonexistent/book.csv"]);
    assert_eq!(missing.status.code(), Some(2));
    let bad_k = peergrid(&["market", "clear", "--orders", &data("golden_book.csv"), "--k", "1.5"]);
    assert_eq!(bad_k.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad_k.stderr).contains("k"));
}

#[test]
fn run_is_deterministic_and_rule_based_beats_grid_only() {
    let args = ["run", "--dataset", "synthetic", "--prosumers", "40", "--eval-weeks", "1", "--seed", "3", "--json"];
    let a = json(&peergrid(&args));
    let b = json(&peergrid(&args));
    assert_eq!(a, b, "same seed, same KPIs");
    let cost = |v: &serde_json::Value, i: usize| v["policies"][i][1]["community_cost"].as_f64().unwrap();
    assert_eq!(a["policies"][0][0], "grid-only");
    assert_eq!(a["policies"][1][0], "rule-based");
    assert!(cost(&a, 1) < cost(&a, 0));
    let other =
        json(&peergrid(&["run", "--dataset", "synthetic", "--prosumers", "40", "--eval-weeks", "1", "--seed", "4", "--json"]));
    assert_ne!(a, other);
}

#[test]
fn run_on_bundled_data_prints_a_kpi_table() {
    let out = peergrid(&["run", "--prosumers", "12", "--eval-weeks", "1"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("citylearn2022-fontana"), "{stdout}");
    assert!(stdout.contains("| grid-only") && stdout.contains("| rule-based"), "{stdout}");
}

#[test]
fn run_rejects_bad_flags_and_config() {
    let out = peergrid(&["run", "--prosumers", "0"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("community.n_prosumers"));
    let cfg = scratch_file("cfg.json", r#"{"sim": {"tariff": {"feed_in_per_kwh": 9.0}}}"#);
    let out = peergrid(&["run", "--config", &cfg]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("tariff.feed_in_per_kwh"));
    let typo = scratch_file("typo.json", r#"{"comunity": {}}"#);
    let out = peergrid(&["run", "--config", &typo]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("comunity"));
    let out = peergrid(&["run", "--dataset", "ausgrid-csv"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--data-file"));
}

#[test]
fn ctl_https_needs_a_ca_and_a_ca_needs_https() {
    let ctl = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_peergrid"))
            .arg("ctl")
            .args(args)
            .env_remove("PEERGRID_TLS_CA")
            .env_remove("PEERGRID_TLS_DOMAIN")
            .env_remove("PEERGRID_MARKET")
            .output()
            .expect("peergrid runs")
    };
    let out = ctl(&["--market", "https://127.0.0.1:1", "status"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--tls-ca"), "{}", String::from_utf8_lossy(&out.stderr));
    let out = ctl(&["--market", "http://127.0.0.1:1", "--tls-ca", "ca.pem", "status"]);
    assert_eq!(out.status.code(), Some(2));
    let out = ctl(&["--market", "https://127.0.0.1:1", "--tls-ca", "/nonexistent/ca.pem", "status"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/ca.pem"));
    // A readable CA gets as far as connecting (nothing listens on port 1).
    let ca = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/tls/ca.pem");
    let out = ctl(&["--market", "https://127.0.0.1:1", "--tls-ca", ca, "status"]);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("connecting to the market"));
}
