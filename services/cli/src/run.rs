//! `peergrid run`: the embedded reference simulation.
//!
//! Loads the dataset (bundled CityLearn-derived data by default), scales it to
//! a community with the seeded generator, holds out whole weeks, and plays the
//! held-out weeks with every baseline policy through the reference
//! simulator (`peergrid_core::evaluation`). Prints a KPI table (or JSON). The distributed cluster and
//! the trainer replace the internals later; the output stays this shape.

use anyhow::Result;
use clap::{Args, ValueEnum};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::Arc;

use peergrid_core::data::{self, Dataset};
use peergrid_core::evaluation::evaluate;
use peergrid_core::kpi::Kpis;
use peergrid_core::policy::{GridOnly, RuleBased};
use peergrid_core::prosumer::{generate_community, CommunityConfig};
use peergrid_core::simulation::{schedule, SimConfig};

use crate::table::kpi_table;
use crate::InputError;

#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// JSON file with `{"community": {...}, "sim": {...}}` overriding the defaults.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Number of prosumers in the community.
    #[arg(long)]
    pub prosumers: Option<usize>,
    /// Run seed (community generation and noise).
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Dataset: the bundled measured data, a seeded synthetic one, or a file.
    #[arg(long, value_enum, default_value_t = DatasetArg::Bundled)]
    pub dataset: DatasetArg,
    /// CSV path for `--dataset citylearn-csv` or `--dataset ausgrid-csv`.
    #[arg(long)]
    pub data_file: Option<PathBuf>,
    /// Hold out every n-th whole week for evaluation.
    #[arg(long, default_value_t = 4)]
    pub eval_every_nth_week: u32,
    /// Play only the first N held-out weeks (0 = all).
    #[arg(long, default_value_t = 0)]
    pub eval_weeks: usize,
    /// Print the KPIs as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

impl Default for RunArgs {
    fn default() -> Self {
        RunArgs {
            config: None,
            prosumers: None,
            seed: 7,
            dataset: DatasetArg::Bundled,
            data_file: None,
            eval_every_nth_week: 4,
            eval_weeks: 0,
            json: false,
        }
    }
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum DatasetArg {
    /// One year of measured hourly data from 17 homes (CityLearn 2022, Fontana CA).
    Bundled,
    /// A seeded synthetic year (no real data).
    Synthetic,
    /// A tidy CSV in the bundled file's format (`--data-file`).
    CitylearnCsv,
    /// An Ausgrid Solar Home CSV (`--data-file`).
    AusgridCsv,
}

/// The run configuration file.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RunConfig {
    pub community: CommunityConfig,
    pub sim: SimConfig,
}

#[derive(Serialize)]
struct RunOutput<'a> {
    dataset: &'a str,
    seed: u64,
    prosumers: usize,
    eval_slots: usize,
    policies: Vec<(String, Kpis)>,
}

fn load_dataset(args: &RunArgs) -> Result<Dataset> {
    let file = || args.data_file.clone().ok_or_else(|| InputError(format!("--dataset {:?} needs --data-file", args.dataset)));
    Ok(match args.dataset {
        DatasetArg::Bundled => data::citylearn::bundled_citylearn()?,
        DatasetArg::Synthetic => data::synthetic::standard_synthetic(),
        DatasetArg::CitylearnCsv => data::citylearn::load_citylearn_csv(&file()?)?,
        DatasetArg::AusgridCsv => data::ausgrid::load_ausgrid_csv(&file()?)?,
    })
}

fn load_config(args: &RunArgs) -> Result<RunConfig> {
    let mut cfg = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| InputError(format!("{}: {e}", path.display())))?;
            serde_json::from_str(&text).map_err(|e| InputError(format!("{}: {e}", path.display())))?
        }
        None => RunConfig::default(),
    };
    if let Some(n) = args.prosumers {
        cfg.community.n_prosumers = n;
    }
    cfg.community.seed = args.seed;
    cfg.community.validate()?;
    cfg.sim.validate()?;
    Ok(cfg)
}

pub fn run(args: RunArgs) -> Result<()> {
    let cfg = load_config(&args)?;
    let ds = Arc::new(load_dataset(&args)?);
    let split = data::split::split_weeks(&ds, args.eval_every_nth_week);
    let mut eval = split.eval.clone();
    if args.eval_weeks > 0 {
        eval.truncate(args.eval_weeks);
    }
    let slots = schedule(&eval);
    if slots.is_empty() {
        return Err(InputError(format!(
            "dataset '{}' has no whole held-out week at --eval-every-nth-week {}",
            ds.name, args.eval_every_nth_week
        ))
        .into());
    }
    let prosumers = generate_community(&ds, &cfg.community)?;
    let evaluated = evaluate(&ds, &prosumers, &cfg.sim, &slots, &mut [&mut GridOnly, &mut RuleBased])?;
    let mut results = Vec::new();
    for r in evaluated {
        if !args.json {
            let secs = r.elapsed.as_secs_f64();
            eprintln!(
                "{:<11} {} slots × {} prosumers in {:.3} s ({:.2} M prosumer-steps/s)",
                r.policy,
                slots.len(),
                prosumers.len(),
                secs,
                (slots.len() * prosumers.len()) as f64 / secs / 1e6
            );
        }
        results.push((r.policy, r.kpis));
    }
    if args.json {
        let out = RunOutput {
            dataset: &ds.name,
            seed: args.seed,
            prosumers: prosumers.len(),
            eval_slots: slots.len(),
            policies: results,
        };
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!(
            "\nDataset '{}', {} prosumers, seed {}, {} held-out slots ({} weeks, every {}th week):\n",
            ds.name,
            prosumers.len(),
            args.seed,
            slots.len(),
            eval.len(),
            args.eval_every_nth_week
        );
        print!("{}", kpi_table(&results));
    }
    Ok(())
}
