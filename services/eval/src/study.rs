//! Several seeds of one run, summarised: every KPI of every policy as the
//! mean over seeds ± the half-width of its 95 % confidence interval
//! (Student's t with n − 1 degrees of freedom: the seeds are few), the
//! learned policy's paired difference to rule-based (per seed, so the
//! community's own spread cancels), the share of the rule-based → optimum
//! gap it closes, and the per-seed table.
//!
//! A seed here seeds everything a run draws: the community, the PPO
//! initialisation and sampling. The study writes `study.md`, `study.json`
//! and `study.csv` beside one report directory per seed.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::{Path, PathBuf};

use peergrid_core::kpi::Kpis;
use serde::{Deserialize, Serialize};

use crate::compare::{LEARNED, OPTIMUM, RULE_BASED};
use crate::error::EvalError;
use crate::report::table::{render, KPI_COLUMNS};

/// The format tag of `study.json`.
pub const STUDY_FORMAT: &str = "peergrid-study-v1";

/// The 0.975 quantile of Student's t with `df` degrees of freedom
/// (two-sided 95 %); `None` for `df` = 0.
pub fn t_975(df: usize) -> Option<f64> {
    // df 1..=30, then 40, 60, 120, ∞ (standard tables).
    const TABLE: [f64; 30] = [
        12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
        2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
        2.052, 2.048, 2.045, 2.042,
    ];
    match df {
        0 => None,
        1..=30 => Some(TABLE[df - 1]),
        31..=40 => Some(2.021),
        41..=60 => Some(2.000),
        61..=120 => Some(1.980),
        _ => Some(1.960),
    }
}

/// Mean and 95 % confidence half-width of a sample.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Estimate {
    pub mean: f64,
    /// Half-width of the 95 % interval; `None` with a single value.
    pub ci95: Option<f64>,
    pub n: usize,
}

impl Estimate {
    /// The estimate of `values` (at least one, all finite).
    pub fn of(values: &[f64]) -> Result<Estimate, EvalError> {
        if values.is_empty() || values.iter().any(|v| !v.is_finite()) {
            return Err(EvalError::invalid("study", "needs at least one finite value per KPI"));
        }
        let n = values.len();
        let mean = values.iter().sum::<f64>() / n as f64;
        let ci95 = t_975(n - 1).map(|t| {
            let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
            t * (var / n as f64).sqrt()
        });
        Ok(Estimate { mean, ci95, n })
    }

    /// Whether the interval lies wholly below zero.
    pub fn below_zero(&self) -> bool {
        self.ci95.is_some_and(|h| self.mean + h < 0.0)
    }

    fn show(&self, digits: usize) -> String {
        match self.ci95 {
            Some(h) => format!("{:.*} ± {:.*}", digits, self.mean, digits, h),
            None => format!("{:.*}", digits, self.mean),
        }
    }
}

/// One seed's run: its seed, its report directory, its evaluation's KPIs.
#[derive(Clone, Debug, Serialize)]
pub struct SeedRun {
    pub seed: u64,
    pub report: PathBuf,
    /// `(policy, KPIs)` in the evaluation's row order.
    pub rows: Vec<(String, Kpis)>,
}

impl SeedRun {
    /// The rows of the `kpis.json` a run wrote into `report`.
    pub fn from_report(seed: u64, report: &Path) -> Result<SeedRun, EvalError> {
        let path = report.join("kpis.json");
        let text = std::fs::read_to_string(&path).map_err(|e| EvalError::io(&path, e))?;
        let bad = |why: String| EvalError::invalid(path.display().to_string(), why);
        let doc: serde_json::Value = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
        let rows = doc["policies"]
            .as_array()
            .ok_or_else(|| bad("has no `policies` list".into()))?
            .iter()
            .map(|row| {
                let policy =
                    row["policy"].as_str().ok_or_else(|| bad("a policy without a name".into()))?;
                let kpis =
                    Kpis::deserialize(&row["kpis"]).map_err(|e| bad(format!("{policy}: {e}")))?;
                Ok((policy.to_owned(), kpis))
            })
            .collect::<Result<_, EvalError>>()?;
        Ok(SeedRun { seed, report: report.to_path_buf(), rows })
    }

    fn kpis(&self, policy: &str) -> Option<&Kpis> {
        self.rows.iter().find(|(p, _)| p == policy).map(|(_, k)| k)
    }
}

/// The summary of a study.
#[derive(Clone, Debug, Serialize)]
pub struct Study {
    pub format: &'static str,
    /// The command line that reproduces it (no output path).
    pub command: String,
    pub seeds: Vec<u64>,
    /// Policy → KPI column → estimate over the seeds (policies a seed lacks,
    /// such as a skipped optimum, over the seeds that have them).
    pub policies: BTreeMap<String, BTreeMap<&'static str, Estimate>>,
    /// Learned − rule-based community cost, per seed then estimated.
    pub learned_minus_rule_based: Option<Estimate>,
    /// Share of the rule-based → optimum gap the learned policy closes, %.
    pub gap_closed_pct: Option<Estimate>,
    pub runs: Vec<SeedRun>,
    /// The policies in the order the runs list them.
    #[serde(skip)]
    order: Vec<String>,
}

impl Study {
    /// Summarises `runs` (at least one).
    pub fn of(command: String, runs: Vec<SeedRun>) -> Result<Study, EvalError> {
        let first = runs.first().ok_or_else(|| EvalError::invalid("study", "has no run"))?;
        let order: Vec<String> = first.rows.iter().map(|(p, _)| p.clone()).collect();
        let mut policies = BTreeMap::new();
        for policy in &order {
            let mut columns = BTreeMap::new();
            for (name, get, _) in KPI_COLUMNS {
                let values: Vec<f64> =
                    runs.iter().filter_map(|r| r.kpis(policy)).map(get).collect();
                columns.insert(name, Estimate::of(&values)?);
            }
            policies.insert(policy.clone(), columns);
        }
        let cost = |r: &SeedRun, p: &str| r.kpis(p).map(|k| k.community_cost);
        let diffs: Vec<f64> =
            runs.iter().filter_map(|r| Some(cost(r, LEARNED)? - cost(r, RULE_BASED)?)).collect();
        let gaps: Vec<f64> = runs
            .iter()
            .filter_map(|r| {
                let (rule, learned, opt) =
                    (cost(r, RULE_BASED)?, cost(r, LEARNED)?, cost(r, OPTIMUM)?);
                let gap = rule - opt;
                (gap > 1e-9 * rule.abs().max(1.0)).then(|| 100.0 * (rule - learned) / gap)
            })
            .collect();
        let estimate = |v: &[f64]| if v.is_empty() { Ok(None) } else { Estimate::of(v).map(Some) };
        Ok(Study {
            format: STUDY_FORMAT,
            command,
            seeds: runs.iter().map(|r| r.seed).collect(),
            policies,
            learned_minus_rule_based: estimate(&diffs)?,
            gap_closed_pct: estimate(&gaps)?,
            runs,
            order,
        })
    }

    /// The Markdown summary: the mean ± CI table, the paired comparison,
    /// the per-seed community costs.
    pub fn markdown(&self) -> String {
        let mut md = String::new();
        let n = self.seeds.len();
        let _ = writeln!(
            md,
            "# peergrid study: {n} seeds\n\n`{}`\n\nEvery KPI as the mean over the seeds ± the \
             half-width of its 95 % confidence interval (Student's t, {} degrees of freedom).\n",
            self.command,
            n.saturating_sub(1)
        );
        let mut header = vec!["policy".to_string()];
        header.extend(KPI_COLUMNS.iter().map(|(name, _, _)| name.to_string()));
        let body: Vec<Vec<String>> = self
            .order
            .iter()
            .map(|p| {
                let mut row = vec![p.clone()];
                row.extend(KPI_COLUMNS.iter().map(|(name, _, digits)| {
                    self.policies[p].get(name).map_or(String::new(), |e| e.show(*digits))
                }));
                row
            })
            .collect();
        md.push_str(&render(&header, &body));
        md.push('\n');
        if let Some(d) = self.learned_minus_rule_based {
            let verdict = if d.below_zero() {
                "the learned policy is cheaper than rule-based: the interval excludes zero"
            } else {
                "the interval does not exclude zero: no significant difference from rule-based"
            };
            let _ = writeln!(
                md,
                "\nLearned − rule-based community cost (paired by seed): {} — {verdict}.",
                d.show(2)
            );
        }
        if let Some(g) = self.gap_closed_pct {
            let _ = writeln!(
                md,
                "\nRule-based → optimum gap closed by the learned policy: {} %.",
                g.show(1)
            );
        }
        let _ = writeln!(md, "\n## Community cost per seed\n");
        let mut header = vec!["seed".to_string()];
        header.extend(self.order.iter().cloned());
        header.push("report".into());
        let body: Vec<Vec<String>> = self
            .runs
            .iter()
            .map(|r| {
                let mut row = vec![r.seed.to_string()];
                row.extend(self.order.iter().map(|p| {
                    r.kpis(p).map_or("—".into(), |k| format!("{:.2}", k.community_cost))
                }));
                row.push(r.report.display().to_string());
                row
            })
            .collect();
        md.push_str(&render(&header, &body));
        md
    }

    /// One row per seed and policy, every KPI at full precision.
    pub fn csv(&self) -> Result<String, EvalError> {
        let err = |e: csv::Error| EvalError::invalid("study.csv", e.to_string());
        let mut w = csv::Writer::from_writer(Vec::new());
        let mut header = vec!["seed", "policy"];
        header.extend(KPI_COLUMNS.iter().map(|(name, _, _)| *name));
        w.write_record(&header).map_err(err)?;
        for r in &self.runs {
            for (policy, k) in &r.rows {
                let mut row = vec![r.seed.to_string(), policy.clone()];
                row.extend(KPI_COLUMNS.iter().map(|(_, get, _)| get(k).to_string()));
                w.write_record(&row).map_err(err)?;
            }
        }
        let bytes = w.into_inner().map_err(|e| EvalError::invalid("study.csv", e.to_string()))?;
        String::from_utf8(bytes).map_err(|e| EvalError::invalid("study.csv", e.to_string()))
    }

    /// Writes `study.md`, `study.json` and `study.csv` into `dir`.
    pub fn write(&self, dir: &Path) -> Result<Vec<PathBuf>, EvalError> {
        std::fs::create_dir_all(dir).map_err(|e| EvalError::io(dir, e))?;
        let json = serde_json::to_string_pretty(self)
            .map_err(|e| EvalError::invalid("study.json", e.to_string()))?
            + "\n";
        let mut written = Vec::new();
        for (name, text) in
            [("study.md", self.markdown()), ("study.json", json), ("study.csv", self.csv()?)]
        {
            let path = dir.join(name);
            std::fs::write(&path, text).map_err(|e| EvalError::io(&path, e))?;
            written.push(path);
        }
        Ok(written)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kpis(cost: f64) -> Kpis {
        Kpis { community_cost: cost, ..Kpis::default() }
    }

    fn run(seed: u64, rule: f64, learned: f64, optimum: f64) -> SeedRun {
        SeedRun {
            seed,
            report: PathBuf::from(format!("seed-{seed}")),
            rows: vec![
                (RULE_BASED.into(), kpis(rule)),
                (LEARNED.into(), kpis(learned)),
                (OPTIMUM.into(), kpis(optimum)),
            ],
        }
    }

    #[test]
    fn the_interval_is_students_t_over_the_seeds() {
        let e = Estimate::of(&[1.0, 2.0, 3.0, 4.0, 5.0]).unwrap();
        assert_eq!(e.mean, 3.0);
        // sd = √2.5, t(4) = 2.776: 2.776 × √2.5 / √5.
        assert!((e.ci95.unwrap() - 2.776 * (2.5f64 / 5.0).sqrt()).abs() < 1e-12);
        assert_eq!(Estimate::of(&[7.0]).unwrap().ci95, None);
        assert!(Estimate::of(&[]).is_err());
        assert!(Estimate::of(&[1.0, f64::NAN]).is_err());
        assert_eq!(t_975(0), None);
        assert_eq!(t_975(1000), Some(1.96));
    }

    #[test]
    fn the_paired_difference_and_the_gap_come_per_seed() {
        // The communities differ a lot between seeds, the learned policy
        // saves 10 on each: paired, the interval is tight and below zero.
        let runs = vec![
            run(1, 100.0, 90.0, 80.0),
            run(2, 200.0, 190.0, 180.0),
            run(3, 300.0, 290.0, 280.0),
        ];
        let s = Study::of("peergrid run --seeds 3".into(), runs).unwrap();
        let d = s.learned_minus_rule_based.unwrap();
        assert_eq!((d.mean, d.ci95), (-10.0, Some(0.0)));
        assert!(d.below_zero());
        assert_eq!(s.gap_closed_pct.unwrap().mean, 50.0);
        let cost = s.policies[RULE_BASED]["community cost"];
        assert_eq!(cost.mean, 200.0);
        assert!(cost.ci95.unwrap() > 100.0, "the unpaired spread is wide");
        let md = s.markdown();
        assert!(md.contains("interval excludes zero"), "{md}");
        assert!(md.contains("| 2    |"), "{md}");
        let csv = s.csv().unwrap();
        assert_eq!(csv.lines().count(), 1 + 3 * 3);
    }

    #[test]
    fn no_difference_is_said_plainly() {
        let runs = vec![run(1, 100.0, 95.0, 80.0), run(2, 100.0, 105.0, 80.0)];
        let s = Study::of("x".into(), runs).unwrap();
        assert!(!s.learned_minus_rule_based.unwrap().below_zero());
        assert!(s.markdown().contains("does not exclude zero"));
        assert!(Study::of("x".into(), Vec::new()).is_err());
    }
}
