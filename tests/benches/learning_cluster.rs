//! Learning throughput, cluster against embedded: end-to-end agent-steps per
//! second with synchronous PPO on, and the share of the experience played
//! that the learner used, for 2 and 4 agent-nodes with 24 and 1,000
//! prosumers in all.
//!
//! - *cluster*: separate `market-node`, `trainer` and `agent-node`
//!   processes (the release binaries next to this bench) at their default
//!   timing, over loopback TCP;
//! - *embedded*: the same three as tasks of this process (the library code
//!   the binaries run), over loopback TCP, same settings.
//!
//! Both are measured after warm-up (from policy version 2) over `U`
//! updates: agent-steps/s = slots cleared × prosumers / wall seconds;
//! experience used = samples the learner accepted / (updates × rollout
//! slots × prosumers), i.e. the share of every node's rollouts that made it
//! into an update (synchronous nodes play one rollout per update).
//! Prints a Markdown table.
//!
//! Run: `cargo build --release --bins && cargo bench -p peergrid-e2e --bench learning_cluster`
//! (`BENCH_QUICK=1`: 2 nodes × 24 prosumers only).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use peergrid_core::data::citylearn::bundled_citylearn;
use peergrid_e2e::cluster::{ClusterBuilder, AGENT_TOKEN, OPERATOR_TOKEN};
use peergrid_e2e::processes::ProcessClusterBuilder;
use peergrid_runtime::auth::Tokens;
use peergrid_runtime::ShutdownController;
use peergrid_trainer::config::TrainerConfig;

/// The agent-node's default rollout length, slots.
const ROLLOUT_SLOTS: u64 = 48;

/// One measurement: (agent-steps/s, share of experience used).
struct Measured {
    steps_per_s: f64,
    used: f64,
}

fn measured(slots: u64, samples: u64, updates: u64, prosumers: u32, secs: f64) -> Measured {
    let per_update = (ROLLOUT_SLOTS * prosumers as u64) as f64;
    Measured {
        steps_per_s: (slots * prosumers as u64) as f64 / secs,
        used: samples as f64 / (updates as f64 * per_update),
    }
}

async fn cluster(nodes: u32, prosumers: u32, updates: u64) -> Result<Measured> {
    let builder = ProcessClusterBuilder {
        nodes: vec![prosumers / nodes; nodes as usize],
        // As a user who knows the cluster's size would start it.
        trainer_args: vec![format!("--min-nodes={nodes}")],
        ..ProcessClusterBuilder::default()
    };
    let mut c = builder.start(&format!("bench-{nodes}x{prosumers}")).await?;
    let timeout = Duration::from_secs(600);
    let (m0, t0) = c.wait("version 2 (warm-up)", timeout, |_, t| t.version >= 2).await?;
    let started = Instant::now();
    let (m1, t1) =
        c.wait("the measured updates", timeout, |_, t| t.version >= t0.version + updates).await?;
    let secs = started.elapsed().as_secs_f64();
    c.stop()?;
    Ok(measured(
        m1.slot - m0.slot,
        t1.samples_total - t0.samples_total,
        t1.version - t0.version,
        prosumers,
        secs,
    ))
}

async fn embedded(nodes: u32, prosumers: u32, updates: u64) -> Result<Measured> {
    let ds = Arc::new(bundled_citylearn()?);
    let mut config = TrainerConfig { listen: "127.0.0.1:0".parse()?, ..TrainerConfig::default() };
    config.learner.min_nodes = nodes as usize;
    let tokens = Tokens::new(Some(AGENT_TOKEN.into()), Some(OPERATOR_TOKEN.into()))?;
    let stop = ShutdownController::new();
    let trainer = peergrid_trainer::start(config, tokens, stop.subscribe()).await?;
    let cluster = ClusterBuilder {
        nodes: vec![prosumers / nodes; nodes as usize],
        // The market's default deadline, as in the cluster.
        deadline_ms: 200,
        learner: Some(trainer.url().to_owned()),
        ..ClusterBuilder::default()
    }
    .start(ds)
    .await?;
    let wait = |v: u64| {
        let learner = trainer.learner.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(600);
            while learner.status().version < v {
                ensure!(
                    Instant::now() < deadline,
                    "embedded run stuck at version {}",
                    learner.status().version
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Ok(learner.status())
        }
    };
    let t0 = wait(2).await?;
    let m0 = cluster.status().await?;
    let started = Instant::now();
    let t1 = wait(t0.version + updates).await?;
    let m1 = cluster.status().await?;
    let secs = started.elapsed().as_secs_f64();
    cluster.stop().await?;
    stop.trigger();
    trainer.join().await?;
    Ok(measured(
        m1.slot - m0.slot,
        t1.samples_total - t0.samples_total,
        t1.version - t0.version,
        prosumers,
        secs,
    ))
}

fn main() -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let quick = std::env::var_os("BENCH_QUICK").is_some();
    let cases: &[(u32, u32, u64)] = if quick {
        &[(2, 24, 6)]
    } else {
        &[(2, 24, 10), (4, 24, 10), (2, 1_000, 3), (4, 1_000, 3)]
    };
    println!("| nodes | prosumers | updates | cluster agent-steps/s | embedded agent-steps/s | cluster / embedded | experience used (cluster / embedded) |");
    println!("| ----: | --------: | ------: | --------------------: | ---------------------: | -----------------: | ----------------------------------: |");
    for &(nodes, prosumers, updates) in cases {
        let c = rt.block_on(cluster(nodes, prosumers, updates))?;
        let e = rt.block_on(embedded(nodes, prosumers, updates))?;
        println!(
            "| {nodes} | {prosumers} | {updates} | {:.0} | {:.0} | {:.0} % | {:.1} % / {:.1} % |",
            c.steps_per_s,
            e.steps_per_s,
            100.0 * c.steps_per_s / e.steps_per_s,
            100.0 * c.used,
            100.0 * e.used
        );
    }
    Ok(())
}
