//! The distributed simulation end to end: a market-node and agent-nodes
//! talking real gRPC over loopback, checked against the reference simulator.

use std::sync::Arc;

use peergrid_core::data::citylearn::bundled_citylearn;
use peergrid_core::data::Dataset;
use peergrid_core::kpi::Kpis;
use peergrid_core::policy::RuleBased;
use peergrid_core::prosumer::{generate_community, CommunityConfig};
use peergrid_core::simulation::{SimConfig, Simulation};
use peergrid_e2e::cluster::ClusterBuilder;

fn dataset() -> Arc<Dataset> {
    Arc::new(bundled_citylearn().expect("bundled data"))
}

fn reference_kpis(ds: &Arc<Dataset>, n: usize, seed: u64, slots: std::ops::Range<usize>) -> Kpis {
    let prosumers =
        generate_community(ds, &CommunityConfig { n_prosumers: n, seed, ..Default::default() })
            .unwrap();
    let mut sim =
        Simulation::new(ds.clone(), prosumers, SimConfig::default(), slots.collect()).unwrap();
    sim.run(&mut RuleBased)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_reproduce_the_reference_simulation_exactly() {
    let ds = dataset();
    let builder = ClusterBuilder { start_slot: 100, ..ClusterBuilder::default() }
        .nodes(&[8, 8])
        .max_slots(96);
    let cluster = builder.clone().start(ds.clone()).await.unwrap();
    let (status, reports) = cluster.finish().await.unwrap();
    let kpis = Kpis::from(status.kpis.as_ref().expect("status carries KPIs"));
    let expected = reference_kpis(&ds, 16, builder.seed, 100..196);
    assert_eq!(kpis, expected, "distributed KPIs must equal the reference simulator's");
    assert_eq!(status.missing_reports, 0);
    assert!(status.energy_balance_error_kwh < 1e-9, "{}", status.energy_balance_error_kwh);
    assert_eq!(status.money_balance_error, 0.0);
    assert_eq!(reports.len(), 2);
    for r in &reports {
        assert_eq!(r.slots_cleared, 96, "{r:?}");
        assert_eq!(r.returns.len(), 8);
    }
}

/// With a tariff demand charge the market charges each rise of the day's
/// peak to the slot's importers: the nodes' rewards carry the shares, and
/// the live KPIs the charge, exactly as the reference simulator computes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_demand_charge_reaches_the_rewards_and_kpis_as_in_the_reference() {
    let ds = dataset();
    let mut sim = SimConfig::default();
    sim.tariff.demand_charge_per_kw = 0.3;
    let builder = ClusterBuilder { start_slot: 100, sim: sim.clone(), ..ClusterBuilder::default() }
        .nodes(&[8, 8])
        .max_slots(72);
    let cluster = builder.clone().start(ds.clone()).await.unwrap();
    let (status, reports) = cluster.finish().await.unwrap();
    let kpis = Kpis::from(status.kpis.as_ref().expect("status carries KPIs"));

    let prosumers = generate_community(
        &ds,
        &CommunityConfig { n_prosumers: 16, seed: builder.seed, ..Default::default() },
    )
    .unwrap();
    let mut reference = Simulation::new(ds.clone(), prosumers, sim, (100..172).collect()).unwrap();
    let mut reward_sum = 0.0f64;
    while reference.step(&mut RuleBased).is_some() {
        reward_sum += reference.rewards().iter().map(|r| *r as f64).sum::<f64>();
    }
    let expected = reference.kpis();
    assert!(expected.demand_charge > 0.0, "three days must set a peak: {expected:?}");
    assert_eq!(kpis, expected, "distributed KPIs must equal the reference simulator's");
    let bills: f64 = reference.household_costs().iter().sum();
    assert!((bills - expected.community_cost).abs() < 1e-9 * bills.abs().max(1.0));
    let returns: f64 = reports.iter().flat_map(|r| &r.returns).map(|r| r.episode_return).sum();
    // The reference keeps rewards as f32 (what experience carries).
    assert!(
        (returns - reward_sum).abs() < 1e-4 * reward_sum.abs(),
        "nodes' returns {returns} vs the reference's rewards {reward_sum}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_node_is_absent_not_missing_and_a_restarted_node_resumes_its_session() {
    let ds = dataset();
    let builder = ClusterBuilder { deadline_ms: 150, ..ClusterBuilder::default() }.nodes(&[8]);
    let mut cluster = builder.start(ds).await.unwrap();
    let state_dir =
        std::env::temp_dir().join(format!("peergrid-node-state-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&state_dir);
    let node1 = cluster.spawn_agent("node-1", 8, Some(state_dir.clone()));
    cluster.wait_for_prosumers(16).await.unwrap();
    cluster.wait_for_slot(5).await.unwrap();
    // Stop node 1 (a process restart): its households are absent, not
    // missing, and the market keeps their ids for the lease grace.
    let report = cluster.stop_agent(node1).await.unwrap();
    assert!(state_dir.join("session.json").exists(), "the session is kept for a restart");
    let before = cluster.status().await.unwrap();
    let after = cluster.wait_for_slot(before.slot + 5).await.unwrap();
    assert_eq!(
        after.missing_reports, before.missing_reports,
        "a node without a stream is absent, not missing"
    );
    assert!(after.absent_reports >= before.absent_reports + 5 * 8, "{before:?} → {after:?}");
    assert_eq!(after.absent_prosumers, 8);
    assert!(after.energy_balance_error_kwh < 1e-9 && after.money_balance_error < 1e-9, "{after:?}");

    // Restart with the same state dir: the same ids come back and report again.
    let again = cluster.spawn_agent("node-1-restarted", 8, Some(state_dir.clone()));
    cluster.wait_for_prosumers(16).await.unwrap();
    let rejoined = cluster.status().await.unwrap();
    let later = cluster.wait_for_slot(rejoined.slot + 3).await.unwrap();
    assert_eq!(later.prosumers, 16, "the restarted node took back its 8 prosumers, no new range");
    assert_eq!(later.absent_prosumers, 0);
    assert_eq!(
        later.missing_reports, rejoined.missing_reports,
        "nobody is missing once the node is back"
    );

    // Its households continued from their saved state: their returns count
    // the slots before the restart too.
    let report_again = cluster.stop_agent(again).await.unwrap();
    for (before, after) in report.returns.iter().zip(&report_again.returns) {
        assert_eq!(before.prosumer_id, after.prosumer_id);
        assert!(after.slots_settled > report_again.slots_cleared, "{after:?} continues {before:?}");
        assert_eq!(
            after.slots_settled,
            before.slots_settled + report_again.slots_cleared,
            "{after:?} continues {before:?}"
        );
    }
    let again = cluster.spawn_agent("node-1-third", 8, Some(state_dir.clone()));
    cluster.wait_for_prosumers(16).await.unwrap();

    // An abrupt kill mid-run: the market keeps clearing at the deadline.
    cluster.kill_agent(again).await;
    let k = cluster.status().await.unwrap();
    let after_kill = cluster.wait_for_slot(k.slot + 4).await.unwrap();
    assert!(after_kill.absent_reports > k.absent_reports, "{after_kill:?}");
    assert!(
        after_kill.energy_balance_error_kwh < 1e-9 && after_kill.money_balance_error < 1e-9,
        "{after_kill:?}"
    );
    let (status, reports) = cluster.stop().await.unwrap();
    assert_eq!(status.prosumers, 8, "only node 0 is still connected");
    assert_eq!(reports.len(), 1, "node 0 ran to the end");
    assert!(
        reports[0].slots_cleared + 1 >= status.slot,
        "node 0 took part in every slot: {:?}",
        reports[0].slots_cleared
    );
    assert!(report.session_id.is_some());
    let _ = std::fs::remove_dir_all(&state_dir);
}

async fn next_summary(
    w: &mut tonic::Streaming<peergrid_proto::pb::market::v1::MarketEvent>,
) -> peergrid_proto::pb::market::v1::SlotSummary {
    use peergrid_proto::pb::market::v1::market_event::Event;
    loop {
        if let Some(Event::Slot(s)) = w.message().await.unwrap().unwrap().event {
            return s;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_step_resume_and_an_injected_pv_drop_show_in_the_next_slots() {
    use peergrid_proto::pb::control::v1 as control;
    use peergrid_proto::pb::market::v1 as market;
    let ds = dataset();
    // Start at 09:00 on a summer day so PV is well above zero.
    let builder =
        ClusterBuilder { start_slot: 24 * 10 + 9, auto_start: false, ..ClusterBuilder::default() }
            .nodes(&[6, 6]);
    let cluster = builder.start(ds).await.unwrap();
    let mut ctl = cluster.control_client().await.unwrap();
    let paused = cluster.status().await.unwrap();
    assert!(paused.paused, "waits for the operator");
    assert_eq!(paused.slot, 0);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(cluster.status().await.unwrap().slot, paused.slot, "a paused market opens no slot");

    let mut watch = cluster
        .market_client()
        .await
        .unwrap()
        .watch(market::WatchRequest {})
        .await
        .unwrap()
        .into_inner();
    let step = |n| control::StepRequest { count: n };
    ctl.step(step(1)).await.unwrap();
    let normal = next_summary(&mut watch).await;
    assert!(normal.pv_kwh > 0.5, "{normal:?}");
    ctl.inject(control::InjectRequest {
        event: Some(control::inject_request::Event::Scale(control::ScaleGroup {
            first_prosumer_id: 0,
            last_prosumer_id: 11,
            pv_scale: 0.0,
            load_scale: 1.0,
            slots: 2,
        })),
    })
    .await
    .unwrap();
    ctl.step(step(3)).await.unwrap();
    let dark = [next_summary(&mut watch).await, next_summary(&mut watch).await];
    let back = next_summary(&mut watch).await;
    for s in &dark {
        assert_eq!(s.pv_kwh, 0.0, "PV scaled to zero for two slots: {s:?}");
        assert!(s.grid_import_kwh > 0.0);
    }
    assert!(back.pv_kwh > 0.5, "the event lasted two slots: {back:?}");
    let status = cluster.status().await.unwrap();
    assert!(status.paused, "step pauses again");
    assert_eq!(status.slot, paused.slot + 4);
    ctl.resume(control::Empty {}).await.unwrap();
    let resumed = cluster.wait_for_slot(paused.slot + 10).await.unwrap();
    assert!(!resumed.paused);
    assert!(resumed.energy_balance_error_kwh < 1e-9);
    ctl.pause(control::Empty {}).await.unwrap();
    cluster.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_market_takes_the_nodes_back_and_the_run_continues() {
    let ds = dataset();
    let mut cluster = ClusterBuilder { deadline_ms: 300, ..ClusterBuilder::default() }
        .nodes(&[8, 8])
        .start(ds)
        .await
        .unwrap();
    cluster.wait_for_slot(10).await.unwrap();
    cluster.restart_market().await.unwrap();
    // The fresh market knows nobody; the nodes reconnect, resume their
    // sessions with their old id ranges, and clearing starts again.
    cluster.wait_for_prosumers(16).await.unwrap();
    let status = cluster.wait_for_slot(10).await.unwrap();
    assert_eq!((status.nodes, status.prosumers), (2, 16));
    assert!(
        status.energy_balance_error_kwh < 1e-9 && status.money_balance_error < 1e-9,
        "{status:?}"
    );
    let (status, reports) = cluster.stop().await.unwrap();
    assert_eq!(status.missing_reports, 0, "the same 16 ids came back: nobody is missing");
    assert_eq!(reports.len(), 2);
    for r in &reports {
        assert!(r.reconnects >= 1, "{r:?}");
        assert!(r.slots_cleared >= 20, "{r:?}");
    }
    let firsts: Vec<_> = reports.iter().map(|r| r.first_prosumer_id).collect();
    assert_eq!(firsts, [Some(0), Some(8)], "each node kept its range");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_time_mode_paces_slots_and_fast_mode_takes_over_again() {
    use peergrid_proto::pb::control::v1 as control;
    let ds = dataset();
    let cluster = ClusterBuilder { auto_start: false, ..ClusterBuilder::default() }
        .nodes(&[4, 4])
        .start(ds)
        .await
        .unwrap();
    let mut ctl = cluster.control_client().await.unwrap();
    let set_mode = |mode: control::Mode| control::SetModeRequest {
        mode: mode.into(),
        slot_period_ms: 20,
        deadline_ms: 0,
    };
    ctl.set_mode(set_mode(control::Mode::RealTime)).await.unwrap();
    ctl.start(control::Empty {}).await.unwrap();
    let rt = cluster.wait_for_slot(5).await.unwrap();
    assert_eq!(rt.mode, "real-time");
    assert_eq!(rt.slot_period_ms, 20);
    ctl.set_mode(set_mode(control::Mode::Fast)).await.unwrap();
    // Real time keeps the wall clock: on a loaded machine a 20 ms slot may
    // clear without a late node's reports (counted missing, by design).
    // Fast mode waits for every report: from the first slot opened after
    // the switch, nothing more is missing.
    let switched = cluster.status().await.unwrap();
    let from = cluster.wait_for_slot(switched.slot + 1).await.unwrap();
    let fast = cluster.wait_for_slot(from.slot + 20).await.unwrap();
    assert_eq!(fast.mode, "fast");
    assert_eq!(
        fast.missing_reports, from.missing_reports,
        "fast mode waits for every report: {from:?} → {fast:?}"
    );
    assert!(fast.energy_balance_error_kwh < 1e-9);
    let bad = ctl
        .set_mode(control::SetModeRequest { mode: 0, slot_period_ms: 0, deadline_ms: 0 })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument, "{bad:?}");
    ctl.pause(control::Empty {}).await.unwrap();
    cluster.stop().await.unwrap();
}
