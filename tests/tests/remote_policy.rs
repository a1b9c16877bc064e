//! An external policy end to end: a market-node and an agent-node with
//! `policy: remote:URL` over real gRPC on loopback, the policy being the
//! stand-in service of `peergrid_e2e::remote_policy` (decoding every request
//! with the proto crate's validated conversion).

use std::sync::Arc;
use std::time::{Duration, Instant};

use peergrid_agent_node::PolicyChoice;
use peergrid_core::data::citylearn::bundled_citylearn;
use peergrid_core::data::Dataset;
use peergrid_e2e::cluster::ClusterBuilder;
use peergrid_e2e::remote_policy::{Behaviour, StandInPolicy, CHARGE};

/// Feature indices (`peergrid_core::observation::FEATURE_NAMES`).
const SOC: usize = 2;
const BATTERY_CAPACITY_KWH: usize = 3;
const BATTERY_AVAILABLE: usize = 4;

fn dataset() -> Arc<Dataset> {
    Arc::new(bundled_citylearn().expect("bundled data"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_remote_policy_decides_every_slot_and_the_households_play_its_actions() {
    let policy = StandInPolicy::start(Behaviour::Fixed(CHARGE)).await.unwrap();
    let builder = ClusterBuilder {
        policy: PolicyChoice::Remote(policy.url()),
        start_slot: 100,
        ..ClusterBuilder::default()
    }
    .nodes(&[6])
    .max_slots(24);
    let cluster = builder.start(dataset()).await.unwrap();
    let (status, reports) = cluster.finish().await.unwrap();

    // The market: every report arrived, and nothing was offered P2P (the
    // policy's quantity is −1), which the rule-based default never does.
    assert_eq!(status.missing_reports, 0, "{status:?}");
    let kpis = status.kpis.expect("status carries KPIs");
    assert_eq!(kpis.slots, 24);
    assert_eq!(kpis.p2p_kwh, 0.0, "quantity −1 offers nothing: {kpis:?}");
    // Charging only: conversion losses, but no discharge (cycles count discharged energy).
    assert!(kpis.battery_losses_kwh > 0.0, "the batteries charged: {kpis:?}");
    assert_eq!(kpis.battery_cycles, 0.0, "and never discharged: {kpis:?}");
    assert_eq!(
        (reports[0].remote_policy_calls, reports[0].remote_policy_fallbacks),
        (24, 0),
        "{:?}",
        reports[0]
    );

    // The service: one call per slot for all six prosumers, each after the
    // first carrying the previous slot's outcome.
    let seen = policy.seen();
    assert_eq!(seen.len(), 24);
    for (i, b) in seen.iter().enumerate() {
        assert_eq!(b.slot, seen[0].slot + i as u64, "consecutive slots");
        assert_eq!(b.prosumer_ids, (0..6).collect::<Vec<u32>>());
        assert_eq!(b.node_name, "node-0");
        match (&b.previous, i) {
            (None, 0) => {}
            (Some(p), i) if i > 0 => {
                assert_eq!(
                    (p.slot, p.remote_actions, p.outcomes.len()),
                    (b.slot - 1, true, 6),
                    "slot {}",
                    b.slot
                );
                assert!(p.outcomes.iter().all(|o| o.settled_by_market), "slot {}: {p:?}", b.slot);
            }
            (p, i) => panic!("call {i}: unexpected previous {p:?}"),
        }
    }
    // The households played "charge": no battery's SoC ever fell while it
    // was at home, and the batteries filled up.
    let mut rose = 0.0f32;
    for p in 0..6 {
        for w in seen.windows(2) {
            let (a, b) = (&w[0].observations[p], &w[1].observations[p]);
            if a[BATTERY_CAPACITY_KWH] > 0.0
                && a[BATTERY_AVAILABLE] == 1.0
                && b[BATTERY_AVAILABLE] == 1.0
            {
                assert!(
                    b[SOC] >= a[SOC] - 1e-6,
                    "prosumer {p}: SoC fell from {} to {} at slot {}",
                    a[SOC],
                    b[SOC],
                    w[1].slot
                );
            }
        }
        rose = rose.max(seen[23].observations[p][SOC] - seen[0].observations[p][SOC]);
    }
    assert!(rose > 0.3, "some battery charged by more than 30 % of its capacity (rose {rose})");
}

/// Polls `what` until it holds (bounded), failing with what it waited for.
async fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting until {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_policy_holds_the_market_and_a_gone_or_hung_one_falls_back_without_losing_a_report()
{
    let mut policy =
        StandInPolicy::start(Behaviour::Slow(CHARGE, Duration::from_millis(1_500))).await.unwrap();
    let builder = ClusterBuilder {
        policy: PolicyChoice::Remote(policy.url()),
        deadline_ms: 500,
        remote_policy_timeout_ms: 4_000,
        ..ClusterBuilder::default()
    }
    .nodes(&[4]);
    let cluster = builder.start(dataset()).await.unwrap();

    // Slow (1.5 s a slot against a 500 ms deadline): the market holds each
    // slot for the node instead of clearing without it.
    let start = cluster.status().await.unwrap();
    let slow = cluster.wait_for_slot(start.slot + 3).await.unwrap();
    assert_eq!(slow.missing_reports, 0, "held, not missing: {slow:?}");
    assert!(slow.holds >= 3, "{slow:?}");
    assert_eq!(slow.holds_expired, 0, "{slow:?}");
    let answered_slow = policy.seen().len();
    assert!(answered_slow >= 3, "every held slot was answered: {answered_slow}");

    // Gone: the node plays the rule-based action, reports on, stays up.
    policy.stop();
    let before = cluster.status().await.unwrap();
    let gone = cluster.wait_for_slot(before.slot + 5).await.unwrap();
    assert_eq!(gone.missing_reports, 0, "{gone:?}");
    assert!(cluster.agent_running(0), "the node keeps running without its policy");

    // Hung: answers come after 8 s, past the node's 4 s timeout.
    policy.restart().await.unwrap();
    policy.set(Behaviour::Slow(CHARGE, Duration::from_secs(8)));
    // (The node may still be backing off: wait until it called the hung
    // policy twice — each call a held slot — and the market moved on.)
    let before = cluster.status().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let hung = loop {
        let s = cluster.status().await.unwrap();
        if s.holds >= before.holds + 2 && s.slot >= before.slot + 3 {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for two held calls to the hung policy: {before:?} → {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(hung.missing_reports, 0, "{hung:?}");
    assert!(cluster.agent_running(0));

    // Back: after its backoff the node calls the service again.
    // (A hung call's handler may still finish late; count answers to new slots only.)
    policy.set(Behaviour::Fixed(CHARGE));
    let since = cluster.status().await.unwrap().slot;
    let answered_since = || policy.seen().iter().filter(|b| b.slot >= since).count();
    wait_for("the node calls the service again for 3 new slots", Duration::from_secs(30), || {
        answered_since() >= 3
    })
    .await;
    let (status, reports) = cluster.stop().await.unwrap();
    assert_eq!(status.missing_reports, 0, "{status:?}");
    let report = &reports[0];
    assert!(report.remote_policy_fallbacks >= 5 + 3, "gone and hung slots fell back: {report:?}");
    assert!(report.remote_policy_calls >= answered_slow as u64 + 3, "{report:?}");
    assert_eq!(
        report.slots_played,
        report.remote_policy_calls + report.remote_policy_fallbacks,
        "{report:?}"
    );
}

/// `peergrid eval --policy remote:URL`: the service plays the learned row
/// of a whole evaluation, one call per slot for every prosumer; a service
/// that stops answering fails the command (exit 1, the slot named) and no
/// report is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peergrid_eval_evaluates_a_remote_policy_and_refuses_one_that_fails() {
    let bin = peergrid_e2e::processes::binary("peergrid").unwrap();
    let mut policy = StandInPolicy::start(Behaviour::Fixed(CHARGE)).await.unwrap();
    let dir = std::env::temp_dir().join(format!("peergrid-eval-remote-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let eval = |url: String, out: std::path::PathBuf| {
        let bin = bin.clone();
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(bin)
                .args(["eval", "--policy", &format!("remote:{url}"), "--prosumers", "6"])
                .args(["--days", "1-2", "--optimum", "off", "--json", "--out"])
                .arg(&out)
                .args(["--remote-policy-timeout-ms", "2000"])
                .env_remove("PEERGRID_AGENT_TOKEN")
                .output()
                .unwrap()
        })
    };
    let done = eval(policy.url(), dir.join("ok")).await.unwrap();
    let stderr = String::from_utf8_lossy(&done.stderr);
    assert!(done.status.success(), "{stderr}");
    assert!(stderr.contains("48 slots answered"), "{stderr}");
    let kpis: serde_json::Value = serde_json::from_slice(&done.stdout).unwrap();
    assert_eq!(kpis["policies"][2]["policy"], "learned");
    // Charging whenever possible, never offering P2P: the rule-based row trades.
    assert_eq!(kpis["policies"][2]["kpis"]["p2p_kwh"], 0.0);
    assert!(kpis["policies"][1]["kpis"]["p2p_kwh"].as_f64().unwrap() > 0.0);
    let seen = policy.seen();
    assert_eq!(seen.len(), 48, "one call per slot");
    assert!(seen.iter().all(|b| b.node_name == "peergrid-eval" && b.prosumer_ids.len() == 6));
    assert_eq!(seen.iter().map(|b| b.slot).collect::<Vec<_>>(), (0..48).collect::<Vec<_>>());

    // Gone from the start: the connection fails, exit 1, nothing written.
    policy.stop();
    let failed = eval(policy.url(), dir.join("gone")).await.unwrap();
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert_eq!(failed.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("remote policy"), "{stderr}");
    assert!(!dir.join("gone/kpis.json").exists());
    // Slow beyond the timeout mid-run: the slot is named, no report.
    policy.restart().await.unwrap();
    policy.set(Behaviour::Slow(CHARGE, Duration::from_secs(5)));
    let slow = eval(policy.url(), dir.join("slow")).await.unwrap();
    let stderr = String::from_utf8_lossy(&slow.stderr);
    assert_eq!(slow.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("failed slot 0") && stderr.contains("no answer within 2000 ms"),
        "{stderr}"
    );
    assert!(!dir.join("slow/kpis.json").exists());
    let _ = std::fs::remove_dir_all(&dir);
}

/// `peergrid run --policy remote:URL`: the service takes the trainer's
/// place. The embedded cluster plays `--updates × --rollout-slots` slots of
/// the training days, each agent-node asking the service once per slot for
/// its prosumers' actions and passing it the outcome of the slot before
/// (what a learner learns from); then the service is evaluated on the test
/// days as `peergrid eval --policy remote:URL` does, and the report written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peergrid_run_plays_the_training_days_through_a_remote_policy_then_evaluates_it() {
    let bin = peergrid_e2e::processes::binary("peergrid").unwrap();
    let policy = StandInPolicy::start(Behaviour::Fixed(CHARGE)).await.unwrap();
    let dir = std::env::temp_dir().join(format!("peergrid-run-remote-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let url = policy.url();
    let out = dir.clone();
    let done = tokio::task::spawn_blocking(move || {
        std::process::Command::new(bin)
            .args(["run", "--policy", &format!("remote:{url}"), "--prosumers", "6"])
            .args(["--nodes", "2", "--updates", "2", "--rollout-slots", "12", "--quiet"])
            .args(["--days", "1-2", "--optimum", "off", "--mpc", "off", "--json", "--out"])
            .arg(&out)
            .env_remove("PEERGRID_AGENT_TOKEN")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&done.stderr);
    // The status names a signal too (a SIGPIPE once killed it silently).
    assert!(done.status.success(), "{}: {stderr}", done.status);
    assert!(stderr.contains("played 24 training slots"), "{stderr}");
    assert!(stderr.contains("48 node-slots decided by it, 0 rule-based"), "{stderr}");
    assert!(stderr.contains("48 slots answered"), "{stderr}");
    let kpis: serde_json::Value = serde_json::from_slice(&done.stdout).unwrap();
    assert_eq!(kpis["policies"][2]["policy"], "learned");
    assert_eq!(kpis["policies"][2]["kpis"]["p2p_kwh"], 0.0, "the service's actions were played");
    assert!(dir.join("report.md").exists());

    let seen = policy.seen();
    let (eval, train): (Vec<_>, Vec<_>) = seen.iter().partition(|b| b.node_name == "peergrid-eval");
    assert_eq!(train.len(), 48, "one call per slot from each of the two nodes");
    for node in ["node-0", "node-1"] {
        let calls: Vec<_> = train.iter().filter(|b| b.node_name == node).collect();
        assert_eq!(calls.iter().map(|b| b.slot).collect::<Vec<_>>(), (0..24).collect::<Vec<_>>());
        assert!(calls.iter().all(|b| b.prosumer_ids.len() == 3), "{node}: its three prosumers");
        // From the second slot on, each call carries the slot settled before.
        for pair in calls.windows(2) {
            let feedback = pair[1].previous.as_ref().expect("feedback of the slot before");
            assert_eq!(feedback.slot, pair[0].slot, "{node}");
            assert!(feedback.remote_actions, "{node}: the service's actions were played");
            assert_eq!(feedback.outcomes.len(), 3, "{node}");
        }
    }
    assert_eq!(eval.len(), 48, "one call per evaluated slot");
    assert!(eval.iter().all(|b| b.prosumer_ids.len() == 6 && b.previous.is_none()));
    let _ = std::fs::remove_dir_all(&dir);
}
