//! The training phase of `peergrid run`: a market-node, the trainer and M
//! agent-nodes started **inside this process**, talking real gRPC — the
//! same code as the cluster binaries — for `--updates` synchronous PPO
//! updates on the training days of the split (the market skips the
//! validation and test weeks; `peergrid_core::data::split`).
//!
//! `--transport` picks what carries the gRPC bytes: loopback TCP (`grpc`,
//! as the cluster) or in-process pipes (`local`: `local://NAME` URLs,
//! `peergrid_runtime::inproc`). Only the listener and the dialling differ;
//! services, HTTP/2 and protobuf encoding are the same, so a seed gives the
//! same KPIs over both.
//!
//! The trainer writes its TensorBoard files and checkpoints into the report
//! directory. Ctrl-C stops training early; the run then evaluates and
//! reports the newest policy it has.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use peergrid_agent_node::AgentConfig;
use peergrid_cluster::Cluster;
use peergrid_core::data::split::WeekSplit;
use peergrid_core::data::Dataset;
use peergrid_core::policy::weights::{from_safetensors, PolicyWeights};
use peergrid_core::prosumer::CommunityConfig;
use peergrid_core::simulation::SimConfig;
use peergrid_eval::report::validation::ValidationCurve;
use peergrid_eval::{EvalScenario, LearningPoint};
use peergrid_market_node::MarketSettings;
use peergrid_trainer::config::TrainerConfig;
use peergrid_trainer::{LearnerSettings, PpoConfig};

use peergrid_runtime::BadInput;

use crate::validate::Validator;

#[derive(Args, Debug, Clone)]
pub(crate) struct TrainArgs {
    /// PPO updates to train (0: evaluate the baselines only).
    #[arg(long, default_value_t = 200)]
    pub updates: u64,
    /// Agent-nodes the prosumers are spread over.
    #[arg(long, default_value_t = 2)]
    pub nodes: u32,
    /// Slots per rollout (and per update): a week of hourly slots, so each
    /// update sees weekdays and a weekend.
    #[arg(long, default_value_t = 168)]
    pub rollout_slots: usize,
    /// Adam step size [default: the PPO file's, else 3e-4, annealed to 0].
    #[arg(long)]
    pub learning_rate: Option<f64>,
    /// Samples per gradient step [default: the PPO file's, else 256].
    #[arg(long)]
    pub minibatch_size: Option<usize>,
    /// JSON file of PPO hyperparameters (any subset of the fields of a
    /// run's `ppo.json`; the rest keep their defaults). The flags above
    /// override it; the run's `--seed` seeds it.
    #[arg(long, value_name = "FILE")]
    pub ppo: Option<std::path::PathBuf>,
    /// How the nodes talk: `grpc` (loopback TCP, the cluster's code path) or
    /// `local` (in-process pipes, no sockets: faster, same results).
    #[arg(long, value_enum, default_value_t = Transport::Grpc)]
    pub transport: Transport,
    /// Every N updates, play the newest policy deterministically on the
    /// validation weeks; the run keeps and reports the policy with the
    /// lowest validation cost, not the last (0: keep the last, no validation).
    #[arg(long, default_value_t = 10)]
    pub validate_every: u64,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

impl Default for TrainArgs {
    fn default() -> Self {
        TrainArgs {
            updates: 200,
            nodes: 2,
            rollout_slots: 168,
            learning_rate: None,
            minibatch_size: None,
            ppo: None,
            transport: Transport::Grpc,
            validate_every: 10,
            quiet: false,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Transport {
    /// Real gRPC on 127.0.0.1 between in-process nodes.
    Grpc,
    /// In-process byte pipes, no sockets: the same services, HTTP/2 and
    /// protobuf encoding, without the kernel's TCP stack.
    Local,
}

impl From<Transport> for peergrid_cluster::Transport {
    fn from(t: Transport) -> Self {
        match t {
            Transport::Grpc => peergrid_cluster::Transport::Tcp,
            Transport::Local => peergrid_cluster::Transport::Local,
        }
    }
}

/// What a training phase trains on, besides its flags.
pub(crate) struct TrainRequest<'a> {
    /// Checked with [`TrainArgs::validate`].
    pub args: &'a TrainArgs,
    /// From [`TrainArgs::ppo_config`].
    pub ppo: PpoConfig,
    pub ds: Arc<Dataset>,
    pub community: &'a CommunityConfig,
    pub sim: &'a SimConfig,
    /// The market plays only this split's training days (never the
    /// validation or test weeks).
    pub split: WeekSplit,
    /// The report directory: TensorBoard files and checkpoints go under it.
    pub out: &'a Path,
    /// The community on the validation weeks, when `--validate-every` is on.
    pub validation: Option<EvalScenario>,
}

/// What training produced.
pub(crate) struct Trained {
    pub policy: PolicyWeights,
    pub curve: Vec<LearningPoint>,
    pub checkpoint: std::path::PathBuf,
    pub updates: u64,
    pub seconds: f64,
    pub agent_steps: u64,
    pub learn_seconds: f64,
    pub interrupted: bool,
    /// How the kept policy was chosen, when the run validated.
    pub validation: Option<ValidationCurve>,
}

impl TrainArgs {
    pub(crate) fn validate(&self, prosumers: usize) -> Result<(), BadInput> {
        if self.nodes == 0 || self.nodes as usize > prosumers {
            return Err(BadInput::new(format!(
                "--nodes must lie in 1..={prosumers} (one prosumer per node at least), got {}",
                self.nodes
            )));
        }
        if !(1..=10_000).contains(&self.rollout_slots) {
            return Err(BadInput::new(format!(
                "--rollout-slots must lie in 1..=10000, got {}",
                self.rollout_slots
            )));
        }
        if self.validate_every > 1_000_000 {
            return Err(BadInput::new(format!(
                "--validate-every must be ≤ 1000000 (0 = off), got {}",
                self.validate_every
            )));
        }
        if self.updates > 1_000_000 {
            return Err(BadInput::new(format!(
                "--updates must be ≤ 1000000, got {}",
                self.updates
            )));
        }
        Ok(())
    }

    /// The effective PPO configuration: `--ppo`'s file (or the defaults),
    /// then the flags, seeded by the run's seed; the learning rate anneals
    /// over `--updates` unless the file plans another horizon.
    pub(crate) fn ppo_config(&self, seed: u64) -> Result<PpoConfig, BadInput> {
        let mut ppo = match &self.ppo {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| BadInput::new(format!("--ppo {}: {e}", path.display())))?;
                serde_json::from_str::<PpoConfig>(&text)
                    .map_err(|e| BadInput::new(format!("--ppo {}: {e}", path.display())))?
            }
            None => PpoConfig::default(),
        };
        ppo.seed = seed;
        if let Some(lr) = self.learning_rate {
            ppo.learning_rate = lr;
        }
        if let Some(mb) = self.minibatch_size {
            ppo.minibatch_size = mb;
        }
        if ppo.total_updates.is_none() {
            ppo.total_updates = Some(self.updates.max(1));
        }
        ppo.validate().map_err(|e| {
            BadInput::new(format!(
                "{}{e}",
                self.ppo.as_ref().map_or(String::new(), |p| format!("--ppo {}: ", p.display()))
            ))
        })?;
        Ok(ppo)
    }
}

/// Trains `args.updates` updates; writes TensorBoard files and checkpoints under `out`.
pub(crate) fn train(request: TrainRequest<'_>) -> Result<Trained> {
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(train_async(request))
}

async fn train_async(request: TrainRequest<'_>) -> Result<Trained> {
    let TrainRequest { args, ppo, ds, community, sim, split, out, validation } = request;
    let started = Instant::now();
    // The effective hyperparameters, reusable with `--ppo`.
    std::fs::write(out.join("ppo.json"), serde_json::to_string_pretty(&ppo)? + "\n")
        .with_context(|| format!("writing {}", out.join("ppo.json").display()))?;
    let mut validator = match validation {
        Some(scenario) if args.validate_every > 0 => {
            Some(Validator::start(scenario, args.validate_every, out)?)
        }
        _ => None,
    };
    let trainer = TrainerConfig {
        run_dir: Some(out.to_path_buf()),
        ppo,
        learner: LearnerSettings {
            min_nodes: args.nodes as usize,
            checkpoint_every: 50,
            sync_timeout_ms: 60_000,
            // Exactly --updates updates, however fast the loop below polls.
            max_updates: Some(args.updates),
            // Every version the validation is due for, whatever its timing.
            snapshot_every: validator.as_ref().map_or(0, |_| args.validate_every),
            ..LearnerSettings::default()
        },
        ..TrainerConfig::default()
    };
    let mut cluster = start_cluster(args, trainer, ds, community, sim, split).await?;
    let progress =
        follow_training(&mut cluster, args, community.n_prosumers, started, &mut validator).await;
    let trainer = cluster.trainer().context("the training cluster has a trainer")?;
    let published = trainer.learner.published().borrow().clone();
    let history = trainer.learner.history();
    let snapshots = trainer.learner.take_snapshots();
    // Nodes and market stop together, then the trainer (final checkpoint).
    let stopped = cluster.shutdown().await;
    let interrupted = progress?;
    stopped?;
    let last = from_safetensors(&published.weights)?;
    let (validation, kept) = match validator {
        Some(v) => {
            let (curve, best) = v.finish(snapshots, &published).await?;
            (Some(curve), best)
        }
        None => (None, None),
    };
    let (policy, checkpoint) = match kept {
        Some(blob) => (from_safetensors(&blob)?, out.join("checkpoints").join("best.safetensors")),
        None => {
            let checkpoint = write_policy_checkpoint(out, &last, &published.weights)?;
            (last, checkpoint)
        }
    };
    let history: Vec<_> = history.into_iter().filter(|r| r.version <= published.version).collect();
    let agent_steps = history.iter().map(|r| r.samples as u64).sum();
    let curve = history
        .iter()
        .map(|r| LearningPoint {
            update: r.version - 1,
            mean_episode_return: r.mean_episode_return,
            community_cost: r.community_cost,
        })
        .collect();
    Ok(Trained {
        policy,
        curve,
        checkpoint,
        updates: history.len() as u64,
        seconds: started.elapsed().as_secs_f64(),
        agent_steps,
        learn_seconds: history.iter().map(|r| r.learn_seconds).sum(),
        interrupted,
        validation,
    })
}

/// The training cluster: `trainer` (synchronous PPO, exactly `--updates`
/// updates), a market that plays the split's training days and waits for
/// the trainer between rollouts, and `--nodes` agent-nodes sharing the
/// community's prosumers.
async fn start_cluster(
    args: &TrainArgs,
    trainer: TrainerConfig,
    ds: Arc<Dataset>,
    community: &CommunityConfig,
    sim: &SimConfig,
    split: WeekSplit,
) -> Result<Cluster> {
    let market = MarketSettings {
        // Synchronous PPO: a slot waits while the trainer updates.
        deadline_ms: 60_000,
        train_weeks_only: Some(split),
        ..MarketSettings::default()
    };
    let agent = AgentConfig {
        community: community.clone(),
        actor_threads: 1,
        rollout_slots: args.rollout_slots,
        ..AgentConfig::default()
    };
    let n = community.n_prosumers as u32;
    let shares: Vec<u32> =
        (0..args.nodes).map(|i| n / args.nodes + u32::from(i < n % args.nodes)).collect();
    Cluster::builder(ds)
        .sim(sim.clone())
        .nodes(&shares)
        .transport(args.transport.into())
        .trainer(trainer)
        .market(market)
        .agent(agent)
        .start()
        .await
}

/// Shows the trainer's progress until `--updates` updates are done or
/// Ctrl-C (then `Ok(true)`: interrupted); fails when an agent-node or the
/// trainer ends.
async fn follow_training(
    cluster: &mut Cluster,
    args: &TrainArgs,
    prosumers: usize,
    started: Instant,
    validator: &mut Option<Validator>,
) -> Result<bool> {
    let bar = progress_bar(args, "training", args.updates, "updates");
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        let learner = &cluster.trainer().context("the training cluster has a trainer")?.learner;
        let s = learner.status();
        if let Some(v) = validator.as_mut() {
            v.poll(learner.take_snapshots()).await?;
        }
        bar.set_position(s.updates_done.min(args.updates));
        let steps = s.samples_total as f64 / started.elapsed().as_secs_f64().max(1e-9);
        bar.set_message(format!(
            "v{} · return {:.3} · {:.0} slots/s · {:.0} agent-steps/s · {:.0} sample-grads/s",
            s.version,
            s.mean_episode_return,
            steps / prosumers.max(1) as f64,
            steps,
            s.samples_per_s
        ));
        if s.updates_done >= args.updates {
            bar.finish();
            return Ok(false);
        }
        if let Some((_, why)) = cluster.ended_agent().await {
            bar.abandon();
            return Err(why.context("an agent-node stopped before training finished"));
        }
        let trainer = cluster.trainer().context("the training cluster has a trainer")?;
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            // Only a dead learner stops the trainer on its own; the
            // cluster's shutdown then reports its panic.
            () = trainer.finished() => {
                bar.abandon();
                anyhow::bail!("the trainer stopped before training finished");
            }
            _ = &mut ctrl_c => {
                bar.println("interrupted: stopping training and reporting the newest policy");
                bar.finish();
                return Ok(true);
            }
        }
    }
}

/// The bar a training phase shows on stderr (hidden with `--quiet`):
/// `prefix [====>   ] pos/len unit message (elapsed, eta)`.
pub(crate) fn progress_bar(
    args: &TrainArgs,
    prefix: &'static str,
    len: u64,
    unit: &str,
) -> ProgressBar {
    let bar = if args.quiet { ProgressBar::hidden() } else { ProgressBar::new(len) };
    let template = format!(
        "{{prefix}} [{{bar:30}}] {{pos}}/{{len}} {unit} {{msg}} ({{elapsed}}, eta {{eta}})"
    );
    bar.set_style(
        ProgressStyle::with_template(&template).expect("a valid template").progress_chars("=> "),
    );
    bar.set_prefix(prefix);
    bar
}

/// The policy evaluated, as a policy file (the trainer's own periodic and
/// final checkpoints sit beside it).
fn write_policy_checkpoint(
    out: &Path,
    policy: &PolicyWeights,
    weights: &[u8],
) -> Result<std::path::PathBuf> {
    let dir = out.join("checkpoints");
    let checkpoint = peergrid_trainer::checkpoint::policy_path(&dir, policy.version);
    if !checkpoint.exists() {
        std::fs::create_dir_all(&dir)?;
        std::fs::write(&checkpoint, weights)
            .with_context(|| format!("writing {}", checkpoint.display()))?;
    }
    Ok(checkpoint)
}
