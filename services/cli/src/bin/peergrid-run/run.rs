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
use peergrid_cli::remote_eval::{
    evaluate_remote_and_report, remote_url, RemoteEvalPolicy, RemotePolicyArgs,
};
use peergrid_runtime::BadInput;

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
    /// Let an external PolicyService decide instead of training PPO:
    /// `remote:http://HOST:PORT` (e.g. a Python learner served with
    /// `peergrid.serve_policy`). The cluster plays `--updates ×
    /// --rollout-slots` training slots with the service deciding (and
    /// learning from each slot's rewards), then the service is evaluated
    /// like `peergrid eval --policy remote:URL`. The agent token of
    /// PEERGRID_AGENT_TOKEN (or _FILE) is sent, if set.
    #[arg(long, value_name = "remote:URL")]
    pub policy: Option<String>,
    #[command(flatten)]
    pub remote: RemotePolicyArgs,
    #[command(flatten)]
    pub train: crate::train::TrainArgs,
}

/// Most seeds one study runs.
const MAX_SEEDS: u32 = 100;

pub(crate) fn run(args: RunArgs) -> Result<()> {
    if !(1..=MAX_SEEDS).contains(&args.seeds) {
        return Err(BadInput::new(format!(
            "--seeds must lie in 1..={MAX_SEEDS}, got {}",
            args.seeds
        ))
        .into());
    }
    if let Some(policy) = &args.policy {
        let url = remote_url(policy)?;
        if args.seeds != 1 {
            return Err(BadInput::new(format!(
                "--seeds {} with --policy remote: the service keeps learning from one seed to \
                 the next, so the seeds would not be independent; run one seed per fresh service",
                args.seeds
            ))
            .into());
        }
        return run_remote(&args, url);
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
            return Err(BadInput::new(format!("seed {seed} refused its input; see above")).into());
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
    peergrid_cli::quiet_on_closed_stdout();
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
            Err(BadInput::new("--eval-weeks and --days both select held-out days: use one").into())
        }
        (weeks, None) => Ok(Some(DaySelection::first(7 * weeks))),
    }
}

/// `--policy remote:URL`: the service plays the training days (unless
/// `--updates 0`), then is evaluated; a slot it fails in the evaluation
/// ends the run before any report is written.
fn run_remote(args: &RunArgs, url: &str) -> Result<()> {
    let setup = Setup::load("peergrid run", &args.scenario, eval_days(args)?)?;
    args.train.validate(setup.info.community.n_prosumers)?;
    // Dialled first: a service that is not there fails before anything runs.
    let mut remote = RemoteEvalPolicy::connect(url, &args.remote)?;
    if args.train.updates > 0 {
        let played = crate::remote::play(crate::remote::PlayRequest {
            args: &args.train,
            url,
            remote: &args.remote,
            ds: Arc::clone(&setup.scenario.ds),
            community: &setup.info.community,
            sim: &setup.scenario.sim,
            split: setup.info.split,
        })?;
        eprintln!(
            "the remote policy played {} training slots in {:.1} s ({:.0} slots/s): {} node-slots \
             decided by it, {} rule-based because it did not answer in time{}",
            played.slots,
            played.seconds,
            played.slots as f64 / played.seconds.max(1e-9),
            played.calls,
            played.fallbacks,
            if played.interrupted { " (interrupted)" } else { "" },
        );
        if played.slots > 0 && played.calls == 0 {
            anyhow::bail!(
                "the remote policy at {url} decided none of the {} training slots (every one \
                 fell back to rule-based); see the agent-nodes' warnings above",
                played.slots
            );
        }
    }
    std::fs::create_dir_all(&setup.out)?;
    evaluate_remote_and_report(&setup, &mut remote, &[])
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
