//! End-to-end tests of the market-node over loopback gRPC, with fake
//! agent-nodes computing genuine reports with the domain core.

mod common;

use std::time::Duration;

use common::*;
use pb::market_message::Msg;
use peergrid_core::kpi::Kpis;
use peergrid_core::policy::RuleBased;
use peergrid_core::prosumer::{generate_community, ProsumerKind, ProsumerSpec};
use peergrid_core::simulation::{SimConfig, Simulation};
use peergrid_market_node::{MarketConfig, MarketSettings};
use peergrid_proto::pb::control::v1 as control;
use peergrid_proto::pb::market::v1 as pb;
use tonic::Code;

const SLOTS: u64 = 24;

fn reference_kpis(n: usize, start: usize, slots: usize) -> Kpis {
    let ds = dataset();
    let prosumers = generate_community(&ds, &community(n)).unwrap();
    let mut sim =
        Simulation::new(ds, prosumers, SimConfig::default(), (start..start + slots).collect())
            .unwrap();
    sim.run(&mut RuleBased)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_reproduce_the_reference_kpis_exactly() {
    let settings = MarketSettings { min_prosumers: 16, max_slots: Some(SLOTS), ..settings() };
    let start = settings.start_slot as usize;
    let market = TestMarket::start(settings).await;
    // Join in registration order, so storage capacity sums in id order.
    let (a, agent_a) = connect(&market, "node-a", 8, 16).await;
    let (b, agent_b) = connect(&market, "node-b", 8, 16).await;
    assert_eq!((a.first, b.first), (0, 8));
    let _a = run_node(a, agent_a);
    let _b = run_node(b, agent_b);
    market.wait_for_slot(SLOTS - 1).await;

    let status = market.status().await;
    let kpis = Kpis::from(&status.kpis.unwrap());
    assert_eq!(
        kpis,
        reference_kpis(16, start, SLOTS as usize),
        "distributed KPIs must equal the reference exactly"
    );
    assert_eq!(
        (status.slot, status.prosumers, status.nodes, status.missing_reports),
        (SLOTS, 16, 2, 0)
    );
    assert!(kpis.p2p_kwh > 0.0, "the run must trade P2P to be a meaningful check");
    assert!(status.energy_balance_error_kwh < 1e-9, "{}", status.energy_balance_error_kwh);
    assert_eq!(status.money_balance_error, 0.0);
    market.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_node_is_reported_missing_and_slots_still_clear() {
    let settings =
        MarketSettings { min_prosumers: 16, max_slots: Some(4), deadline_ms: 50, ..settings() };
    let market = TestMarket::start(settings).await;
    let (a, agent_a) = connect(&market, "talker", 8, 16).await;
    let (mut silent, _) = connect(&market, "silent", 8, 16).await;
    let _a = run_node(a, agent_a);
    let mut missing = Vec::new();
    while missing.len() < 4 {
        if let Msg::Cleared(c) = silent.next().await.unwrap() {
            assert!(c.settlements.is_empty());
            missing.push(c.missing_prosumer_ids);
        }
    }
    assert!(missing.iter().all(|ids| *ids == (8..16).collect::<Vec<u32>>()), "{missing:?}");
    market.wait_for_slot(3).await;
    let status = market.status().await;
    assert_eq!(status.missing_reports, 4 * 8);
    assert_eq!(status.kpis.unwrap().slots, 4);
    assert!(status.energy_balance_error_kwh < 1e-9, "{}", status.energy_balance_error_kwh);
    assert!(status.money_balance_error < 1e-9, "{}", status.money_balance_error);
    market.stop().await;
}

// ----- bad input: every case is rejected whole, with the field named ------

/// Starts a one-node market, lets `mutate` spoil the node's genuine batch
/// for slot 0, and checks the in-stream refusal and that nothing changed;
/// then, on the same session, a genuine batch still clears the slot in full.
async fn rejected(
    mutate: impl FnOnce(&mut pb::OrderBatch, &pb::SlotOpen),
    code: Code,
    field: &str,
) {
    rejected_with(
        |b, o, _| {
            mutate(b, o);
            String::new()
        },
        code,
        field,
    )
    .await
}

/// [`rejected`] where `mutate` also sees the node's prosumers (report `i`
/// belongs to `specs[i]`) and returns the field the refusal must name.
async fn rejected_with(
    mutate: impl FnOnce(&mut pb::OrderBatch, &pb::SlotOpen, &[ProsumerSpec]) -> String,
    code: Code,
    field: &str,
) {
    // Two slots: the one under test, and one the node answers so shutdown
    // (which finishes the open slot) does not wait for its deadline.
    let settings =
        MarketSettings { min_prosumers: 8, max_batch: 8, max_slots: Some(2), ..settings() };
    let market = TestMarket::start(settings).await;
    let (mut node, mut agent) = connect(&market, "node", 8, 8).await;
    let open = node.next_open().await;
    let genuine = agent.play(&open);
    let mut batch = genuine.clone();
    let named = mutate(&mut batch, &open, &agent.specs);
    let field = format!("{named}{field}");
    let field = field.as_str();
    let before = market.status().await;
    node.send(batch).await;
    let Msg::Refused(refused) = node.next().await.expect("the session stays open") else {
        panic!("expected BatchRefused")
    };
    assert_eq!(refused.code, code as i32, "{refused:?}");
    assert!(refused.message.contains(field), "expected {field} in: {}", refused.message);
    let after = market.status().await;
    assert_eq!(after.batches_refused, before.batches_refused + 1);
    let counters_aside =
        |s: &pb::StatusResponse| pb::StatusResponse { batches_refused: 0, ..s.clone() };
    assert_eq!(counters_aside(&after), counters_aside(&before), "a refused batch changes nothing");

    // Nothing of the bad batch was stored: the node still reports slot 0.
    node.send(genuine).await;
    let Msg::Cleared(cleared) = node.next().await.unwrap() else { panic!("expected SlotCleared") };
    assert_eq!(
        (cleared.slot, cleared.settlements.len(), cleared.missing_prosumer_ids.len()),
        (0, 8, 0)
    );
    let open = node.next_open().await;
    node.send(agent.play(&open)).await;
    market.wait_for_slot(1).await;
    market.stop().await;
}

/// Gives report `i` an order consistent with its position (side, ≤ position).
fn with_order<'a>(
    batch: &'a mut pb::OrderBatch,
    open: &pb::SlotOpen,
    i: usize,
) -> &'a mut peergrid_proto::pb::common::v1::Order {
    use peergrid_proto::pb::common::v1 as common;
    let r = &mut batch.reports[i];
    let side = if r.net_kwh > 0.0 { common::Side::Buy } else { common::Side::Sell };
    let tariff = open.tariff.unwrap();
    r.order.get_or_insert(common::Order {
        side: side.into(),
        quantity_wh: 1,
        limit_price_micros: tariff.feed_in_micros,
    })
}

#[tokio::test]
async fn nan_field_is_invalid_argument() {
    rejected(|b, _| b.reports[3].load_kwh = f64::NAN, Code::InvalidArgument, "reports[3].load_kwh")
        .await;
}

#[tokio::test]
async fn zero_quantity_is_invalid_argument() {
    rejected(
        |b, o| with_order(b, o, 2).quantity_wh = 0,
        Code::InvalidArgument,
        "reports[2].order.quantity_wh",
    )
    .await;
}

#[tokio::test]
async fn quantity_above_max_is_invalid_argument() {
    let too_much = peergrid_proto::convert::MAX_ORDER_WH + 1;
    rejected(
        |b, o| with_order(b, o, 2).quantity_wh = too_much,
        Code::InvalidArgument,
        "reports[2].order.quantity_wh",
    )
    .await;
}

#[tokio::test]
async fn price_outside_the_tariff_is_invalid_argument() {
    rejected(
        |b, o| with_order(b, o, 1).limit_price_micros = o.tariff.unwrap().retail_micros + 1,
        Code::InvalidArgument,
        "reports[1].order.limit_price_micros",
    )
    .await;
}

#[tokio::test]
async fn foreign_prosumer_is_permission_denied() {
    rejected(
        |b, _| b.reports[5].prosumer_id = 99,
        Code::PermissionDenied,
        "reports[5].prosumer_id",
    )
    .await;
}

#[tokio::test]
async fn duplicate_prosumer_is_invalid_argument() {
    rejected(|b, _| b.reports[4] = b.reports[0], Code::InvalidArgument, "reports[4].prosumer_id")
        .await;
}

#[tokio::test]
async fn wrong_slot_is_failed_precondition() {
    rejected(|b, _| b.slot = 1, Code::FailedPrecondition, "slot").await;
}

#[tokio::test]
async fn oversize_batch_is_resource_exhausted() {
    rejected(|b, _| b.reports.push(b.reports[0]), Code::ResourceExhausted, "reports").await;
}

// ----- physics: reports beyond the declared equipment ------------------------

/// The index of the first of the node's prosumers of `kind`.
fn first_of(specs: &[ProsumerSpec], kind: ProsumerKind) -> usize {
    specs
        .iter()
        .position(|s| s.kind == kind)
        .unwrap_or_else(|| panic!("the test community has no {} prosumer", kind.name()))
}

/// Keeps report `r` self-consistent (`net_kwh` = load − pv + charged −
/// discharged, no order), so only the physics can refuse it.
fn rebalance(r: &mut pb::HouseholdReport) {
    r.net_kwh = r.load_kwh - r.pv_kwh + r.battery_charged_kwh - r.battery_discharged_kwh;
    r.order = None;
}

#[tokio::test]
async fn a_consumer_selling_pv_is_refused() {
    let mutate = |b: &mut pb::OrderBatch, _: &pb::SlotOpen, specs: &[ProsumerSpec]| {
        let i = first_of(specs, ProsumerKind::Consumer);
        b.reports[i].pv_kwh = 50.0;
        rebalance(&mut b.reports[i]);
        format!("reports[{i}].")
    };
    rejected_with(mutate, Code::InvalidArgument, "pv_kwh").await;
}

#[tokio::test]
async fn more_pv_than_the_panels_yield_is_refused() {
    let mutate = |b: &mut pb::OrderBatch, _: &pb::SlotOpen, specs: &[ProsumerSpec]| {
        let i = first_of(specs, ProsumerKind::PvOnly);
        b.reports[i].pv_kwh = 900.0;
        rebalance(&mut b.reports[i]);
        format!("reports[{i}].")
    };
    rejected_with(mutate, Code::InvalidArgument, "pv_kwh").await;
}

#[tokio::test]
async fn storage_without_a_battery_is_refused() {
    let mutate = |b: &mut pb::OrderBatch, _: &pb::SlotOpen, specs: &[ProsumerSpec]| {
        let i = first_of(specs, ProsumerKind::PvOnly);
        b.reports[i].battery_charged_kwh = 3.0;
        b.reports[i].stored_kwh = 10.0;
        rebalance(&mut b.reports[i]);
        format!("reports[{i}].")
    };
    rejected_with(mutate, Code::InvalidArgument, "battery_charged_kwh").await;
}

#[tokio::test]
async fn a_battery_beyond_its_power_rating_is_refused() {
    let mutate = |b: &mut pb::OrderBatch, _: &pb::SlotOpen, specs: &[ProsumerSpec]| {
        let i = first_of(specs, ProsumerKind::PvBattery);
        let battery = specs[i].battery.unwrap();
        let r = &mut b.reports[i];
        r.battery_discharged_kwh = 0.0;
        r.battery_charged_kwh = battery.capacity_kwh * 4.0;
        r.battery_losses_kwh = r.battery_charged_kwh * (1.0 - battery.one_way_efficiency());
        r.degradation_cost = battery.degradation_cost_per_kwh * r.battery_charged_kwh;
        rebalance(r);
        format!("reports[{i}].")
    };
    rejected_with(mutate, Code::InvalidArgument, "battery_charged_kwh").await;
}

#[tokio::test]
async fn a_join_with_impossible_equipment_is_refused_and_changes_nothing() {
    let market = TestMarket::start(MarketSettings { min_prosumers: 8, ..settings() }).await;
    let reg = register(&market, "node", 8).await;
    let agent = Agent::new(reg.first_prosumer_id, 8, 8);
    let before = market.status().await;
    type Case = (fn(&mut pb::ProsumerSummary), &'static str);
    let cases: [Case; 4] = [
        (|p| p.pv_kwp = 5000.0, "prosumers[2].pv_kwp"),
        (|p| p.kind = "windmill".into(), "prosumers[2].kind"),
        (|p| p.battery_kwh += 1.0, "prosumers[2].battery_kwh"),
        (
            |p| {
                p.battery = Some(pb::BatteryRating {
                    capacity_kwh: 10.0,
                    round_trip_efficiency: 2.0,
                    ..Default::default()
                })
            },
            "prosumers[2].battery",
        ),
    ];
    for (spoil, field) in cases {
        let mut prosumers = agent.summaries();
        spoil(&mut prosumers[2]);
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        let join = pb::Join {
            session_id: reg.session_id.clone(),
            prosumers,
            resume_secret: reg.resume_secret.clone(),
        };
        tx.send(pb::NodeMessage { msg: Some(pb::node_message::Msg::Join(join)) }).await.unwrap();
        let e = market
            .market(AGENT)
            .session(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e}");
        assert!(e.message().contains(field), "expected {field} in: {}", e.message());
        assert_eq!(market.status().await, before, "a refused join changes nothing");
    }
    // The registration is intact: the genuine join still works.
    join(&market, &reg.session_id, &reg.resume_secret, reg.first_prosumer_id, &agent)
        .await
        .unwrap();
    market.stop().await;
}

// ----- auth ---------------------------------------------------------------

#[tokio::test]
async fn roles_are_enforced_per_endpoint() {
    let market = TestMarket::start(MarketSettings { min_prosumers: 100, ..settings() }).await;
    let register =
        || pb::RegisterRequest { node_name: "n".into(), prosumer_count: 2, ..Default::default() };

    // No token / an unknown token: UNAUTHENTICATED everywhere.
    let mut anonymous =
        peergrid_proto::pb::market::v1::market_service_client::MarketServiceClient::new(
            market.channel.clone(),
        );
    assert_eq!(code(anonymous.register(register()).await), Code::Unauthenticated);
    assert_eq!(code(anonymous.status(pb::StatusRequest {}).await), Code::Unauthenticated);
    let forged = "forged-token-0123456789abcdef";
    assert_eq!(
        code(market.market(forged).status(pb::StatusRequest {}).await),
        Code::Unauthenticated
    );
    assert_eq!(code(market.control(forged).pause(control::Empty {}).await), Code::Unauthenticated);

    // Operators never trade; agents never control; both read.
    assert_eq!(code(market.market(OPERATOR).register(register()).await), Code::PermissionDenied);
    assert_eq!(code(market.control(AGENT).pause(control::Empty {}).await), Code::PermissionDenied);
    assert_eq!(
        code(market.control(AGENT).get_status(control::Empty {}).await),
        Code::PermissionDenied
    );
    assert_eq!(code(market.market(AGENT).register(register()).await), Code::Ok);
    assert_eq!(code(market.control(OPERATOR).pause(control::Empty {}).await), Code::Ok);
    assert_eq!(code(market.market(AGENT).status(pb::StatusRequest {}).await), Code::Ok);
    assert_eq!(code(market.market(OPERATOR).status(pb::StatusRequest {}).await), Code::Ok);
    assert_eq!(code(market.market(OPERATOR).watch(pb::WatchRequest {}).await), Code::Ok);

    // A session needs the agent token too.
    let reg = register_as(&market, "s").await;
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let join = pb::Join {
        session_id: reg.session_id,
        prosumers: Agent::new(reg.first_prosumer_id, 2, 4).summaries(),
        resume_secret: reg.resume_secret,
    };
    tx.send(pb::NodeMessage { msg: Some(pb::node_message::Msg::Join(join)) }).await.unwrap();
    let session =
        market.market(OPERATOR).session(tokio_stream::wrappers::ReceiverStream::new(rx)).await;
    assert_eq!(code(session), Code::PermissionDenied);
    market.stop().await;
}

fn code<T>(r: Result<tonic::Response<T>, tonic::Status>) -> Code {
    r.map(|_| Code::Ok).unwrap_or_else(|s| s.code())
}

async fn register_as(market: &TestMarket, name: &str) -> pb::RegisterResponse {
    let request =
        pb::RegisterRequest { node_name: name.into(), prosumer_count: 2, ..Default::default() };
    market.market(AGENT).register(request).await.unwrap().into_inner()
}

// ----- control ------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_step_resume_and_an_injected_pv_scale() {
    // More min prosumers than will join: the market waits for the operator.
    let market = TestMarket::start(MarketSettings { min_prosumers: 9, ..settings() }).await;
    let (node, agent) = connect(&market, "node", 8, 8).await;
    let mut seen = run_node(node, agent);
    let mut operator = market.control(OPERATOR);
    assert!(market.status().await.paused);

    let scale = control::ScaleGroup {
        first_prosumer_id: 0,
        last_prosumer_id: 3,
        pv_scale: 0.5,
        load_scale: 1.0,
        slots: 2,
    };
    let inject =
        control::InjectRequest { event: Some(control::inject_request::Event::Scale(scale)) };
    operator.inject(inject).await.unwrap();
    let reply = operator.step(control::StepRequest { count: 3 }).await.unwrap().into_inner();
    assert_eq!(reply.slot, 0);

    let mut opens = Vec::new();
    let mut cleared = 0;
    while cleared < 3 {
        match recv(&mut seen).await {
            Msg::Open(o) => opens.push(o),
            Msg::Cleared(_) => cleared += 1,
            Msg::Refused(r) => panic!("unexpected refusal {r:?}"),
        }
    }
    let scaled = |o: &pb::SlotOpen| {
        o.adjustments
            .iter()
            .any(|a| (a.first_prosumer_id, a.last_prosumer_id, a.pv_scale) == (0, 3, 0.5))
    };
    assert_eq!(opens.iter().map(|o| o.slot).collect::<Vec<_>>(), [0, 1, 2]);
    assert_eq!(
        opens.iter().map(scaled).collect::<Vec<_>>(),
        [true, true, false],
        "the scale lasts 2 slots"
    );
    let status = market.status().await;
    assert!(status.paused);
    assert_eq!(status.slot, 3, "exactly 3 slots were stepped");

    // Bad control input changes nothing.
    let bad = operator.step(control::StepRequest { count: 0 }).await.unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert!(bad.message().contains("count"), "{}", bad.message());
    let bad = operator
        .load_scenario(control::LoadScenarioRequest {
            scenario_json: "{\"events\": [{\"at_slot\": 9}]}".into(),
        })
        .await;
    assert!(bad.unwrap_err().message().contains("events[0]"));
    assert_eq!(market.status().await, status);

    operator.resume(control::Empty {}).await.unwrap();
    market.wait_for_slot(5).await;
    operator.pause(control::Empty {}).await.unwrap();
    let status = market.status().await;
    assert!(status.paused && status.slot >= 6, "{status:?}");
    tokio::time::sleep(Duration::from_millis(1)).await;
    market.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_in_process_market_serves_local_urls_and_frees_its_name() {
    let name = "market-e2e-in-process";
    let market =
        TestMarket::start(MarketSettings { local_name: Some(name.into()), ..settings() }).await;
    let url = market.handle.as_ref().unwrap().url().to_owned();
    assert_eq!(url, format!("local://{name}"));
    assert_eq!(market.handle.as_ref().unwrap().grpc_addr, None, "no TCP port");
    assert!(peergrid_market_node::grpc::check_health(&url, None, None).await.unwrap());
    assert_eq!(market.status().await.prosumers, 0, "the services answer over the pipe");
    let again = MarketConfig::new(
        MarketSettings { local_name: Some(name.into()), ..settings() },
        SimConfig::default(),
        tokens(),
    );
    let e = peergrid_market_node::start_with_dataset(
        again.unwrap(),
        dataset(),
        market.controller.subscribe(),
    )
    .await
    .err();
    assert!(format!("{:#}", e.expect("the name is taken")).contains("already exists"));
    market.stop().await;
    let e = peergrid_market_node::grpc::check_health(&url, None, None).await.unwrap_err();
    assert!(format!("{e:#}").contains("no in-process listener named"), "{e:#}");
    drop(peergrid_runtime::inproc::listen(name).expect("the name is free again"));
}

// ----- sessions -------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejoin_with_the_secret_ends_the_old_stream_and_a_wrong_secret_changes_nothing() {
    let market = TestMarket::start(MarketSettings { min_prosumers: 100, ..settings() }).await;
    let reg = register(&market, "node", 4).await;
    let agent = Agent::new(reg.first_prosumer_id, 4, 4);
    let mut old = join(&market, &reg.session_id, &reg.resume_secret, 0, &agent).await.unwrap();

    // Someone with the agent token and the session id, but not the secret.
    let thief = join(&market, &reg.session_id, "0123456789abcdef0123456789abcdef", 0, &agent).await;
    assert_eq!(thief.err().map(|s| s.code()), Some(Code::PermissionDenied));
    assert_eq!(market.status().await.prosumers, 4, "the real node keeps its session");

    // The node itself reconnects: its old stream ends, naming why.
    let _new = join(&market, &reg.session_id, &reg.resume_secret, 0, &agent).await.unwrap();
    let ended = old.next().await.expect_err("the old stream ends");
    assert_eq!(ended.code(), Code::FailedPrecondition, "{ended:?}");
    assert!(ended.message().contains("replaced by a newer connection"), "{}", ended.message());
    assert_eq!(market.status().await.prosumers, 4);
    market.stop().await;
}
