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
//!   expires; a restarted node resumes its session and its id range;
//! - the same seed and settings train bit-identical weights as separate
//!   processes and as tasks of one process.

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
    let faults: usize =
        std::env::var("PEERGRID_FAULTS").ok().and_then(|v| v.parse().ok()).unwrap_or(20);
    let builder = ProcessClusterBuilder {
        nodes: vec![48, 48],
        // A short lease grace so the test sees a killed node leave; clearing
        // starts once both nodes joined, so both begin the first round (a
        // node that joins while a round closes may lose its first rollout
        // as stale: the newcomer case, not what this test is about).
        market_args: vec!["--lease-grace-ms=4000".into(), "--min-prosumers=96".into()],
        ..ProcessClusterBuilder::default()
    };
    let mut cluster = builder.start("integrity").await?;

    // At default timing learning advances and nothing is stale, from the
    // first round on (each node announces its first rollout as it begins
    // it, so min_nodes 1 does not update without the other), and nobody is
    // missing.
    let (_, warm) = cluster
        .wait("the trainer reaches version 3", Duration::from_secs(120), |_, t| t.version >= 3)
        .await?;
    assert_eq!(warm.batches_stale, 0, "no rollout is stale from the first round on: {warm:?}");
    let (m0, _) = cluster.statuses().await?;
    let steady = cluster.wait_for_learning(warm.version, 4, Duration::from_secs(120)).await?;
    let m1 = cluster.market_status().await?;
    assert_eq!(
        steady.batches_stale, 0,
        "no rollout is stale in synchronous steady state: {steady:?}"
    );
    let prosumer_slots = (m1.slot - m0.slot) * 96;
    let missing = m1.missing_reports - m0.missing_reports;
    assert!(
        missing * 100 < prosumer_slots,
        "missing {missing} of {prosumer_slots} prosumer-slots (≥ 1 %)"
    );
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
        let what =
            ["trainer restart", "market restart", "agent-node kill and restart"][fault as usize];
        // A resumed trainer continues from its last checkpoint, which may be
        // behind the version it had published: count from that.
        let from = cluster
            .wait("the trainer answers", FAULT_WINDOW, |_, _| true)
            .await?
            .1
            .version
            .min(before);
        cluster.wait_for_learning(from, 2, FAULT_WINDOW).await.map_err(|e| {
            e.context(format!(
                "fault {k} ({what}): learning did not advance 2 versions within {FAULT_WINDOW:?}"
            ))
        })?;
    }

    // A node that is killed and stays away: absent, then gone after its lease.
    cluster.kill_agent(1);
    let v = cluster.trainer_status().await?.version;
    cluster.wait_for_learning(v, 2, FAULT_WINDOW).await?;
    let (gone, _) = cluster
        .wait("the killed node's lease expires", Duration::from_secs(20), |m, _| {
            m.prosumers == 48 && m.absent_prosumers == 0
        })
        .await?;
    assert!(gone.leases_expired >= 1, "{gone:?}");
    assert_eq!(gone.nodes, 1);
    cluster.check_agents_alive()?;
    Ok(())
}

/// The same seed, node count and settings give bit-identical policy weights
/// after K synchronous updates whether the market, trainer and agent-nodes
/// run as separate processes or as tasks of one process (the library code
/// the binaries run, as `peergrid run` embeds it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn separate_processes_and_one_process_train_bit_identical_weights() -> Result<()> {
    use peergrid_core::data::citylearn::bundled_citylearn;
    use peergrid_e2e::cluster::{ClusterBuilder, AGENT_TOKEN, OPERATOR_TOKEN};
    use peergrid_runtime::auth::Tokens;
    use peergrid_trainer::config::TrainerConfig;

    const K: u64 = 3;
    const SEED: u64 = 11;
    let nodes = [24u32, 24];
    let policy_file = format!("checkpoints/policy-v{:06}.safetensors", K + 1);
    // Every node must play every slot: all join before slot 0 (min
    // prosumers), and a deadline no slot can miss on a loaded machine.
    let builder = ProcessClusterBuilder {
        nodes: nodes.to_vec(),
        seed: SEED,
        market_args: vec!["--min-prosumers=48".into(), "--deadline-ms=10000".into()],
        trainer_args: vec!["--min-nodes=2".into(), "--checkpoint-every=1".into()],
        ..ProcessClusterBuilder::default()
    };
    let mut processes = builder.start("bit-identical").await?;
    let (market, _) =
        processes.wait("K updates", Duration::from_secs(300), |_, t| t.version > K).await?;
    assert_eq!(market.missing_reports, 0);
    let wait_file = |path: std::path::PathBuf| async move {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while !path.exists() {
            anyhow::ensure!(std::time::Instant::now() < deadline, "waiting for {}", path.display());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(std::fs::read(&path)?)
    };
    let from_processes = wait_file(processes.dir.join("trainer").join(&policy_file)).await?;

    let dir = std::env::temp_dir().join(format!("peergrid-embedded-bits-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut config = TrainerConfig {
        listen: "127.0.0.1:0".parse()?,
        run_dir: Some(dir.clone()),
        ..TrainerConfig::default()
    };
    config.ppo.seed = SEED;
    config.learner.min_nodes = 2;
    config.learner.checkpoint_every = 1;
    let stop = peergrid_runtime::ShutdownController::new();
    let trainer = peergrid_trainer::start(
        config,
        Tokens::new(Some(AGENT_TOKEN.into()), Some(OPERATOR_TOKEN.into()))?,
        stop.subscribe(),
    )
    .await?;
    let cluster = ClusterBuilder {
        nodes: nodes.to_vec(),
        seed: SEED,
        deadline_ms: 10_000,
        learner: Some(trainer.url().to_owned()),
        ..ClusterBuilder::default()
    }
    .start(std::sync::Arc::new(bundled_citylearn()?))
    .await?;
    let embedded = wait_file(dir.join(&policy_file)).await?;
    assert_eq!(cluster.status().await?.missing_reports, 0);
    cluster.stop().await?;
    stop.trigger();
    trainer.join().await?;
    // Compare what the files hold (the safetensors header's metadata order
    // is not fixed), bit for bit: every f32 and the normaliser.
    let read = |bytes: &[u8]| peergrid_core::policy::weights::from_safetensors(bytes);
    let (from_processes, embedded) = (read(&from_processes)?, read(&embedded)?);
    let bits = |w: &peergrid_core::policy::weights::PolicyWeights| {
        let flat: Vec<u32> = w.net.to_flat().iter().map(|x| x.to_bits()).collect();
        (w.version, flat, format!("{:?}", w.normaliser))
    };
    assert!(
        bits(&from_processes) == bits(&embedded),
        "policy v{} differs between separate processes ({}) and one process ({})",
        K + 1,
        processes.dir.display(),
        dir.display()
    );
    processes.stop()?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// The cluster plays a CSV dataset as `peergrid run --dataset citylearn-csv`
/// does: the market-node and the agent-nodes read the same flags through the
/// same loader, agree on the dataset's name, and trade with nobody missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_of_processes_plays_a_csv_dataset() -> Result<()> {
    let csv = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../data/citylearn2022/fontana_hourly.csv");
    let dataset =
        vec!["--dataset=citylearn-csv".to_owned(), format!("--data-file={}", csv.display())];
    let builder = ProcessClusterBuilder {
        nodes: vec![8, 8],
        market_args: dataset.clone(),
        agent_args: dataset,
        ..ProcessClusterBuilder::default()
    };
    let mut cluster = builder.start("csv-dataset").await?;
    let (m0, _) = cluster.statuses().await?;
    let (m1, _) = cluster
        .wait("the market clears 24 slots", Duration::from_secs(60), |m, _| m.slot >= m0.slot + 24)
        .await?;
    let missing = m1.missing_reports - m0.missing_reports;
    assert!(
        missing * 100 < (m1.slot - m0.slot) * 16,
        "missing {missing} prosumer-slots (≥ 1 %): {m1:?}"
    );
    assert_eq!((m1.nodes, m1.prosumers), (2, 16));
    let logs = cluster.logs(400);
    let on_csv = logs.lines().filter(|l| {
        l.contains("started one actor per prosumer") && l.contains("fontana_hourly.csv")
    });
    assert_eq!(
        on_csv.count(),
        2,
        "both agent-nodes play the CSV (named by its file), not the bundled data:\n{logs}"
    );

    // The operator's compact views of the live market: `ctl watch` as CSV
    // (a header, then a row per slot) and as JSON lines.
    let ctl = |format: &str| -> Result<String> {
        let out = std::process::Command::new(peergrid_e2e::processes::binary("peergrid")?)
            .args([
                "ctl",
                "--market",
                &cluster.market_url(),
                "--format",
                format,
                "watch",
                "--count",
                "5",
            ])
            .env("PEERGRID_OPERATOR_TOKEN", peergrid_e2e::cluster::OPERATOR_TOKEN)
            .env_remove("PEERGRID_OPERATOR_TOKEN_FILE")
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "ctl watch --format {format}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8(out.stdout)?)
    };
    let csv = ctl("csv")?;
    let rows: Vec<Vec<&str>> = csv.lines().map(|l| l.split(',').collect()).collect();
    assert_eq!(rows.len(), 6, "a header and 5 slots:\n{csv}");
    assert_eq!(rows[0][..2], ["slot", "data_slot"], "{csv}");
    assert!(
        rows.iter().all(|r| r.len() == rows[0].len()),
        "every row has the header's columns:\n{csv}"
    );
    let slots: Vec<u64> = rows[1..].iter().map(|r| r[0].parse()).collect::<Result<_, _>>()?;
    assert!(slots.windows(2).all(|w| w[1] == w[0] + 1), "consecutive slots: {slots:?}");
    let reported = rows[0].iter().position(|c| *c == "reported").expect("a reported column");
    assert!(
        rows[1..].iter().all(|r| r[reported] == "16"),
        "every prosumer reported every slot:\n{csv}"
    );
    let jsonl = ctl("jsonl")?;
    let lines: Vec<serde_json::Value> =
        jsonl.lines().map(serde_json::from_str).collect::<Result<_, _>>()?;
    assert_eq!(lines.len(), 5, "{jsonl}");
    assert!(lines.iter().all(|v| v["reported"] == 16 && v["slot"].is_u64()), "{jsonl}");
    cluster.stop()
}
