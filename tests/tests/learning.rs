//! The learner end to end: a market-node, an agent-node and the trainer
//! over real gRPC on loopback, synchronous PPO.
//!
//! - **Learning**: after a fixed number of updates, the learned policy's
//!   mean daily return over its training days (deterministic actions, the
//!   reference simulator) beats the initial policy's, which is the
//!   rule-based baseline (residual prior), by a margin noise cannot explain.
//! - **Determinism**: two runs with one seed give identical update records
//!   and identical weights.
//! - **Resume**: the trainer stops (final checkpoint) and a new one resumes
//!   from it; the agent-node keeps running, training continues from the
//!   checkpoint's version.
//! - **Bad input**: malformed or non-finite experience, wrong observation
//!   size, unknown versions are refused with a clear status and nothing is
//!   ingested.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use peergrid_core::data::citylearn::bundled_citylearn;
use peergrid_core::data::Dataset;
use peergrid_core::experience::Rollout;
use peergrid_core::observation::OBS_DIM;
use peergrid_core::policy::weights::{from_safetensors, PolicyWeights};
use peergrid_core::policy::{ActionPrior, MlpPolicy, Policy, RuleBased};
use peergrid_core::prosumer::{generate_community, CommunityConfig};
use peergrid_core::simulation::{SimConfig, Simulation};
use peergrid_e2e::cluster::{ClusterBuilder, AGENT_TOKEN, OPERATOR_TOKEN};
use peergrid_proto::pb::learner::v1 as pb;
use peergrid_proto::pb::learner::v1::learner_service_client::LearnerServiceClient;
use peergrid_runtime::auth::{BearerInterceptor, Tokens};
use peergrid_runtime::ShutdownController;
use peergrid_trainer::config::TrainerConfig;
use peergrid_trainer::{LearnerSettings, PpoConfig, TrainerHandle, UpdateRecord};
use tonic::Code;

const PROSUMERS: u32 = 16;
const ROLLOUT_SLOTS: usize = 96;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn dataset() -> Arc<Dataset> {
    Arc::new(bundled_citylearn().expect("bundled data"))
}

fn ppo(seed: u64) -> PpoConfig {
    PpoConfig {
        seed,
        minibatch_size: env_or("LEARN_MB", 128),
        learning_rate: env_or("LEARN_LR", 5e-4),
        ..PpoConfig::default()
    }
}

async fn start_trainer(
    ppo: PpoConfig,
    run_dir: Option<std::path::PathBuf>,
    resume: bool,
) -> Result<(TrainerHandle, ShutdownController)> {
    let config = TrainerConfig {
        listen: "127.0.0.1:0".parse()?,
        run_dir,
        resume,
        ppo,
        learner: LearnerSettings { checkpoint_every: 2, ..LearnerSettings::default() },
        ..TrainerConfig::default()
    };
    let tokens = Tokens::new(Some(AGENT_TOKEN.into()), Some(OPERATOR_TOKEN.into()))?;
    let controller = ShutdownController::new();
    let trainer = peergrid_trainer::start(config, tokens, controller.subscribe()).await?;
    Ok((trainer, controller))
}

/// Waits until `trainer` published `version`; fails at once when the
/// trainer stopped instead (its learner died), after 600 s when stuck.
async fn wait_for_version(trainer: &TrainerHandle, version: u64) -> Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(600);
    while trainer.learner.status().version < version {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "trainer stuck at version {}",
            trainer.learner.status().version
        );
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(20)) => {}
            () = trainer.finished() => anyhow::bail!(
                "the trainer stopped at version {} waiting for {version}: {:?}",
                trainer.learner.status().version,
                trainer.learner.death()
            ),
        }
    }
    Ok(())
}

fn current_policy(trainer: &TrainerHandle) -> PolicyWeights {
    let published = trainer.learner.published().borrow().clone();
    from_safetensors(&published.weights).expect("the published blob reads back")
}

/// Trains `updates` synchronous updates of one node with `PROSUMERS` prosumers.
async fn train(
    ds: Arc<Dataset>,
    seed: u64,
    updates: u64,
) -> Result<(Vec<UpdateRecord>, PolicyWeights, PolicyWeights)> {
    if std::env::var_os("RUST_LOG").is_some() {
        peergrid_runtime::init_tracing(false);
    }
    let (trainer, stop_trainer) = start_trainer(ppo(seed), None, false).await?;
    let initial = current_policy(&trainer);
    let cluster = ClusterBuilder {
        nodes: vec![env_or("LEARN_PROSUMERS", PROSUMERS)],
        seed,
        deadline_ms: 5_000,
        learner: Some(trainer.url().to_owned()),
        rollout_slots: env_or("LEARN_ROLLOUT", ROLLOUT_SLOTS),
        ..ClusterBuilder::default()
    }
    .start(ds)
    .await?;
    wait_for_version(&trainer, 1 + updates).await?;
    let history = trainer.learner.history();
    let learned = current_policy(&trainer);
    cluster.stop().await?;
    stop_trainer.trigger();
    trainer.join().await?;
    Ok((history[..updates as usize].to_vec(), initial, learned))
}

/// Mean daily return per prosumer over `days`, deterministic actions.
fn daily_return(
    ds: &Arc<Dataset>,
    seed: u64,
    policy: &mut dyn Policy,
    days: std::ops::Range<usize>,
) -> f64 {
    let n = env_or("LEARN_PROSUMERS", PROSUMERS);
    let specs = generate_community(
        ds,
        &CommunityConfig { n_prosumers: n as usize, seed, ..CommunityConfig::default() },
    )
    .expect("community");
    let slots: Vec<usize> = (days.start * 24..days.end * 24).collect();
    let mut sim =
        Simulation::new(ds.clone(), specs, SimConfig::default(), slots).expect("simulation");
    let mut total = 0.0;
    while sim.step(policy).is_some() {
        total += sim.rewards().iter().map(|r| *r as f64).sum::<f64>();
    }
    total / (n as f64 * days.len() as f64)
}

fn mlp(w: &PolicyWeights) -> MlpPolicy {
    MlpPolicy::new(w.net.clone(), w.normaliser.clone()).expect("policy")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ppo_learns_a_better_policy_than_its_initial_one_and_the_rule() -> Result<()> {
    let ds = dataset();
    let seed = 11;
    let (history, initial, learned) = train(ds.clone(), seed, env_or("LEARN_UPDATES", 40)).await?;
    // The training run covers days 0..160 (40 rollouts of four days); the
    // evaluation replays 112 of those days deterministically (mean actions)
    // in the reference simulator: 112 episodes × 16 prosumers.
    // Generalisation to held-out days is what `peergrid run` reports.
    let days = 0..112;
    let rule = daily_return(&ds, seed, &mut RuleBased, days.clone());
    let before = daily_return(&ds, seed, &mut mlp(&initial), days.clone());
    let after = daily_return(&ds, seed, &mut mlp(&learned), days);
    let returns: Vec<f64> = history.iter().map(|r| r.mean_episode_return).collect();
    eprintln!("daily return: rule-based {rule:.4}, initial {before:.4}, learned {after:.4}; training returns {returns:.3?}");
    // The untrained residual policy plays (almost exactly) the rule.
    assert_eq!(initial.net.spec.prior, ActionPrior::RuleBased);
    assert!(
        (before - rule).abs() < 0.005 * rule.abs(),
        "the initial policy is not the rule: {before} vs {rule}"
    );
    // Deterministic evaluation over 1,792 prosumer-days: a gain of 2 % of
    // the (negative, cost-like) return of the better of the two cannot come
    // from noise.
    let baseline = before.max(rule);
    assert!(after > baseline + 0.02 * baseline.abs(), "no clear improvement: {baseline} → {after}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_seed_gives_identical_training_runs() -> Result<()> {
    let ds = dataset();
    let (a, _, wa) = train(ds.clone(), 5, 3).await?;
    let (b, _, wb) = train(ds, 5, 3).await?;
    let key = |h: &[UpdateRecord]| {
        h.iter()
            .map(|r| {
                (
                    r.version,
                    r.samples,
                    r.mean_episode_return.to_bits(),
                    r.stats.policy_loss.to_bits(),
                )
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(key(&a), key(&b));
    assert_eq!(wa, wb);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_trainer_continues_from_its_checkpoint_version() -> Result<()> {
    let ds = dataset();
    let dir = std::env::temp_dir().join(format!("peergrid-resume-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (trainer, stop) = start_trainer(ppo(3), Some(dir.clone()), false).await?;
    let addr = trainer.grpc_addr.context("the test trainer listens on TCP")?;
    let cluster = ClusterBuilder {
        nodes: vec![PROSUMERS],
        seed: 3,
        deadline_ms: 5_000,
        learner: Some(format!("http://{addr}")),
        rollout_slots: 24,
        ..ClusterBuilder::default()
    }
    .start(ds)
    .await?;
    wait_for_version(&trainer, 3).await?;
    // Stop: a final checkpoint of whatever version is current.
    stop.trigger();
    trainer.join().await?;
    let saved = peergrid_trainer::checkpoint::latest_version(&dir.join("checkpoints"))?
        .context("a checkpoint")?;
    assert!(saved >= 3, "final checkpoint at {saved}");
    // Resume on the same address: the agent-node reconnects by itself.
    let config = TrainerConfig {
        listen: addr,
        run_dir: Some(dir.clone()),
        resume: true,
        ppo: ppo(3),
        learner: LearnerSettings { checkpoint_every: 2, ..LearnerSettings::default() },
        ..TrainerConfig::default()
    };
    let tokens = Tokens::new(Some(AGENT_TOKEN.into()), Some(OPERATOR_TOKEN.into()))?;
    let controller = ShutdownController::new();
    let resumed = peergrid_trainer::start(config, tokens, controller.subscribe()).await?;
    assert_eq!(resumed.learner.status().version, saved, "resumes with the checkpoint's version");
    assert_eq!(resumed.learner.status().updates_done, saved - 1);
    wait_for_version(&resumed, saved + 2).await?;
    let (_, reports) = cluster.stop().await?;
    assert!(reports.iter().all(|r| r.slots_played > 0));
    controller.trigger();
    resumed.join().await?;
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

type Defect = Box<dyn Fn(&mut pb::ExperienceBatch)>;

fn batch(version: u64) -> pb::ExperienceBatch {
    let r = Rollout {
        node_name: "tester".into(),
        policy_version: version,
        first_slot: 0,
        steps: 2,
        prosumer_ids: vec![0, 1],
        observations: vec![0.1; 4 * OBS_DIM],
        actions: vec![0.0; 4 * 3],
        log_probs: vec![-2.0; 4],
        values: vec![0.0; 4],
        rewards: vec![-0.1; 4],
        dones: vec![false; 4],
        bootstrap_values: vec![0.0; 2],
        costs: vec![0.1; 4],
        grid_import_kwh: vec![0.5; 4],
    };
    pb::ExperienceBatch::from(&r)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_experience_is_refused_and_nothing_is_ingested() -> Result<()> {
    let (trainer, stop) = start_trainer(ppo(1), None, false).await?;
    let channel =
        tonic::transport::Endpoint::from_shared(trainer.url().to_owned())?.connect().await?;
    let mut client = LearnerServiceClient::with_interceptor(
        channel.clone(),
        BearerInterceptor::new(AGENT_TOKEN)?,
    );
    let cases: Vec<(Defect, Code, &str)> = vec![
        (Box::new(|b| b.rewards[1] = f32::NAN), Code::InvalidArgument, "rewards[1]"),
        (
            Box::new(|b| b.observations.truncate(3 * OBS_DIM + 5)),
            Code::InvalidArgument,
            "observations",
        ),
        (Box::new(|b| b.prosumer_ids = vec![1, 1]), Code::InvalidArgument, "prosumer_ids[1]"),
        (Box::new(|b| b.policy_version = 9), Code::InvalidArgument, "policy_version"),
        (Box::new(|b| b.node_name.clear()), Code::InvalidArgument, "node_name"),
        // Poisoned but finite (issue 12): beyond the documented bounds of
        // `Rollout::validate`, refused before the learner sees them.
        (Box::new(|b| b.rewards.fill(3e38)), Code::InvalidArgument, "rewards[0]"),
        (Box::new(|b| b.observations.fill(3e38)), Code::InvalidArgument, "observations[0]"),
        (Box::new(|b| b.values[3] = -1e30), Code::InvalidArgument, "values[3]"),
        (Box::new(|b| b.bootstrap_values[1] = 1e30), Code::InvalidArgument, "bootstrap_values[1]"),
        (Box::new(|b| b.log_probs[2] = -1e20), Code::InvalidArgument, "log_probs[2]"),
        (Box::new(|b| b.actions[5] = 1e10), Code::InvalidArgument, "actions[5]"),
    ];
    for (defect, code, field) in cases {
        let mut b = batch(1);
        defect(&mut b);
        let status = client.push_experience(tokio_stream_once(b)).await.unwrap_err();
        assert_eq!(status.code(), code, "{field}: {status:?}");
        assert!(status.message().contains(field), "{field}: {}", status.message());
    }
    let s = trainer.learner.status();
    assert_eq!((s.samples_total, s.version), (0, 1));
    assert_eq!(trainer.learner.history().len(), 0);
    // The operator token may read status but not push.
    let mut operator =
        LearnerServiceClient::with_interceptor(channel, BearerInterceptor::new(OPERATOR_TOKEN)?);
    let status = operator.push_experience(tokio_stream_once(batch(1))).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    assert_eq!(operator.status(pb::StatusRequest {}).await?.into_inner().version, 1);
    // A good batch is taken and makes version 2 (min_nodes = 1).
    let summary = client.push_experience(tokio_stream_once(batch(1))).await?.into_inner();
    assert_eq!((summary.batches_accepted, summary.samples_accepted), (1, 4));
    wait_for_version(&trainer, 2).await?;
    // Now version 1 is stale: dropped and counted, not an error.
    let summary = client.push_experience(tokio_stream_once(batch(1))).await?.into_inner();
    assert_eq!((summary.batches_accepted, summary.batches_stale), (0, 1));
    stop.trigger();
    trainer.join().await?;
    Ok(())
}

fn tokio_stream_once(
    b: pb::ExperienceBatch,
) -> impl tonic::codegen::tokio_stream::Stream<Item = pb::ExperienceBatch> {
    tonic::codegen::tokio_stream::once(b)
}

/// One actor's part of a rollout: `steps` quiet steps of prosumer `id`.
fn part(id: u32, steps: usize) -> peergrid_agent_node::actors::ActorRollout {
    use peergrid_agent_node::actors::{ActorRollout, Step};
    ActorRollout {
        prosumer_id: id,
        steps: vec![Step { reward: -0.1, ..Step::default() }; steps],
        bootstrap_value: 0.0,
    }
}

/// A node's learning side on its own (no market): 4-slot rollouts, learning
/// from `trainer`, stopped by `controller`.
async fn learner_node(
    trainer: &TrainerHandle,
    controller: &ShutdownController,
    name: &str,
) -> Result<peergrid_agent_node::learning::Learning> {
    let cfg = peergrid_agent_node::config::AgentConfig {
        name: name.into(),
        learner: Some(trainer.url().to_owned()),
        token: Some(
            peergrid_runtime::Secret::new("agent token", AGENT_TOKEN).expect("a valid test token"),
        ),
        rollout_slots: 4,
        learner_wait_ms: 60_000,
        ..peergrid_agent_node::config::AgentConfig::default()
    };
    Ok(peergrid_agent_node::learning::Learning::start(&cfg, controller.subscribe()).await?)
}

/// Nodes that announce their rollouts as they begin them are waited for
/// from the first one: with `min_nodes` 1, the cluster's first round takes
/// the rollouts of both nodes and drops nothing as stale (without the
/// announcement, node-a's rollout alone would close it and node-b's would
/// be stale, as in the test below).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_that_announce_their_first_rollout_both_feed_the_first_update() -> Result<()> {
    let (trainer, controller) = start_trainer(ppo(5), None, false).await?;
    let (mut a, mut b) = (
        learner_node(&trainer, &controller, "node-a").await?,
        learner_node(&trainer, &controller, "node-b").await?,
    );
    // Both policy streams are open before the rollouts begin (an agent-node
    // subscribes before it joins the market).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while trainer.learner.status().subscribers < 2 {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "2 policy subscribers within 10 s: {:?}",
            trainer.learner.status()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let first = trainer.learner.status().version;
    for slot in 0..4 {
        a.count_step(slot);
        b.count_step(slot);
    }
    // The announcements are sent in the background: wait until both are in.
    while trainer.learner.status().rollouts_awaited < 2 {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "both nodes' rollouts awaited within 10 s: {:?}",
            trainer.learner.status()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let a_pushes = tokio::spawn(async move {
        let next = a.exchange(vec![part(0, 4), part(1, 4)]).await;
        (next.map(|l| l.version), a.pushed, a.stale)
    });
    // node-a waits for node-b's rollout: the round is not closed without it.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(trainer.learner.status().version, first, "the round waits for node-b");
    let b_next =
        tokio::time::timeout(Duration::from_secs(30), b.exchange(vec![part(2, 4), part(3, 4)]))
            .await
            .context("node-b got no version within 30 s after its rollout")?;
    let (a_next, a_pushed, a_stale) = tokio::time::timeout(Duration::from_secs(30), a_pushes)
        .await
        .context("node-a got no version within 30 s")??;
    assert_eq!((a_next, b_next.map(|l| l.version)), (Some(first + 1), Some(first + 1)));
    assert_eq!(
        (a_pushed, a_stale, b.pushed, b.stale),
        (1, 0, 1, 0),
        "both rollouts accepted, none stale"
    );
    assert_eq!(trainer.learner.status().batches_stale, 0);
    controller.trigger();
    Ok(())
}

/// A node whose rollout is stale because the round closed without it acts
/// at once on the version that closed the round, even when that version
/// reached it before it pushed. After a trainer restart no node is "live"
/// yet, so the first rollout makes the update alone; a node that got there
/// later used to wait for a version after that one — which cannot come
/// while it holds the market's slot — until the market's hold expired
/// (the process-cluster test stalled on this).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_rollout_is_stale_acts_on_the_version_that_closed_the_round() -> Result<()> {
    let (trainer, controller) = start_trainer(ppo(5), None, false).await?;
    let (mut a, mut b) = (
        learner_node(&trainer, &controller, "node-a").await?,
        learner_node(&trainer, &controller, "node-b").await?,
    );
    let first = trainer.learner.status().version;
    assert_eq!((a.current().version, b.current().version), (first, first));
    // node-a's rollout closes the round on its own: neither node is live
    // yet, and node-b announces its rollout (as it plays its first slot)
    // only after the round closed — as after a trainer restart, which
    // forgets the announcements.
    for slot in 0..4 {
        a.count_step(slot);
    }
    let next = a
        .exchange(vec![part(0, 4), part(1, 4)])
        .await
        .context("node-a got no version after its rollout")?;
    assert_eq!(next.version, first + 1);
    for slot in 0..4 {
        b.count_step(slot);
    }
    // node-b's policy stream delivers that version before node-b pushes.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while b.newest_version() != Some(first + 1) {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "node-b's policy stream did not deliver version {} within 10 s (newest: {:?})",
            first + 1,
            b.newest_version()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let got =
        tokio::time::timeout(Duration::from_secs(10), b.exchange(vec![part(2, 4), part(3, 4)]))
            .await
            .context("node-b still waits for a version after the one that closed the round")?;
    assert_eq!(
        got.map(|l| l.version),
        Some(first + 1),
        "node-b acts on the version that closed the round"
    );
    assert_eq!((b.stale, b.pushed), (1, 0), "node-b's rollout was stale");
    controller.trigger();
    Ok(())
}
