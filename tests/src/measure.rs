//! What the compose test measures, as plain values: the market's status as
//! `peergrid ctl status --json` prints it, the missing-report ledger over
//! status samples, and the trainer's figures from its Prometheus text
//! exposition. No Docker here: these are parsed and computed, and tested
//! on literal input.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;

use anyhow::{ensure, Context, Result};

/// The market's status as `peergrid ctl status --json` prints it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MarketStatus {
    /// The next slot to open.
    pub slot: u64,
    /// Connected prosumers and nodes.
    pub prosumers: u64,
    pub nodes: u64,
    pub missing_reports: u64,
    pub absent_prosumers: u64,
    pub leases_expired: u64,
    pub holds: u64,
    pub holds_expired: u64,
    pub energy_error_kwh: f64,
    pub money_error: f64,
}

impl MarketStatus {
    pub fn parse(v: &serde_json::Value) -> Result<MarketStatus> {
        let int =
            |k: &str| v[k].as_u64().with_context(|| format!("status has no integer '{k}': {v}"));
        let float =
            |k: &str| v[k].as_f64().with_context(|| format!("status has no number '{k}': {v}"));
        Ok(MarketStatus {
            slot: int("slot")?,
            prosumers: int("prosumers")?,
            nodes: int("nodes")?,
            missing_reports: int("missing_reports")?,
            absent_prosumers: int("absent_prosumers")?,
            leases_expired: int("leases_expired")?,
            holds: int("holds")?,
            holds_expired: int("holds_expired")?,
            energy_error_kwh: float("energy_balance_error_kwh")?,
            money_error: float("money_balance_error")?,
        })
    }

    /// Fails when either balance error exceeds `tolerance`.
    pub fn balanced(&self, tolerance: f64) -> Result<()> {
        ensure!(
            self.energy_error_kwh.abs() <= tolerance && self.money_error.abs() <= tolerance,
            "balance errors beyond {tolerance}: energy {} kWh, money {}",
            self.energy_error_kwh,
            self.money_error
        );
        Ok(())
    }
}

/// Missing reports and prosumer-slots over consecutive status samples of
/// one market run, leaving out the steps that start inside `excluded`
/// (sample indices). A step counts `Δslot × min(prosumers)` of its two
/// ends: a lower bound on the prosumer-slots of connected nodes, so the
/// share is never flattered by a node that came or went in between.
pub fn missing_outside(samples: &[MarketStatus], excluded: Range<usize>) -> Result<(u64, u64)> {
    let (mut missing, mut prosumer_slots) = (0, 0);
    for (i, pair) in samples.windows(2).enumerate() {
        let (a, b) = (&pair[0], &pair[1]);
        ensure!(
            b.slot >= a.slot && b.missing_reports >= a.missing_reports,
            "the market restarted between samples {a:?} and {b:?}"
        );
        if excluded.contains(&i) {
            continue;
        }
        missing += b.missing_reports - a.missing_reports;
        prosumer_slots += (b.slot - a.slot) * a.prosumers.min(b.prosumers);
    }
    Ok((missing, prosumer_slots))
}

/// The samples of metric `name` in a Prometheus text exposition: each
/// sample's labels (in the order written) and value. Label values must not
/// contain `"` or `,` (true of peergrid's labels).
pub fn prometheus_samples(text: &str, name: &str) -> Vec<(Vec<(String, String)>, f64)> {
    let mut found = Vec::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some(rest) = line.strip_prefix(name) else { continue };
        let (labels, value) = match rest.strip_prefix('{') {
            Some(r) => match r.split_once('}') {
                Some((labels, value)) => (labels, value),
                None => continue,
            },
            // `name value`, not a longer name that starts with `name`.
            None if rest.starts_with(' ') => ("", rest),
            None => continue,
        };
        let Ok(value) = value.trim().parse::<f64>() else { continue };
        let labels = labels
            .split(',')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.trim().to_owned(), v.trim().trim_matches('"').to_owned()))
            .collect();
        found.push((labels, value));
    }
    found
}

/// The trainer's figures from its `/metrics` (in-memory: a restarted
/// trainer counts from zero).
#[derive(Clone, Debug, Default)]
pub struct TrainerFigures {
    pub version: u64,
    pub stale_batches: u64,
    /// `trainer_rollouts_total` by (node, outcome).
    pub rollouts: BTreeMap<(String, String), u64>,
}

impl TrainerFigures {
    pub fn parse(text: &str) -> Result<TrainerFigures> {
        let one = |name: &str| -> Result<u64> {
            let s = prometheus_samples(text, name);
            ensure!(
                s.len() == 1,
                "expected one sample of {name} in the trainer's metrics, found {}",
                s.len()
            );
            Ok(s[0].1 as u64)
        };
        let mut rollouts = BTreeMap::new();
        for (labels, value) in prometheus_samples(text, "peergrid_trainer_rollouts_total") {
            let label = |k: &str| {
                labels.iter().find(|(l, _)| l == k).map(|(_, v)| v.clone()).unwrap_or_default()
            };
            rollouts.insert((label("node"), label("outcome")), value as u64);
        }
        Ok(TrainerFigures {
            version: one("peergrid_trainer_policy_version")?,
            stale_batches: one("peergrid_trainer_stale_batches_total")?,
            rollouts,
        })
    }

    /// Rollouts of `node` with `outcome` ("accepted", "stale").
    pub fn count(&self, node: &str, outcome: &str) -> u64 {
        self.rollouts.get(&(node.to_owned(), outcome.to_owned())).copied().unwrap_or(0)
    }

    /// Every node that sent a rollout.
    pub fn nodes(&self) -> BTreeSet<String> {
        self.rollouts.keys().map(|(n, _)| n.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_missing_report_ledger_leaves_out_the_window_and_counts_the_lower_prosumer_bound() {
        let s = |slot, prosumers, missing_reports| MarketStatus {
            slot,
            prosumers,
            missing_reports,
            ..MarketStatus::default()
        };
        // 0..100 at 60 prosumers, 100..200 scaling to 100 (counted at 60),
        // 200..300 at 100; a kill window 300..400 with 50 missing, then 400..500 at 80.
        let samples = [
            s(0, 60, 0),
            s(100, 60, 1),
            s(200, 100, 1),
            s(300, 100, 3),
            s(400, 80, 53),
            s(500, 80, 54),
        ];
        assert_eq!(missing_outside(&samples, 3..4).unwrap(), (4, 6_000 + 6_000 + 10_000 + 8_000));
        assert_eq!(
            missing_outside(&samples, 0..0).unwrap(),
            (54, 6_000 + 6_000 + 10_000 + 8_000 + 8_000)
        );
        // A restarted market (slots going back) cannot be accounted across.
        let restarted = [s(0, 60, 0), s(500, 60, 2), s(10, 60, 0)];
        assert!(missing_outside(&restarted, 0..0).unwrap_err().to_string().contains("restarted"));
    }

    #[test]
    fn market_status_parses_ctl_json_and_checks_balances() {
        let v = serde_json::json!({
            "slot": 12, "prosumers": 80, "nodes": 4, "missing_reports": 1, "absent_prosumers": 20,
            "leases_expired": 0, "holds": 3, "holds_expired": 0,
            "energy_balance_error_kwh": 0.0, "money_balance_error": 2e-9,
        });
        let s = MarketStatus::parse(&v).unwrap();
        assert_eq!((s.slot, s.prosumers, s.nodes, s.absent_prosumers, s.holds), (12, 80, 4, 20, 3));
        s.balanced(1e-8).unwrap();
        assert!(s.balanced(1e-9).is_err());
        let e = MarketStatus::parse(&serde_json::json!({"slot": 1})).unwrap_err();
        assert!(e.to_string().contains("'prosumers'"), "{e}");
    }

    #[test]
    fn prometheus_samples_reads_labels_and_values() {
        let text = "# HELP peergrid_trainer_rollouts Rollouts\n\
                    # TYPE peergrid_trainer_rollouts counter\n\
                    peergrid_trainer_rollouts_total{node=\"a1\",outcome=\"accepted\"} 7\n\
                    peergrid_trainer_rollouts_total{node=\"b2\",outcome=\"stale\"} 1\n\
                    peergrid_trainer_rollouts_total_other 3\n\
                    peergrid_trainer_stale_batches_total 1\n";
        let rollouts = prometheus_samples(text, "peergrid_trainer_rollouts_total");
        let pairs = |l: &[(&str, &str)]| {
            l.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<Vec<_>>()
        };
        assert_eq!(
            rollouts,
            vec![
                (pairs(&[("node", "a1"), ("outcome", "accepted")]), 7.0),
                (pairs(&[("node", "b2"), ("outcome", "stale")]), 1.0)
            ]
        );
        assert_eq!(
            prometheus_samples(text, "peergrid_trainer_stale_batches_total"),
            vec![(vec![], 1.0)]
        );
        assert!(prometheus_samples(text, "peergrid_market_slots").is_empty());
    }

    #[test]
    fn trainer_figures_parse_into_versions_and_rollouts_by_node() {
        let text = "peergrid_trainer_policy_version 7\n\
                    peergrid_trainer_stale_batches_total 2\n\
                    peergrid_trainer_rollouts_total{node=\"a\",outcome=\"accepted\"} 6\n\
                    peergrid_trainer_rollouts_total{node=\"b\",outcome=\"stale\"} 2\n";
        let t = TrainerFigures::parse(text).unwrap();
        assert_eq!(
            (
                t.version,
                t.stale_batches,
                t.count("a", "accepted"),
                t.count("b", "stale"),
                t.count("b", "accepted")
            ),
            (7, 2, 6, 2, 0)
        );
        assert_eq!(t.nodes(), BTreeSet::from(["a".to_owned(), "b".to_owned()]));
        assert!(TrainerFigures::parse("peergrid_trainer_stale_batches_total 2\n").is_err());
    }
}
