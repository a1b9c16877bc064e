//! The `peergrid` binary as a user runs it: real process, real files, exit codes.

use std::path::{Path, PathBuf};
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
        .map(|f| {
            (
                f["id"].as_str().unwrap().into(),
                f["side"].as_str().unwrap().into(),
                f["kwh"].as_f64().unwrap(),
            )
        })
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
    let v = json(&peergrid(&[
        "market",
        "clear",
        "--orders",
        &data("golden_book.csv"),
        "--mechanism",
        "pay-as-bid",
    ]));
    assert_eq!(v["mechanism"], "pay-as-bid");
    assert!(v["clearing_price"].is_null());
    assert_eq!(v["matched_kwh"], 5.0);
    // B1 buys 3 kWh at its own limit 0.22; B2 2 kWh at 0.15.
    assert_eq!(v["fills"][3]["price"], 0.22);
    assert_eq!(v["fills"][4]["price"], 0.15);
}

/// The compact forms of the same clearing: JSON lines (a summary, then an
/// order per line) and CSV (the fills); a status has no rows to print as CSV.
#[test]
fn market_clear_prints_jsonl_and_csv_and_ctl_refuses_csv_where_there_are_no_rows() {
    let out =
        peergrid(&["market", "clear", "--orders", &data("golden_book.csv"), "--format", "jsonl"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    assert_eq!(lines.len(), 7, "a summary and 6 orders: {lines:?}");
    assert_eq!(
        (
            lines[0]["mechanism"].as_str(),
            lines[0]["clearing_price"].as_f64(),
            lines[0]["orders"].as_u64()
        ),
        (Some("uniform"), Some(0.145), Some(6))
    );
    assert_eq!(
        (lines[1]["id"].as_str(), lines[1]["side"].as_str(), lines[1]["kwh"].as_f64()),
        (Some("A1"), Some("sell"), Some(2.0))
    );
    assert!(lines[3]["price"].is_null(), "A3 is unfilled: {:?}", lines[3]);

    let out =
        peergrid(&["market", "clear", "--orders", &data("golden_book.csv"), "--format", "csv"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let csv = String::from_utf8_lossy(&out.stdout);
    let rows: Vec<&str> = csv.lines().collect();
    assert_eq!(
        rows,
        [
            "id,side,kwh,price",
            "A1,sell,2,0.145",
            "A2,sell,3,0.145",
            "A3,sell,0,",
            "B1,buy,3,0.145",
            "B2,buy,2,0.145",
            "B3,buy,0,"
        ]
    );

    // Refused before dialling (nothing listens on port 1): exit 2, naming the flag.
    let out = peergrid(&["ctl", "--market", "http://127.0.0.1:1", "--format", "csv", "status"]);
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--format csv"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = peergrid(&[
        "ctl",
        "--market",
        "http://127.0.0.1:1",
        "--json",
        "--format",
        "jsonl",
        "status",
    ]);
    assert_eq!(out.status.code(), Some(2), "--json and --format together are refused by clap");
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

/// A fresh, empty directory for one test's report.
fn out_dir(name: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("peergrid-cli-test-{}", std::process::id())).join(name);
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn exit_2_naming(args: &[&str], needles: &[&str]) {
    let out = peergrid(args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
    for n in needles {
        assert!(err.contains(n), "{args:?}: expected {n:?} in {err}");
    }
}

/// `peergrid run ARGS --out <scratch dir> --quiet`, which must succeed; its
/// `kpis.json` without the one field that names the output directory.
fn run_kpis(dir: &str, args: &[&str]) -> serde_json::Value {
    let out = out_dir(dir);
    let o = out.display().to_string();
    let argv: Vec<&str> =
        ["run"].into_iter().chain(args.iter().copied()).chain(["--out", &o, "--quiet"]).collect();
    let done = peergrid(&argv);
    assert!(done.status.success(), "{argv:?}: {}", String::from_utf8_lossy(&done.stderr));
    let text = std::fs::read_to_string(out.join("kpis.json")).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["run"]["checkpoint"]["path"] = serde_json::Value::Null;
    v
}

#[test]
fn run_is_deterministic_and_the_optimum_beats_rule_based() {
    let run = |seed: &str, dir: &str| {
        let args = [
            "--dataset",
            "synthetic",
            "--prosumers",
            "40",
            "--eval-weeks",
            "1",
            "--seed",
            seed,
            "--json",
            "--updates",
            "3",
            "--rollout-slots",
            "24",
        ];
        run_kpis(dir, &args)
    };
    let (a, b) = (run("3", "run-a"), run("3", "run-b"));
    assert_eq!(a, b, "same seed, same KPIs (training included: two nodes, synchronous PPO)");
    let name =
        |v: &serde_json::Value, i: usize| v["policies"][i]["policy"].as_str().unwrap().to_string();
    let cost = |v: &serde_json::Value, i: usize| {
        v["policies"][i]["kpis"]["community_cost"].as_f64().unwrap()
    };
    assert_eq!(
        (name(&a, 0), name(&a, 1), name(&a, 2), name(&a, 3), name(&a, 4)),
        ("grid-only".into(), "rule-based".into(), "learned".into(), "mpc".into(), "optimum".into())
    );
    assert!(cost(&a, 4) < cost(&a, 1) && cost(&a, 1) < cost(&a, 0));
    assert!(cost(&a, 4) <= cost(&a, 2), "the optimum bounds the learned policy too");
    assert!(cost(&a, 4) <= cost(&a, 3) + 1e-6, "and MPC");
    assert_eq!(a["held_out"]["days"].as_array().unwrap().len(), 7);
    assert_ne!(a, run("4", "run-c"));
}

#[test]
fn a_study_runs_every_seed_and_summarises_each_kpi_with_an_interval() {
    let out = out_dir("study");
    let o = out.display().to_string();
    let args = [
        "run",
        "--dataset",
        "synthetic",
        "--prosumers",
        "12",
        "--days",
        "1-2",
        "--optimum",
        "off",
        "--mpc",
        "off",
        "--updates",
        "1",
        "--rollout-slots",
        "24",
        "--seeds",
        "2",
        "--seed",
        "7",
        "--out",
        &o,
        "--quiet",
    ];
    let done = peergrid(&args);
    assert!(done.status.success(), "{}: {}", done.status, String::from_utf8_lossy(&done.stderr));
    let stdout = String::from_utf8_lossy(&done.stdout);
    assert!(stdout.contains("# peergrid study: 2 seeds") && stdout.contains(" ± "), "{stdout}");
    for file in ["study.md", "study.json", "study.csv", "seed-7/kpis.json", "seed-8/report.md"] {
        assert!(out.join(file).is_file(), "{file} missing");
    }
    let study: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("study.json")).unwrap()).unwrap();
    assert_eq!(study["seeds"], serde_json::json!([7, 8]));
    let cost = &study["policies"]["learned"]["community cost"];
    assert_eq!(cost["n"], 2);
    // The summary is of the per-seed reports' own numbers.
    let seed_cost = |seed: u64| {
        let text = std::fs::read_to_string(out.join(format!("seed-{seed}/kpis.json"))).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        v["policies"][2]["kpis"]["community_cost"].as_f64().unwrap()
    };
    let mean = (seed_cost(7) + seed_cost(8)) / 2.0;
    assert!((cost["mean"].as_f64().unwrap() - mean).abs() < 1e-9 * mean.abs());
    assert!(study["learned_minus_rule_based"]["ci95"].as_f64().is_some());
    let csv = std::fs::read_to_string(out.join("study.csv")).unwrap();
    assert_eq!(csv.lines().count(), 1 + 2 * 3, "a row per seed and policy: {csv}");
}

#[test]
fn local_and_grpc_transports_give_the_same_kpis() {
    let run = |transport: &str| {
        let args = [
            "--dataset",
            "synthetic",
            "--prosumers",
            "12",
            "--nodes",
            "2",
            "--days",
            "1-2",
            "--optimum",
            "off",
            "--seed",
            "5",
            "--updates",
            "2",
            "--rollout-slots",
            "24",
            "--transport",
            transport,
        ];
        run_kpis(&format!("transport-{transport}"), &args)
    };
    let (local, grpc) = (run("local"), run("grpc"));
    assert_eq!(local["policies"][2]["policy"], "learned");
    assert_eq!(
        local, grpc,
        "in-process pipes and loopback TCP carry the same bytes: same seed, same KPIs"
    );
}

#[test]
fn log_format_json_writes_json_lines() {
    // RUST_LOG=info: the embedded market logs where it listens, as JSON.
    let out = out_dir("log-json");
    let o = out.display().to_string();
    let done = Command::new(env!("CARGO_BIN_EXE_peergrid"))
        .args([
            "--log-format",
            "json",
            "run",
            "--dataset",
            "synthetic",
            "--prosumers",
            "4",
            "--nodes",
            "1",
        ])
        .args([
            "--days",
            "1",
            "--optimum",
            "off",
            "--out",
            &o,
            "--updates",
            "1",
            "--rollout-slots",
            "24",
            "--quiet",
        ])
        .args(["--transport", "local"])
        .env("RUST_LOG", "info")
        .output()
        .expect("peergrid runs");
    let err = String::from_utf8_lossy(&done.stderr);
    assert!(done.status.success(), "{err}");
    let logs: Vec<serde_json::Value> =
        err.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    assert!(
        logs.iter().any(|l| l["fields"]["message"] == "market-node listening"
            && l["fields"]["url"].as_str().is_some_and(|u| u.starts_with("local://"))),
        "a JSON line from the in-process market: {err}"
    );
    exit_2_naming(&["--log-format", "xml", "run"], &["--log-format"]);
}

#[test]
fn run_on_bundled_data_prints_a_kpi_table_and_writes_a_report() {
    let out = out_dir("bundled");
    let o = out.display().to_string();
    let run = peergrid(&[
        "run",
        "--prosumers",
        "12",
        "--days",
        "1-2",
        "--out",
        &o,
        "--updates",
        "2",
        "--rollout-slots",
        "24",
        "--validate-every",
        "1",
        "--quiet",
    ]);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(stdout.contains("citylearn2022-fontana"), "{stdout}");
    assert!(
        stdout.contains("| grid-only")
            && stdout.contains("| rule-based")
            && stdout.contains("| learned")
            && stdout.contains("| optimum"),
        "{stdout}"
    );
    assert!(stdout.contains(&format!("Report: {}", out.join("report.md").display())), "{stdout}");
    for file in [
        "report.md",
        "kpis.json",
        "kpis.csv",
        "slots.csv",
        "config.json",
        "kpis.png",
        "day-optimum.png",
        "day-learned.png",
        "learning-curve.png",
        "validation-curve.png",
        "checkpoints/latest",
        "checkpoints/best.safetensors",
    ] {
        assert!(out.join(file).is_file(), "{file} missing");
    }
    let files = |dir: &str| {
        std::fs::read_dir(out.join(dir))
            .unwrap()
            .filter(|e| e.as_ref().unwrap().path().is_file())
            .count()
    };
    assert_eq!(files("tensorboard"), 1, "one TensorBoard event file of the trainer");
    assert_eq!(files("tensorboard/validation"), 1, "one of the validation");
    // The initial policy and each update's validated; the kept policy is the report's.
    let kpis: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("kpis.json")).unwrap()).unwrap();
    let v = &kpis["run"]["validation"];
    let updates: Vec<u64> =
        v["points"].as_array().unwrap().iter().map(|p| p["update"].as_u64().unwrap()).collect();
    assert_eq!(updates, [0, 1, 2], "{v}");
    assert_eq!(v["baselines"][1]["policy"], "rule-based");
    let best = &v["best"];
    let lowest = v["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["community_cost"].as_f64().unwrap())
        .fold(f64::INFINITY, f64::min);
    assert_eq!(best["community_cost"].as_f64().unwrap(), lowest);
    assert_eq!(kpis["run"]["checkpoint"]["policy_version"], best["policy_version"]);
    assert!(kpis["run"]["checkpoint"]["path"].as_str().unwrap().ends_with("best.safetensors"));
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(report.contains("### Validation during training"), "{report}");
    // The effective configuration reruns the same scenario.
    let again = out_dir("bundled-again");
    let cfg = out.join("config.json").display().to_string();
    let a = again.display().to_string();
    let rerun =
        peergrid(&["run", "--scenario", &cfg, "--days", "1-2", "--out", &a, "--updates", "0"]);
    assert!(rerun.status.success(), "{}", String::from_utf8_lossy(&rerun.stderr));
    let baselines = |p: &std::path::Path| {
        let text = std::fs::read_to_string(p.join("kpis.csv")).unwrap();
        text.lines().filter(|l| !l.starts_with("learned")).map(str::to_owned).collect::<Vec<_>>()
    };
    assert_eq!(baselines(&out), baselines(&again));
}

#[test]
fn run_rejects_bad_flags_and_config() {
    exit_2_naming(&["run", "--prosumers", "0"], &["community.n_prosumers"]);
    let cfg = scratch_file("cfg.json", r#"{"sim": {"tariff": {"feed_in_per_kwh": 9.0}}}"#);
    exit_2_naming(&["run", "--config", &cfg], &["tariff.feed_in_per_kwh"]);
    let typo = scratch_file("typo.json", r#"{"comunity": {}}"#);
    exit_2_naming(&["run", "--scenario", &typo], &["comunity"]);
    exit_2_naming(&["run", "--dataset", "ausgrid-csv"], &["--data-file"]);
    exit_2_naming(&["run", "--days", "0"], &["--days", "numbered from 1"]);
    exit_2_naming(
        &["run", "--days", "90-95"],
        &["--days", "day 95 is beyond the 91 held-out days (1-91)"],
    );
    exit_2_naming(&["run", "--days", "7-3"], &["--days", "reversed"]);
    exit_2_naming(&["run", "--days", "mon"], &["--days", "`mon` is not a day number"]);
    exit_2_naming(&["run", "--days", "1", "--eval-weeks", "1"], &["--eval-weeks", "--days"]);
    exit_2_naming(
        &["run", "--test-every-nth-week", "0"],
        &["--test-every-nth-week", "0 leaves no test week"],
    );
    exit_2_naming(&["run", "--eval-every-nth-week", "53"], &["--test-every-nth-week", "1..=52"]);
    exit_2_naming(
        &["run", "--validation-every-nth-week", "0"],
        &["--validation-every-nth-week", "no validation week"],
    );
    // Validation candidates 2, 4, 6, … are all test weeks.
    let both_even = ["run", "--test-every-nth-week", "2", "--validation-every-nth-week", "2"];
    exit_2_naming(&both_even, &["--validation-every-nth-week", "no validation week"]);
    exit_2_naming(&["run", "--split", "train"], &["--split", "validation", "test"]);
    exit_2_naming(&["run", "--optimum", "maybe"], &["--optimum"]);
    exit_2_naming(&["run", "--mpc", "maybe"], &["--mpc"]);
    exit_2_naming(
        &["run", "--demand-charge-per-kw", "-1"],
        &["--demand-charge-per-kw", "[0, 1000]", "got -1"],
    );
    exit_2_naming(&["run", "--demand-charge-period", "weekly"], &["--demand-charge-period"]);
    // A remote policy instead of PPO: only remote:URL, one seed, sane timeout.
    exit_2_naming(&["run", "--policy", "rule-based"], &["--policy must be remote:URL"]);
    let remote = ["run", "--policy", "remote:http://127.0.0.1:9"];
    exit_2_naming(&[&remote[..], &["--seeds", "2"]].concat(), &["--seeds 2 with --policy remote"]);
    exit_2_naming(
        &[&remote[..], &["--remote-policy-timeout-ms", "5"]].concat(),
        &["--remote-policy-timeout-ms", "10..=600000", "got 5"],
    );
    exit_2_naming(
        &["run", "--policy", "remote:ftp://policy:1"],
        &["--policy remote:ftp://policy:1"],
    );
    let negative = scratch_file("dc.json", r#"{"sim": {"tariff": {"demand_charge_per_kw": -2}}}"#);
    exit_2_naming(&["run", "--scenario", &negative], &["tariff.demand_charge_per_kw", "[0, 1000]"]);
    exit_2_naming(
        &["run", "--forecast-horizon-hours", "0"],
        &["--forecast-horizon-hours", "1..=168"],
    );
    exit_2_naming(
        &["run", "--forecast-horizon-hours", "200"],
        &["--forecast-horizon-hours", "1..=168", "got 200"],
    );
    exit_2_naming(
        &["run", "--forecast-history-days", "29"],
        &["--forecast-history-days", "1..=28"],
    );
    exit_2_naming(
        &["run", "--forecast-half-life-hours", "0"],
        &["--forecast-half-life-hours", "(0, 1000]"],
    );
    exit_2_naming(&["run", "--out", &cfg], &["--out", "not a directory"]);
    exit_2_naming(&["run", "--nodes", "0"], &["--nodes", "1..=24"]);
    exit_2_naming(&["run", "--validate-every", "1000001"], &["--validate-every", "≤ 1000000"]);
    exit_2_naming(&["run", "--seeds", "0"], &["--seeds", "1..=100"]);
    // A study refuses bad input once, before any seed runs or anything is written.
    let study = out_dir("refused-study");
    let s = study.display().to_string();
    exit_2_naming(&["run", "--seeds", "3", "--nodes", "0", "--out", &s], &["--nodes"]);
    assert!(!study.exists(), "{} was created", study.display());
    exit_2_naming(&["run", "--ppo", "/nonexistent/ppo.json"], &["--ppo /nonexistent/ppo.json"]);
    let ppo_typo = scratch_file("ppo-typo.json", r#"{"learning_rte": 0.001}"#);
    exit_2_naming(&["run", "--ppo", &ppo_typo], &["--ppo", "learning_rte"]);
    let ppo_bad = scratch_file("ppo-bad.json", r#"{"gamma": 1.5}"#);
    exit_2_naming(&["run", "--ppo", &ppo_bad], &["--ppo", "ppo.gamma"]);
    exit_2_naming(&["run", "--learning-rate", "0"], &["ppo.learning_rate"]);
    // Refused training input leaves no report directory behind.
    let out = out_dir("refused-ppo");
    exit_2_naming(&["run", "--ppo", &ppo_bad, "--out", &out.display().to_string()], &["ppo.gamma"]);
    assert!(!out.exists(), "{} was created", out.display());
}

/// A checkpoint with random weights, as the trainer would write it.
fn checkpoint(name: &str, seed: u64, version: u64) -> String {
    use peergrid_core::policy::weights::{to_safetensors, PolicyWeights};
    use peergrid_core::policy::{ActorCritic, MlpSpec, ObsNormaliser};
    let spec = MlpSpec::default();
    let weights = PolicyWeights {
        net: ActorCritic::random(&spec, seed),
        normaliser: ObsNormaliser::identity(spec.obs_dim),
        version,
    };
    let dir = out_dir(&format!("checkpoint-{name}"));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, to_safetensors(&weights).unwrap()).unwrap();
    path.display().to_string()
}

fn eval(ck: &str, out: &Path, extra: &[&str]) -> Output {
    let o = out.display().to_string();
    let mut args = vec![
        "eval",
        "--checkpoint",
        ck,
        "--dataset",
        "synthetic",
        "--prosumers",
        "8",
        "--days",
        "1-2",
        "--seed",
        "3",
    ];
    args.extend(["--out", &o]);
    args.extend(extra);
    peergrid(&args)
}

/// The KPI table of a report: header cells, then one row of cells per policy.
fn markdown_table(report: &str) -> Vec<Vec<String>> {
    report
        .lines()
        .skip_while(|l| !l.starts_with("| policy"))
        .take_while(|l| l.starts_with('|'))
        .filter(|l| !l.starts_with("| ---"))
        .map(|l| l.trim_matches('|').split('|').map(|c| c.trim().to_string()).collect())
        .collect()
}

#[test]
fn eval_writes_every_file_with_the_same_numbers() {
    let ck = checkpoint("eval.safetensors", 5, 42);
    let out = out_dir("eval");
    let run = eval(&ck, &out, &[]);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(stdout.contains("| learned") && stdout.contains("Gap closed"), "{stdout}");
    let files = ["report.md", "kpis.json", "kpis.csv", "slots.csv", "config.json", "kpis.png"];
    let days = [
        "day-grid-only.png",
        "day-rule-based.png",
        "day-learned.png",
        "day-mpc.png",
        "day-optimum.png",
    ];
    for file in files.iter().chain(&days) {
        assert!(
            std::fs::metadata(out.join(file)).map(|m| m.len() > 100).unwrap_or(false),
            "{file} missing or empty"
        );
    }
    assert!(!out.join("learning-curve.png").exists(), "no training, no learning curve");
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(report.contains(&format!("`{ck}` (policy version 42)")), "{report}");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("kpis.json")).unwrap()).unwrap();
    assert_eq!(v["run"]["checkpoint"]["policy_version"], 42);
    let policies = v["policies"].as_array().unwrap();

    // report.md == kpis.json (as the table rounds) == kpis.csv (full precision).
    let table = markdown_table(&report);
    let columns = [
        ("community_cost", 2),
        ("grid_import_kwh", 1),
        ("peak_import_kw", 1),
        ("p2p_kwh", 1),
        ("self_sufficiency_pct", 1),
        ("self_consumption_pct", 1),
        ("co2_kg", 1),
        ("battery_cycles", 2),
        ("gini_savings", 3),
    ];
    assert_eq!(table.len(), 1 + policies.len());
    let mut csv = csv::Reader::from_path(out.join("kpis.csv")).unwrap();
    let header = csv.headers().unwrap().clone();
    let rows: Vec<csv::StringRecord> = csv.records().map(Result::unwrap).collect();
    for ((cells, p), row) in table[1..].iter().zip(policies).zip(&rows) {
        let name = p["policy"].as_str().unwrap();
        assert_eq!((cells[0].as_str(), &row[0]), (name, name));
        for (cell, (key, digits)) in cells[1..].iter().zip(columns) {
            assert_eq!(
                cell,
                &format!("{:.*}", digits, p["kpis"][key].as_f64().unwrap()),
                "{name} {key}"
            );
        }
        for (field, value) in header.iter().zip(row.iter()).skip(1) {
            assert_eq!(
                value.parse::<f64>().unwrap(),
                p["kpis"][field].as_f64().unwrap(),
                "{name} {field}"
            );
        }
    }
    assert_eq!(
        table[1..].iter().map(|r| r[0].as_str()).collect::<Vec<_>>(),
        ["grid-only", "rule-based", "learned", "mpc", "optimum"]
    );

    // Energy balances in every slot of every policy.
    let mut slots = csv::Reader::from_path(out.join("slots.csv")).unwrap();
    let h = slots.headers().unwrap().clone();
    let col = |name: &str| h.iter().position(|c| c == name).unwrap();
    let mut per_policy = std::collections::BTreeMap::new();
    for r in slots.records().map(Result::unwrap) {
        let x = |name: &str| r[col(name)].parse::<f64>().unwrap();
        let supply = x("pv_kwh") + x("battery_discharged_kwh") + x("grid_import_kwh");
        let demand =
            x("load_kwh") + x("battery_charged_kwh") + x("grid_export_kwh") + x("p2p_losses_kwh");
        assert!((supply - demand).abs() < 1e-6 * supply.max(1.0), "{r:?}");
        *per_policy.entry(r[0].to_string()).or_insert(0) += 1;
    }
    assert_eq!(per_policy.len(), 5);
    assert!(per_policy.values().all(|n| *n == 48), "{per_policy:?}");
}

#[test]
fn eval_names_the_split_it_evaluated() {
    let ck = checkpoint("split.safetensors", 5, 1);
    let report = |split: &str| {
        let out = out_dir(&format!("split-{split}"));
        let run = eval(&ck, &out, &["--split", split]);
        assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
        let md = std::fs::read_to_string(out.join("report.md")).unwrap();
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("kpis.json")).unwrap()).unwrap();
        (md, v)
    };
    let (test_md, test) = report("test");
    let (val_md, val) = report("validation");
    assert!(
        test_md.contains("**test split**") && test_md.contains("## KPIs (test split)"),
        "{test_md}"
    );
    assert!(
        val_md.contains("**validation split**") && val_md.contains("## KPIs (validation split)"),
        "{val_md}"
    );
    assert!(
        val_md.contains("validation weeks are weeks 2, 10, 18, … (every 8th week)"),
        "{val_md}"
    );
    assert_eq!(
        (test["run"]["evaluated_on"].as_str(), val["run"]["evaluated_on"].as_str()),
        (Some("test"), Some("validation"))
    );
    assert_eq!(
        val["run"]["split"],
        serde_json::json!({"test_every_nth_week": 4, "validation_every_nth_week": 8})
    );
    // Days 1-2 of each part are different calendar days: different loads, different costs.
    let cost = |v: &serde_json::Value| v["policies"][0]["kpis"]["load_kwh"].as_f64().unwrap();
    assert_ne!(cost(&test), cost(&val));
}

#[test]
fn eval_same_seed_same_kpis_json_bytes() {
    let ck = checkpoint("seed.safetensors", 6, 1);
    let (a, b) = (out_dir("seed-a"), out_dir("seed-b"));
    for dir in [&a, &b] {
        let run = eval(&ck, dir, &["--json"]);
        assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
        assert_eq!(
            run.stdout,
            std::fs::read(dir.join("kpis.json")).unwrap(),
            "--json prints kpis.json"
        );
    }
    assert_eq!(
        std::fs::read(a.join("kpis.json")).unwrap(),
        std::fs::read(b.join("kpis.json")).unwrap()
    );
}

#[test]
fn eval_rejects_bad_checkpoints_and_days() {
    let out = out_dir("eval-bad").display().to_string();
    exit_2_naming(
        &["eval", "--checkpoint", "/nonexistent/policy.safetensors", "--out", &out],
        &["--checkpoint", "/nonexistent/policy.safetensors"],
    );
    let junk = scratch_file("junk.safetensors", "not weights");
    exit_2_naming(
        &["eval", "--checkpoint", &junk, "--out", &out],
        &["--checkpoint", "safetensors"],
    );
    let ck = checkpoint("days.safetensors", 7, 1);
    exit_2_naming(
        &["eval", "--checkpoint", &ck, "--days", "1-2,2", "--out", &out],
        &["--days", "day 2 is selected twice"],
    );
    let out = peergrid(&["eval"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--checkpoint"));
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
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--tls-ca"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = ctl(&["--market", "http://127.0.0.1:1", "--tls-ca", "ca.pem", "status"]);
    assert_eq!(out.status.code(), Some(2));
    let out =
        ctl(&["--market", "https://127.0.0.1:1", "--tls-ca", "/nonexistent/ca.pem", "status"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/ca.pem"));
    // A readable CA gets as far as connecting (nothing listens on port 1).
    let ca = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/tls/ca.pem");
    let out = ctl(&["--market", "https://127.0.0.1:1", "--tls-ca", ca, "status"]);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("connecting to the market"));
}

/// The shared libraries a binary needs, as `ldd` lists them.
fn needed_libraries(binary: &str) -> String {
    let out = Command::new("ldd").arg(binary).output().expect("ldd (Debian's libc-bin) runs");
    assert!(out.status.success(), "ldd {binary}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn operator_commands_do_not_load_libtorch_and_run_hands_over_to_the_binary_that_does() {
    let operator = needed_libraries(env!("CARGO_BIN_EXE_peergrid"));
    assert!(!operator.contains("torch"), "`peergrid` must start without libtorch:\n{operator}");
    let run = needed_libraries(env!("CARGO_BIN_EXE_peergrid-run"));
    assert!(run.contains("libtorch"), "`peergrid-run` trains, so it links libtorch:\n{run}");
    let help = peergrid(&["run", "--help"]);
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(help.status.success(), "{}", String::from_utf8_lossy(&help.stderr));
    assert!(
        text.contains("Usage: peergrid run") && text.contains("--updates"),
        "run's own help: {text}"
    );
}

#[test]
fn a_closed_stdout_ends_a_command_quietly() {
    use std::process::Stdio;
    // Enough output that the pipe's reader is gone long before the last line.
    let book: String = std::iter::once("id,side,kwh,limit_price\n".to_owned())
        .chain((0..20_000).map(|i| {
            format!("O{i},{},1,0.{}\n", if i % 2 == 0 { "buy" } else { "sell" }, 10 + i % 7)
        }))
        .collect();
    let orders = scratch_file("big_book.csv", &book);
    let mut child = Command::new(env!("CARGO_BIN_EXE_peergrid"))
        .args(["market", "clear", "--orders", &orders])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("peergrid runs");
    drop(child.stdout.take());
    let out = child.wait_with_output().expect("peergrid ends");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked") && !err.contains("Broken pipe"), "a quiet end, got: {err}");
}
