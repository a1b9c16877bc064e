//! A whole evaluation written to disk: every file is there and tells the same
//! numbers, energy balances for every policy, and the same seed writes the
//! same `kpis.json` bytes.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use peergrid_core::data::split::{SplitPart, WeekSplit};
use peergrid_core::data::synthetic::synthetic_dataset;
use peergrid_core::policy::{ActorCritic, MlpPolicy, MlpSpec, ObsNormaliser};
use peergrid_core::prosumer::{generate_community, CommunityConfig};
use peergrid_core::simulation::SimConfig;
use peergrid_eval::days::{days_of_part, DaySelection};
use peergrid_eval::report::table::KPI_COLUMNS;
use peergrid_eval::{
    evaluate_and_report, EvalScenario, LearningPoint, MpcMode, MpcSettings, OptimumMode, RunInfo,
};

fn scratch_dir(name: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("peergrid-eval-report-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// A 6-household community on 8 synthetic weeks, held-out days 1–2 of week 4.
fn run(out: &Path, seed: u64) -> peergrid_eval::Evaluation {
    run_with(out, seed, MpcSettings::default(), SimConfig::default())
}

fn run_with(out: &Path, seed: u64, mpc: MpcSettings, sim: SimConfig) -> peergrid_eval::Evaluation {
    let ds = Arc::new(synthetic_dataset(4, 56, 60, 3));
    let community = CommunityConfig { n_prosumers: 6, seed, ..CommunityConfig::default() };
    let prosumers = generate_community(&ds, &community).unwrap();
    let selection = DaySelection::parse("1-2", "--days").unwrap();
    let days = selection
        .select(&days_of_part(&ds, &WeekSplit::default(), SplitPart::Test), "--days")
        .unwrap();
    let scenario = EvalScenario { ds: ds.clone(), prosumers, sim: sim.clone(), days };
    let info = RunInfo {
        command: "peergrid eval".into(),
        dataset: ds.name.clone(),
        slot_minutes: ds.slot_minutes,
        seed,
        community,
        sim,
        split: WeekSplit::default(),
        evaluated_on: SplitPart::Test,
        days: selection.to_string(),
        optimum_mode: OptimumMode::Auto,
        mpc,
        checkpoint: None,
        validation: None,
    };
    let spec = MlpSpec::default();
    let mut learned =
        MlpPolicy::new(ActorCritic::random(&spec, seed), ObsNormaliser::identity(spec.obs_dim))
            .unwrap();
    let curve: Vec<LearningPoint> = (1..=5)
        .map(|u| LearningPoint {
            update: u,
            mean_episode_return: -30.0 + 2.0 * u as f64,
            community_cost: 50.0 - u as f64,
        })
        .collect();
    let (evaluation, files) =
        evaluate_and_report(&scenario, &info, Some(&mut learned), &curve, out).unwrap();
    assert_eq!(files.files[0], out.join("report.md"));
    evaluation
}

/// The KPI table of `report.md`: policy → cells.
fn markdown_table(report: &str) -> Vec<(String, Vec<String>)> {
    let lines: Vec<&str> = report
        .lines()
        .skip_while(|l| !l.starts_with("| policy"))
        .take_while(|l| l.starts_with('|'))
        .collect();
    let header: Vec<&str> = lines[0].trim_matches('|').split('|').map(str::trim).collect();
    assert_eq!(header[1..].to_vec(), KPI_COLUMNS.iter().map(|c| c.0).collect::<Vec<_>>());
    lines[2..]
        .iter()
        .map(|l| {
            let cells: Vec<String> =
                l.trim_matches('|').split('|').map(|c| c.trim().to_string()).collect();
            (cells[0].clone(), cells[1..].to_vec())
        })
        .collect()
}

#[test]
fn every_file_tells_the_same_numbers() {
    let out = scratch_dir("consistent");
    let evaluation = run(&out, 11);
    for file in [
        "report.md",
        "kpis.json",
        "kpis.csv",
        "slots.csv",
        "config.json",
        "kpis.png",
        "learning-curve.png",
        "day-grid-only.png",
        "day-rule-based.png",
        "day-learned.png",
        "day-mpc.png",
        "day-optimum.png",
    ] {
        let len = std::fs::metadata(out.join(file)).map(|m| m.len()).unwrap_or(0);
        assert!(len > 100, "{file} missing or empty");
    }
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    for link in [
        "(kpis.png)",
        "(day-optimum.png)",
        "(learning-curve.png)",
        "(kpis.csv)",
        "(kpis.json)",
        "Gap closed:",
        "### MPC baseline",
        "### Forecast error",
        "(day-mpc.png)",
    ] {
        assert!(report.contains(link), "report.md lacks {link}:\n{report}");
    }
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("kpis.json")).unwrap()).unwrap();
    assert_eq!(json["format"], "peergrid-kpis-v2");
    assert_eq!(json["run"]["seed"], 11);
    assert_eq!(json["run"]["evaluated_on"], "test");
    assert_eq!(json["held_out"]["days"], serde_json::json!([1, 2]));
    assert_eq!(json["learning_curve"].as_array().unwrap().len(), 5);
    let policies = json["policies"].as_array().unwrap();
    let names: Vec<&str> = policies.iter().map(|p| p["policy"].as_str().unwrap()).collect();
    assert_eq!(names, ["grid-only", "rule-based", "learned", "mpc", "optimum"]);
    assert_eq!(json["run"]["mpc"]["mode"], "auto");
    assert_eq!(json["mpc"]["solves"], 48);
    assert!(json["mpc_gap_closed_pct"].is_number());
    assert_eq!(json["forecast_errors"]["by_horizon"].as_array().unwrap().len(), 24);

    // report.md's table == kpis.json, rounded as the table rounds.
    let table = markdown_table(&report);
    assert_eq!(table.len(), policies.len());
    let json_key = |header: &str| match header {
        "community cost" => "community_cost",
        "grid import kWh" => "grid_import_kwh",
        "peak import kW" => "peak_import_kw",
        "P2P kWh" => "p2p_kwh",
        "self-sufficiency %" => "self_sufficiency_pct",
        "self-consumption %" => "self_consumption_pct",
        "CO2 kg" => "co2_kg",
        "battery cycles" => "battery_cycles",
        "Gini (savings)" => "gini_savings",
        other => panic!("unexpected column {other}"),
    };
    for ((name, cells), p) in table.iter().zip(policies) {
        assert_eq!(name, p["policy"].as_str().unwrap());
        for (cell, (header, _, digits)) in cells.iter().zip(KPI_COLUMNS.iter()) {
            let value = p["kpis"][json_key(header)].as_f64().unwrap();
            assert_eq!(cell, &format!("{value:.digits$}"), "{name} {header}");
        }
    }

    // kpis.csv == kpis.json at full precision.
    let mut csv = csv::Reader::from_path(out.join("kpis.csv")).unwrap();
    let header = csv.headers().unwrap().clone();
    let rows: Vec<csv::StringRecord> = csv.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), policies.len());
    for (row, p) in rows.iter().zip(policies) {
        assert_eq!(&row[0], p["policy"].as_str().unwrap());
        for (field, cell) in header.iter().zip(row.iter()).skip(1) {
            let from_csv: f64 = cell.parse().unwrap();
            assert_eq!(from_csv, p["kpis"][field].as_f64().unwrap(), "{} {field}", &row[0]);
        }
    }

    // Energy balances in every slot for every policy, the optimum included.
    for r in &evaluation.rows {
        assert_eq!(r.records.len(), 48, "{}", r.policy);
        for rec in &r.records {
            let supply = rec.pv_kwh + rec.battery_discharged_kwh + rec.grid_import_kwh;
            assert!(
                rec.energy_balance_error_kwh().abs() < 1e-6 * supply.max(1.0),
                "{}: {rec:?}",
                r.policy
            );
        }
    }
    let optimum = evaluation.row("optimum").unwrap().kpis.community_cost;
    assert!(evaluation.rows.iter().all(|r| optimum <= r.kpis.community_cost + 1e-6));
    assert!(json["gap_closed_pct"].is_number());
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn without_mpc_kpis_json_says_nothing_about_it() {
    let out = scratch_dir("no-mpc");
    let off = MpcSettings { mode: MpcMode::Off, ..MpcSettings::default() };
    let evaluation = run_with(&out, 11, off, SimConfig::default());
    assert!(evaluation.row("mpc").is_none() && evaluation.mpc_skipped.is_none());
    let text = std::fs::read_to_string(out.join("kpis.json")).unwrap();
    assert!(!text.contains("mpc") && !text.contains("forecast"), "{text}");
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(!report.contains("MPC") && !out.join("day-mpc.png").exists());
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn a_demand_charge_is_in_every_file_and_the_optimum_still_bounds_every_row() {
    let out = scratch_dir("demand-charge");
    let mut sim = SimConfig::default();
    sim.tariff.demand_charge_per_kw = 0.5;
    let evaluation = run_with(&out, 11, MpcSettings::default(), sim);
    let optimum = evaluation.row("optimum").unwrap().kpis.clone();
    assert!(optimum.demand_charge > 0.0);
    for r in &evaluation.rows {
        assert!(r.kpis.demand_charge > 0.0, "{}", r.policy);
        assert!(optimum.community_cost <= r.kpis.community_cost + 1e-6, "{}", r.policy);
    }
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(report.contains("| demand charge |") && report.contains("demand charge 0.5 per kW"));
    let csv = std::fs::read_to_string(out.join("kpis.csv")).unwrap();
    assert!(csv.lines().next().unwrap().ends_with(",demand_charge"), "{csv}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("kpis.json")).unwrap()).unwrap();
    assert_eq!(json["run"]["sim"]["tariff"]["demand_charge_per_kw"], 0.5);
    assert!(json["policies"][0]["kpis"]["demand_charge"].as_f64().unwrap() > 0.0);
    let config = std::fs::read_to_string(out.join("config.json")).unwrap();
    assert!(config.contains("\"demand_charge_per_kw\": 0.5"), "{config}");
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn same_seed_same_kpis_json_bytes() {
    let (a, b, c) = (scratch_dir("seed-a"), scratch_dir("seed-b"), scratch_dir("seed-c"));
    run(&a, 5);
    run(&b, 5);
    run(&c, 6);
    let read = |dir: &Path| std::fs::read(dir.join("kpis.json")).unwrap();
    assert_eq!(read(&a), read(&b));
    assert_ne!(read(&a), read(&c));
    assert_eq!(
        std::fs::read(a.join("kpis.csv")).unwrap(),
        std::fs::read(b.join("kpis.csv")).unwrap()
    );
    for dir in [a, b, c] {
        let _ = std::fs::remove_dir_all(dir);
    }
}
