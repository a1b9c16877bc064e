//! `peergrid run`: the main job embedded on one machine.
//!
//! Loads the dataset (bundled CityLearn-derived data by default), scales it
//! to a community with the seeded generator and splits the whole weeks into
//! train, validation and test (`peergrid_core::data::split`); trains a
//! shared PPO policy on the train days only with the embedded cluster
//! ([`crate::train`]); then evaluates grid-only, rule-based, the learned
//! policy and the perfect-foresight optimum once, on the `--split` days
//! (test by default: the reported result), through [`evaluate_and_report`],
//! which writes the report and prints the KPI table. `--updates 0` skips
//! training.

use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Args;
use peergrid_core::policy::MlpPolicy;

use peergrid_core::data::split::SplitPart;
use peergrid_eval::compare::RULE_BASED;
use peergrid_eval::days::{days_of_part, DaySelection};
use peergrid_eval::study::{SeedRun, Study};
use peergrid_eval::EvalScenario;

use peergrid_cli::evaluate::{evaluate_and_report, ScenarioArgs, Setup};
use peergrid_cli::InputError;

#[derive(Args, Debug, Clone, Default)]
pub(crate) struct RunArgs {
    #[command(flatten)]
    pub scenario: ScenarioArgs,
    /// Evaluate only the first N weeks of the evaluated split (0 = all); shorthand for `--days 1-7N`.
    #[arg(long, default_value_t = 0)]
    pub eval_weeks: usize,
    /// Train and evaluate this many seeds (S, S+1, …: community, PPO
    /// initialisation and sampling) and summarise every KPI as mean ± 95 %
    /// confidence interval (`study.md`, one report per seed under `seed-N/`).
    #[arg(long, default_value_t = 1)]
    pub seeds: u32,
    #[command(flatten)]
    pub train: crate::train::TrainArgs,
}

/// Most seeds one study runs.
const MAX_SEEDS: u32 = 100;

pub(crate) fn run(args: RunArgs) -> Result<()> {
    if !(1..=MAX_SEEDS).contains(&args.seeds) {
        return Err(
            InputError(format!("--seeds must lie in 1..={MAX_SEEDS}, got {}", args.seeds)).into()
        );
    }
    if args.seeds == 1 {
        return run_one(&args);
    }
    study(args)
}

/// `--seeds N`: one run per seed into `OUT/seed-<seed>/`, then the summary.
/// Each seed is a process of its own (this binary, with the same flags but
/// `--seed`, `--out` and `--seeds`), so a seed starts from a clean process
/// as a single run does, and one crashing cannot take the others' results.
fn study(args: RunArgs) -> Result<()> {
    let dir = match &args.scenario.out {
        Some(dir) => dir.clone(),
        None => peergrid_cli::evaluate::fresh_run_dir(std::path::Path::new("runs"))?,
    };
    // Bad input is refused here, once, before anything is written.
    let setup = Setup::load("peergrid run", &args.scenario, eval_days(&args)?)?;
    if args.train.updates > 0 {
        args.train.validate(setup.info.community.n_prosumers)?;
        args.train.ppo_config(args.scenario.seed)?;
    }
    std::fs::create_dir_all(&dir)?;
    let exe = std::env::current_exe().context("locating peergrid-run for the seeds")?;
    let shared = flags_without(std::env::args_os().skip(1), &["--seeds", "--seed", "--out"]);
    let first = args.scenario.seed;
    let mut runs = Vec::new();
    for seed in first..first + u64::from(args.seeds) {
        let out = dir.join(format!("seed-{seed}"));
        eprintln!("== seed {seed} ({} of {})", seed - first + 1, args.seeds);
        let status = std::process::Command::new(&exe)
            .args(&shared)
            .args(["--seed", &seed.to_string(), "--out"])
            .arg(&out)
            .stdout(std::process::Stdio::null())
            .status()
            .with_context(|| format!("starting {} for seed {seed}", exe.display()))?;
        if status.code() == Some(2) {
            return Err(InputError(format!("seed {seed} refused its input; see above")).into());
        }
        anyhow::ensure!(status.success(), "seed {seed} failed ({status}); see its output above");
        runs.push(SeedRun::from_report(seed, &out)?);
    }
    let command = std::env::args()
        .skip(1)
        .collect::<Vec<_>>()
        .join(" ")
        .replace(&dir.display().to_string(), "DIR");
    let study = Study::of(format!("peergrid run {command}"), runs)?;
    let files = study.write(&dir)?;
    if args.scenario.json {
        print!("{}", std::fs::read_to_string(dir.join("study.json"))?);
    } else {
        println!("{}", study.markdown());
        println!("Study: {}", files[0].display());
    }
    Ok(())
}

/// `args` without the flags named in `drop` (as `--flag VALUE` or
/// `--flag=VALUE`) and without `--json` (a seed's table goes nowhere).
fn flags_without(
    args: impl Iterator<Item = std::ffi::OsString>,
    drop: &[&str],
) -> Vec<std::ffi::OsString> {
    let mut kept = Vec::new();
    let mut skip_value = false;
    for arg in args {
        if std::mem::take(&mut skip_value) {
            continue;
        }
        let text = arg.to_string_lossy();
        if text == "--json" {
            continue;
        }
        if drop.contains(&text.as_ref()) {
            skip_value = true;
            continue;
        }
        if drop.iter().any(|d| text.starts_with(&format!("{d}="))) {
            continue;
        }
        kept.push(arg);
    }
    kept
}

/// The days `--eval-weeks` selects, if it does.
fn eval_days(args: &RunArgs) -> Result<Option<DaySelection>> {
    match (args.eval_weeks, &args.scenario.days) {
        (0, _) => Ok(None),
        (_, Some(_)) => {
            Err(InputError("--eval-weeks and --days both select held-out days: use one".into())
                .into())
        }
        (weeks, None) => Ok(Some(DaySelection::first(7 * weeks))),
    }
}

/// One seed: trains (unless `--updates 0`), evaluates, reports.
fn run_one(args: &RunArgs) -> Result<()> {
    let setup = Setup::load("peergrid run", &args.scenario, eval_days(args)?)?;
    if args.train.updates == 0 {
        evaluate_and_report(&setup, None, &[])?;
        return Ok(());
    }
    // Every training input is checked before the report directory exists.
    args.train.validate(setup.info.community.n_prosumers)?;
    let ppo = args.train.ppo_config(args.scenario.seed)?;
    std::fs::create_dir_all(&setup.out)?;
    let trained = crate::train::train(crate::train::TrainRequest {
        args: &args.train,
        ppo,
        ds: Arc::clone(&setup.scenario.ds),
        community: &setup.info.community,
        sim: &setup.scenario.sim,
        split: setup.info.split,
        out: &setup.out,
        validation: (args.train.validate_every > 0).then(|| EvalScenario {
            days: days_of_part(&setup.scenario.ds, &setup.info.split, SplitPart::Validation),
            ..setup.scenario.clone()
        }),
    })?;
    eprintln!(
        "trained {} updates in {:.1} s: {} agent-steps ({:.0}/s end to end), {:.0} % of the time learning{}",
        trained.updates,
        trained.seconds,
        trained.agent_steps,
        trained.agent_steps as f64 / trained.seconds.max(1e-9),
        100.0 * trained.learn_seconds / trained.seconds.max(1e-9),
        if trained.interrupted { " (interrupted)" } else { "" },
    );
    let mut policy = MlpPolicy::new(trained.policy.net.clone(), trained.policy.normaliser.clone())?;
    let mut setup = setup.with_checkpoint(&trained.checkpoint, trained.policy.version);
    if let Some(curve) = trained.validation {
        if let (Some(best), Some(rule)) = (curve.best, curve.baseline(RULE_BASED)) {
            eprintln!(
                "kept the policy of update {} (version {}): validation cost {:.2} on {} days \
                 (rule-based {rule:.2})",
                best.update, best.policy_version, best.community_cost, curve.days
            );
        }
        setup = setup.with_validation(curve);
    }
    evaluate_and_report(&setup, Some(&mut policy), &trained.curve)?;
    Ok(())
}
