//! The cluster as users run it: separate market-node, trainer and
//! agent-node processes, learning on, the binaries' default timing (fast
//! market, 200 ms deadline, synchronous trainer with `min_nodes` 1, 48-slot
//! rollouts), real tokens, and faults at seeded random moments.
//!
//! What must hold (the cluster-integrity issue):
//! - market time and learning agree: with learning on, no rollout is stale
//!   in steady state and missing reports stay below 1 % of prosumer-slots;
//! - no agent-node ever exits because of timing or a restart elsewhere;
//! - after every fault (trainer restart, market restart, agent-node kill
//!   and restart) learning advances by at least two versions within 30 s;
//! - a killed node's households are absent, then leave when its lease
//!   expires; a restarted node resumes its session and its id range.

use std::time::Duration;

use anyhow::Result;
use peergrid_e2e::processes::ProcessClusterBuilder;

const FAULT_WINDOW: Duration = Duration::from_secs(30);

/// A small seeded generator (xorshift64*): the faults' order and timing.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_learning_cluster_of_processes_keeps_its_integrity_through_faults() -> Result<()> {
    let faults: usize = std::env::var("PEERGRID_FAULTS").ok().and_then(|v| v.parse().ok()).unwrap_or(6);
    let builder = ProcessClusterBuilder {
        nodes: vec![48, 48],
        // A short lease grace so the test sees a killed node leave.
        market_args: vec!["--lease-grace-ms=4000".into()],
        ..ProcessClusterBuilder::default()
    };
    let mut cluster = builder.start("integrity").await?;

    // Steady state at default timing: learning advances, nothing is stale
    // after the first round (min_nodes 1 may update before the second
    // node's first rollout arrives), nobody is missing.
    let (_, warm) = cluster.wait("the trainer reaches version 3", Duration::from_secs(120), |_, t| t.version >= 3).await?;
    let (m0, _) = cluster.statuses().await?;
    let steady = cluster.wait_for_learning(warm.version, 4, Duration::from_secs(120)).await?;
    let m1 = cluster.market_status().await?;
    assert_eq!(steady.batches_stale, warm.batches_stale, "no rollout is stale in synchronous steady state");
    let prosumer_slots = (m1.slot - m0.slot) * 96;
    let missing = m1.missing_reports - m0.missing_reports;
    assert!(missing * 100 < prosumer_slots, "missing {missing} of {prosumer_slots} prosumer-slots (≥ 1 %)");
    assert!(m1.holds > m0.holds, "nodes held slots while the learner updated: {m1:?}");
    assert_eq!((m1.absent_prosumers, m1.nodes, m1.prosumers), (0, 2, 96));

    // Faults at seeded random moments: after each one, learning goes on.
    let mut rng = Rng(0x5eed_0000_0000_0011);
    for k in 0..faults {
        tokio::time::sleep(Duration::from_millis(500 + rng.next() % 4_000)).await;
        let before = cluster.trainer_status().await?.version;
        let fault = rng.next() % 3;
        match fault {
            0 => cluster.restart_trainer()?,
            1 => cluster.restart_market()?,
            _ => {
                let i = (rng.next() % cluster.agents() as u64) as usize;
                cluster.kill_agent(i);
                tokio::time::sleep(Duration::from_millis(rng.next() % 2_000)).await;
                cluster.restart_agent(i)?;
            }
        }
        let what = ["trainer restart", "market restart", "agent-node kill and restart"][fault as usize];
        // A resumed trainer continues from its last checkpoint, which may be
        // behind the version it had published: count from that.
        let from = cluster.wait("the trainer answers", FAULT_WINDOW, |_, _| true).await?.1.version.min(before);
        cluster
            .wait_for_learning(from, 2, FAULT_WINDOW)
            .await
            .map_err(|e| e.context(format!("fault {k} ({what}): learning did not advance 2 versions within {FAULT_WINDOW:?}")))?;
    }

    // A node that is killed and stays away: absent, then gone after its lease.
    cluster.kill_agent(1);
    let v = cluster.trainer_status().await?.version;
    cluster.wait_for_learning(v, 2, FAULT_WINDOW).await?;
    let (gone, _) = cluster
        .wait("the killed node's lease expires", Duration::from_secs(20), |m, _| m.prosumers == 48 && m.absent_prosumers == 0)
        .await?;
    assert!(gone.leases_expired >= 1, "{gone:?}");
    assert_eq!(gone.nodes, 1);
    cluster.check_agents_alive()?;
    Ok(())
}
