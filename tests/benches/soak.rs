//! Memory over time: does anything grow that should not?
//!
//! - `subscriptions`: 10,000 `SubscribePolicy` calls against a trainer
//!   process, each reading the first policy version and then cancelled by
//!   the client. The trainer's RSS and its subscriber count are sampled
//!   every 1,000 cycles: a leaked subscription keeps its stream, its copy
//!   of the weights and its place in the learner's live set.
//! - `soak`: 10,000 prosumers on 4 learning agent-nodes (separate
//!   `market-node`, `trainer` and `agent-node` processes at their default
//!   timing) for `SOAK_MINUTES` (10); every process's RSS sampled every
//!   10 s. Reported: each process's RSS after warm-up (the first fifth of
//!   the run) and at the end, and the least-squares slope over the
//!   samples after warm-up, as MiB/min and as % of the post-warm-up RSS
//!   over the whole run (target: within 5 %).
//!
//! Run: `cargo build --release --bins && cargo bench -p peergrid-e2e --bench soak [-- subscriptions|soak]`
//! (`SOAK_MINUTES=N` shortens the soak). Prints Markdown tables.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use peergrid_e2e::cluster::AGENT_TOKEN;
use peergrid_e2e::processes::{ProcessCluster, ProcessClusterBuilder};
use peergrid_proto::pb::learner::v1 as pb;
use peergrid_proto::pb::learner::v1::learner_service_client::LearnerServiceClient;
use peergrid_runtime::BearerInterceptor;
use tonic::transport::Endpoint;

const CYCLES: usize = 10_000;
const SAMPLE_EVERY: usize = 1_000;

/// Resident set size of process `pid`, MiB (from /proc/PID/status).
fn rss_mib(pid: u32) -> Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("process {pid} is gone"))?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("no VmRSS line")?;
    Ok(kib / 1024.0)
}

fn pid_of(cluster: &ProcessCluster, name: &str) -> Result<u32> {
    cluster
        .pids()
        .into_iter()
        .find(|(n, _)| n == name)
        .map(|(_, p)| p)
        .with_context(|| format!("no {name} process"))
}

/// Least-squares slope of `ys` over `xs`.
fn slope(xs: &[f64], ys: &[f64]) -> f64 {
    let n = xs.len() as f64;
    let (mx, my) = (xs.iter().sum::<f64>() / n, ys.iter().sum::<f64>() / n);
    let sxy: f64 = xs.iter().zip(ys).map(|(x, y)| (x - mx) * (y - my)).sum();
    let sxx: f64 = xs.iter().map(|x| (x - mx) * (x - mx)).sum();
    if sxx > 0.0 {
        sxy / sxx
    } else {
        0.0
    }
}

async fn subscriptions() -> Result<()> {
    let cluster = ProcessClusterBuilder { nodes: Vec::new(), ..ProcessClusterBuilder::default() }
        .start("soak-subs")
        .await?;
    let trainer = pid_of(&cluster, "trainer")?;
    let channel = Endpoint::from_shared(cluster.trainer_url())?.connect().await?;
    let mut client =
        LearnerServiceClient::with_interceptor(channel, BearerInterceptor::new(AGENT_TOKEN)?);
    println!("\n### {CYCLES} subscribe/cancel cycles against the trainer\n");
    println!("| cycles | trainer RSS MiB | subscribers | cycles/s |");
    println!("| ---: | ---: | ---: | ---: |");
    let started = Instant::now();
    let mut samples = Vec::new();
    for cycle in 0..=CYCLES {
        if cycle % SAMPLE_EVERY == 0 {
            // Give the server a moment to see the last cancellation.
            tokio::time::sleep(Duration::from_millis(200)).await;
            let status = cluster.trainer_status().await?;
            let rss = rss_mib(trainer)?;
            let rate = cycle as f64 / started.elapsed().as_secs_f64();
            println!("| {cycle} | {rss:.1} | {} | {rate:.0} |", status.subscribers);
            samples.push((cycle as f64, rss, status.subscribers));
        }
        if cycle == CYCLES {
            break;
        }
        let request =
            pb::SubscribeRequest { node_name: format!("soak-{}", cycle % 100), after_version: 0 };
        let mut stream = client.subscribe_policy(request).await?.into_inner();
        let first = tokio::time::timeout(Duration::from_secs(10), stream.message())
            .await
            .context("no first version within 10 s")??;
        if first.is_none() {
            bail!("cycle {cycle}: the stream ended without a version");
        }
        drop(stream);
    }
    let after_warmup: Vec<_> = samples.iter().skip(2).collect();
    let xs: Vec<f64> = after_warmup.iter().map(|s| s.0).collect();
    let ys: Vec<f64> = after_warmup.iter().map(|s| s.1).collect();
    let per_10k = slope(&xs, &ys) * 10_000.0;
    let leaked = samples.last().map_or(0, |s| s.2);
    println!(
        "\nfrom {} cycles on: {per_10k:+.2} MiB per 10,000 cycles ({:+.1} % of {:.1} MiB); subscribers left open: {leaked}",
        SAMPLE_EVERY * 2,
        per_10k / ys[0] * 100.0,
        ys[0]
    );
    cluster.stop()
}

async fn soak() -> Result<()> {
    let minutes: u64 =
        std::env::var("SOAK_MINUTES").ok().and_then(|v| v.parse().ok()).unwrap_or(10);
    let builder = ProcessClusterBuilder {
        nodes: vec![2_500; 4],
        market_args: vec!["--min-prosumers=10000".into()],
        trainer_args: vec!["--min-nodes=4".into()],
        ..ProcessClusterBuilder::default()
    };
    let mut cluster = builder.start("soak").await?;
    let pids = cluster.pids();
    let names: Vec<&str> = pids.iter().map(|(n, _)| n.as_str()).collect();
    println!("\n### Soak: 10,000 prosumers on 4 learning agent-nodes, {minutes} min, RSS MiB every 10 s\n");
    println!("| min | slot | version | {} |", names.join(" | "));
    println!("| ---: | ---: | ---: |{}", " ---: |".repeat(names.len()));
    let started = Instant::now();
    let total = Duration::from_secs(minutes * 60);
    let mut series: Vec<Vec<(f64, f64)>> = vec![Vec::new(); pids.len()];
    while started.elapsed() < total {
        cluster.check_agents_alive()?;
        let t = started.elapsed().as_secs_f64() / 60.0;
        let mut row = Vec::new();
        for (i, (_, pid)) in pids.iter().enumerate() {
            let rss = rss_mib(*pid)?;
            series[i].push((t, rss));
            row.push(format!("{rss:.0}"));
        }
        let (m, l) = cluster.statuses().await?;
        println!("| {t:.1} | {} | {} | {} |", m.slot, l.version, row.join(" | "));
        tokio::time::sleep(Duration::from_secs(10)).await;
    }
    let (m, l) = cluster.statuses().await?;
    println!(
        "\nslots cleared: {}, missing reports: {}, policy version: {}, stale rollouts: {}",
        m.slot, m.missing_reports, l.version, l.batches_stale
    );
    // SIGTERM the trainer while the market is held for its update (the
    // slot does not move for a second), and time its exit.
    let held = Instant::now();
    loop {
        let before = cluster.market_status().await?.slot;
        tokio::time::sleep(Duration::from_secs(1)).await;
        if cluster.market_status().await?.slot == before
            || held.elapsed() > Duration::from_secs(180)
        {
            break;
        }
    }
    let signalled = Instant::now();
    cluster.restart_trainer()?;
    let exit = signalled.elapsed();
    let log = std::fs::read_to_string(cluster.dir.join("trainer.log")).unwrap_or_default();
    println!(
        "trainer SIGTERMed while the market was held for its update: exited and restarted in {:.1} s; updates interrupted: {}",
        exit.as_secs_f64(),
        log.matches("update interrupted and undone").count()
    );
    println!(
        "\n| process | RSS after warm-up MiB | RSS at end MiB | slope MiB/min | over the run |"
    );
    println!("| --- | ---: | ---: | ---: | ---: |");
    for ((name, _), s) in pids.iter().zip(&series) {
        let warm = s.len() / 5;
        let rest = &s[warm..];
        let xs: Vec<f64> = rest.iter().map(|p| p.0).collect();
        let ys: Vec<f64> = rest.iter().map(|p| p.1).collect();
        let k = slope(&xs, &ys);
        let span = xs.last().unwrap_or(&0.0) - xs.first().unwrap_or(&0.0);
        println!(
            "| {name} | {:.0} | {:.0} | {k:+.2} | {:+.1} % |",
            ys.first().unwrap_or(&0.0),
            ys.last().unwrap_or(&0.0),
            k * span / ys.first().copied().unwrap_or(1.0).max(1.0) * 100.0
        );
    }
    cluster.stop()
}

fn main() -> Result<()> {
    let which: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let wants = |name: &str| which.is_empty() || which.iter().any(|w| w == name);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    if wants("subscriptions") {
        rt.block_on(subscriptions())?;
    }
    if wants("soak") {
        rt.block_on(soak())?;
    }
    Ok(())
}
