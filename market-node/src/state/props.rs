//! Property tests of the market state machine (issue 12): random sequences
//! of well-formed but hostile requests — register, join, submit, hold,
//! inject, load a scenario, set the mode, step — with extreme values,
//! interleaved with the clock's own moves (open, clear, disconnect, expire).
//!
//! Each request goes through the same validation the gRPC edge applies
//! ([`crate::grpc::batch_from_wire`] for batches,
//! [`crate::grpc::prosumers_from_wire`] for joins,
//! [`crate::grpc::inject_from_wire`] and [`crate::grpc::mode_from_wire`]
//! for control), then to the state, whose refusals are judged as the wire
//! sees them. Properties: nothing panics; a refused request carries a
//! non-OK code and a message and leaves the state exactly as it was
//! (compared by [`fingerprint`], which covers every field); after every
//! clearing the cleared energy and money balance (every Wh bought was
//! sold, every nano-currency paid was received) and the KPIs stay finite.
//!
//! A child of `state`, so it can see the state's parts.

use std::sync::Arc;

use peergrid_core::data::synthetic::synthetic_dataset;
use peergrid_core::market::Side;
use peergrid_core::physics::Envelope;
use peergrid_core::prosumer::ProsumerKind;
use peergrid_core::simulation::SimConfig;
use peergrid_core::units::Wh;
use peergrid_proto::pb::common::v1 as common;
use peergrid_proto::pb::control::v1 as control;
use peergrid_proto::pb::market::v1 as market;
use proptest::collection::vec;
use proptest::prelude::*;

use super::*;
use crate::config::MarketSettings;
use crate::grpc::{batch_from_wire, inject_from_wire, mode_from_wire, prosumers_from_wire};
use peergrid_proto::convert::envelope_to_wire;
use peergrid_proto::WireError;

/// Everything the state holds, as text: each part's derived `Debug`
/// prints every field it has, and the exhaustive destructuring makes a
/// part added to [`MarketState`] without adding it here a compile error.
pub(super) fn fingerprint(s: &MarketState) -> String {
    let MarketState {
        ds: _, // shared, immutable
        sim,
        members,
        rounds,
        control,
        ledger,
    } = s;
    format!("{:?}", (sim, members, rounds, control, ledger))
}

/// The batch limit of the harness's market (and of its edge).
const MAX_BATCH: usize = 8;

const HEX: &str = "0123456789abcdef0123456789abcdef";

/// One move: a request a client may send, or something the clock does.
#[derive(Clone, Debug)]
enum Op {
    Register { name: String, count: u32, resume: Option<(usize, Option<u32>, Secret)> },
    Join { node: usize, secret: Secret, defect: JoinDefect },
    Submit { node: usize, slot: SlotChoice, reports: Vec<ReportSeed> },
    Hold { node: usize, slot: SlotChoice },
    Inject(control::InjectRequest),
    SetMode(control::SetModeRequest),
    LoadScenario(String),
    Step(u32),
    Open,
    Clear,
    Disconnect(usize),
    Expire(u64),
}

#[derive(Clone, Copy, Debug)]
enum Secret {
    Right,
    Wrong,
    Malformed,
}

#[derive(Clone, Copy, Debug)]
enum SlotChoice {
    Open,
    Next,
    Far,
}

#[derive(Clone, Copy, Debug)]
enum JoinDefect {
    None,
    Count,
    Id,
    Kind,
    Value(f64),
}

/// A report of prosumer `first + offset`, physics and order from these.
#[derive(Clone, Copy, Debug)]
struct ReportSeed {
    offset: u32,
    net_kwh: f64,
    hostile: Option<f64>,
    share: f64,
    price: f64,
}

fn extreme_f64() -> impl Strategy<Value = f64> {
    prop_oneof![
        Just(f64::NAN),
        Just(f64::INFINITY),
        Just(f64::NEG_INFINITY),
        Just(1e38),
        Just(-1e38),
        Just(f64::MAX),
        Just(5e-324),
        Just(-1.0),
        Just(1e9),
        any::<f64>(),
    ]
}

fn value_f64() -> impl Strategy<Value = f64> {
    prop_oneof![3 => 0.0f64..150.0, 1 => extreme_f64()]
}

fn extreme_u64() -> impl Strategy<Value = u64> {
    prop_oneof![3 => 0u64..1_000_000, 1 => Just(u64::MAX), 1 => Just(86_400_001u64), 1 => any::<u64>()]
}

fn extreme_u32() -> impl Strategy<Value = u32> {
    prop_oneof![3 => 0u32..12, 1 => Just(u32::MAX), 1 => Just(100_001u32), 1 => any::<u32>()]
}

fn secret() -> impl Strategy<Value = Secret> {
    prop_oneof![4 => Just(Secret::Right), 1 => Just(Secret::Wrong), 1 => Just(Secret::Malformed)]
}

fn slot_choice() -> impl Strategy<Value = SlotChoice> {
    prop_oneof![4 => Just(SlotChoice::Open), 1 => Just(SlotChoice::Next), 1 => Just(SlotChoice::Far)]
}

fn report_seed() -> impl Strategy<Value = ReportSeed> {
    (0u32..3, -3.0f64..3.0, prop::option::weighted(0.1, extreme_f64()), 0.0f64..=1.0, -0.2f64..1.2)
        .prop_map(|(offset, net_kwh, hostile, share, price)| ReportSeed {
            offset,
            net_kwh,
            hostile,
            share,
            price,
        })
}

fn inject() -> impl Strategy<Value = control::InjectRequest> {
    use control::inject_request::Event;
    let event = prop_oneof![
        (extreme_u32(), extreme_u32(), value_f64(), value_f64(), extreme_u32()).prop_map(
            |(a, b, pv, load, slots)| {
                Event::Scale(control::ScaleGroup {
                    first_prosumer_id: a,
                    last_prosumer_id: b,
                    pv_scale: pv,
                    load_scale: load,
                    slots,
                })
            }
        ),
        (value_f64(), value_f64(), extreme_u32()).prop_map(|(r, f, slots)| {
            Event::Tariff(control::TariffOverride { retail_per_kwh: r, feed_in_per_kwh: f, slots })
        }),
        (value_f64(), value_f64()).prop_map(|(i, e)| Event::Feeder(control::FeederLimit {
            import_limit_kw: i,
            export_limit_kw: e
        })),
        (extreme_u32(), extreme_u32(), extreme_u32()).prop_map(|(a, b, slots)| {
            Event::Offline(control::TakeOffline {
                first_prosumer_id: a,
                last_prosumer_id: b,
                slots,
            })
        }),
    ];
    prop::option::weighted(0.95, event).prop_map(|event| control::InjectRequest { event })
}

fn set_mode() -> impl Strategy<Value = control::SetModeRequest> {
    (prop_oneof![0i32..4, any::<i32>()], extreme_u64(), extreme_u64()).prop_map(
        |(mode, slot_period_ms, deadline_ms)| control::SetModeRequest {
            mode,
            slot_period_ms,
            deadline_ms,
        },
    )
}

fn scenario() -> impl Strategy<Value = String> {
    let event = (0u64..40, value_f64(), value_f64(), extreme_u32(), 0usize..5).prop_map(|(at, a, b, n, kind)| {
        // serde_json writes NaN and ∞ as null, which the parser refuses.
        let (a, b) = (serde_json::json!(a), serde_json::json!(b));
        match kind {
            0 => format!(r#"{{"at_slot": {at}, "scale": {{"first_prosumer_id": 0, "last_prosumer_id": {n}, "pv_scale": {a}, "load_scale": {b}, "slots": {n}}}}}"#),
            1 => format!(r#"{{"at_slot": {at}, "tariff": {{"retail_per_kwh": {a}, "feed_in_per_kwh": {b}, "slots": {n}}}}}"#),
            2 => format!(r#"{{"at_slot": {at}, "feeder": {{"import_limit_kw": {a}, "export_limit_kw": {b}}}}}"#),
            3 => format!(r#"{{"at_slot": {at}, "offline": {{"first_prosumer_id": {n}, "last_prosumer_id": {n}, "slots": 1}}}}"#),
            _ => format!(r#"{{"at_slot": {at}, "bogus": {a}}}"#),
        }
    });
    prop_oneof![
        4 => vec(event, 0..4).prop_map(|events| format!(r#"{{"events": [{}]}}"#, events.join(", "))),
        1 => ".{0,30}",
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (prop_oneof![4 => "[a-z]{1,8}", 1 => ".{0,70}"], extreme_u32(), prop::option::weighted(0.2, (any::<usize>(), prop::option::of(extreme_u32()), secret())))
            .prop_map(|(name, count, resume)| Op::Register { name, count, resume }),
        3 => (any::<usize>(), secret(), prop_oneof![
                6 => Just(JoinDefect::None), 1 => Just(JoinDefect::Count), 1 => Just(JoinDefect::Id),
                1 => Just(JoinDefect::Kind), 1 => extreme_f64().prop_map(JoinDefect::Value),
            ])
            .prop_map(|(node, secret, defect)| Op::Join { node, secret, defect }),
        6 => (any::<usize>(), slot_choice(), vec(report_seed(), 0..4)).prop_map(|(node, slot, reports)| Op::Submit { node, slot, reports }),
        1 => (any::<usize>(), slot_choice()).prop_map(|(node, slot)| Op::Hold { node, slot }),
        2 => inject().prop_map(Op::Inject),
        1 => set_mode().prop_map(Op::SetMode),
        1 => scenario().prop_map(Op::LoadScenario),
        1 => extreme_u32().prop_map(Op::Step),
        3 => Just(Op::Open),
        3 => Just(Op::Clear),
        1 => any::<usize>().prop_map(Op::Disconnect),
        1 => (0u64..100_000).prop_map(Op::Expire),
    ]
}

/// The state and what a test client remembers of it.
struct Harness {
    s: MarketState,
    regs: Vec<Registration>,
    keys: Vec<NodeKey>,
    now_ms: u64,
    drawn: u64,
}

impl Harness {
    fn new() -> Harness {
        let ds = Arc::new(synthetic_dataset(3, 2, 60, 1));
        let settings = MarketSettings {
            min_prosumers: 2,
            max_batch: MAX_BATCH,
            insecure_no_auth: true,
            ..MarketSettings::default()
        };
        let s = MarketState::new(ds, SimConfig::default(), &settings, 42).expect("valid settings");
        Harness { s, regs: Vec::new(), keys: Vec::new(), now_ms: 0, drawn: 0 }
    }

    fn secret(&self, reg: Option<&Registration>, choice: Secret) -> String {
        match (reg, choice) {
            (Some(r), Secret::Right) => r.secret.clone(),
            (_, Secret::Malformed) => "not-a-secret".into(),
            _ => HEX.replace('0', "9"),
        }
    }

    fn slot(&self, choice: SlotChoice) -> u64 {
        let open = self.s.open_slot().map_or(self.s.next_slot(), |o| o.slot);
        match choice {
            SlotChoice::Open => open,
            SlotChoice::Next => open.wrapping_add(1),
            SlotChoice::Far => u64::MAX,
        }
    }

    /// A wire report from a seed, for a node whose first id is `first`.
    fn wire_report(&self, first: u32, seed: ReportSeed) -> market::HouseholdReport {
        let (lo, hi) = self.s.open_bounds().map_or((0, 0), |(_, b)| (b.feed_in.0, b.retail.0));
        let net = seed.net_kwh;
        let (load, pv) = if net > 0.0 { (net, 0.0) } else { (0.0, -net) };
        let quantity = (Wh::floor_from_kwh(net.abs()).0 as f64 * seed.share) as i64;
        let order = (quantity > 0).then(|| common::Order {
            side: if net > 0.0 { common::Side::Buy } else { common::Side::Sell }.into(),
            quantity_wh: quantity,
            limit_price_micros: lo + ((hi - lo) as f64 * seed.price) as i64,
        });
        let mut r = market::HouseholdReport {
            prosumer_id: first.wrapping_add(seed.offset),
            load_kwh: load,
            pv_kwh: pv,
            net_kwh: net,
            order,
            ..market::HouseholdReport::default()
        };
        if let Some(v) = seed.hostile {
            match seed.offset {
                0 => r.load_kwh = v,
                1 => r.degradation_cost = v,
                _ => r.stored_kwh = v,
            }
        }
        r
    }

    /// Applies `op`; requests return their result, clock moves `None`.
    fn apply(&mut self, op: &Op) -> Option<Result<(), WireError>> {
        match op {
            Op::Open | Op::Clear | Op::Disconnect(_) | Op::Expire(_) => {
                self.clock_move(op);
                None
            }
            Op::Submit { .. } | Op::Hold { .. } if self.keys.is_empty() => None,
            request => Some(self.request(request)),
        }
    }

    /// A request a client may send, through the edge's checks to the state.
    fn request(&mut self, op: &Op) -> Result<(), WireError> {
        let now = self.now_ms;
        let pick = |i: &usize, n: usize| (n > 0).then(|| i % n);
        match op {
            Op::Register { name, count, resume } => {
                self.drawn += 1;
                let fresh = format!("{:032x}", self.drawn);
                let (session, first, secret) = match resume {
                    None => (String::new(), None, String::new()),
                    Some((i, first, choice)) => {
                        let reg = pick(i, self.regs.len()).map(|i| &self.regs[i]);
                        let session = reg.map_or_else(|| HEX.to_owned(), |r| r.session_id.clone());
                        (session, *first, self.secret(reg, *choice))
                    }
                };
                let request = RegisterRequest {
                    name,
                    prosumer_count: *count,
                    resume_session_id: &session,
                    resume_first_id: first,
                    resume_secret: &secret,
                };
                self.s
                    .register(request, fresh, now)
                    .map(|r| self.regs.push(r))
                    .map_err(WireError::from)
            }
            Op::Join { node, secret, defect } => {
                let reg = pick(node, self.regs.len()).map(|i| self.regs[i].clone());
                let session = reg.as_ref().map_or_else(|| HEX.to_owned(), |r| r.session_id.clone());
                let secret = self.secret(reg.as_ref(), *secret);
                let (first, count) =
                    reg.as_ref().map_or((0, 1), |r| (r.first_prosumer_id, r.prosumer_count));
                let mut infos: Vec<ProsumerInfo> = (first..first + count)
                    .map(|id| ProsumerInfo {
                        prosumer_id: id,
                        // Panels large enough for any generated position.
                        envelope: Envelope {
                            kind: ProsumerKind::PvOnly,
                            pv_kwp: 100.0,
                            battery: None,
                            ev: None,
                        },
                    })
                    .collect();
                match defect {
                    JoinDefect::None => {}
                    JoinDefect::Count => infos.push(infos[0].clone()),
                    JoinDefect::Id => infos[0].prosumer_id = infos[0].prosumer_id.wrapping_add(1),
                    // A consumer declaring PV: inconsistent with its kind.
                    JoinDefect::Kind => infos[0].envelope.kind = ProsumerKind::Consumer,
                    JoinDefect::Value(v) => infos[0].envelope.pv_kwp = *v,
                }
                // Through the edge, as the server does: envelopes are validated there.
                let wire: Vec<market::ProsumerSummary> =
                    infos.iter().map(|p| envelope_to_wire(p.prosumer_id, &p.envelope)).collect();
                let infos = prosumers_from_wire(&wire)?;
                self.s
                    .join(&session, &secret, &infos, now)
                    .map(|k| self.keys.push(k))
                    .map_err(WireError::from)
            }
            Op::Submit { node, slot, reports } => {
                let key = self.keys[node % self.keys.len()];
                let first = self.s.members.get(key.index).map_or(0, |n| n.first);
                let batch: Vec<market::HouseholdReport> =
                    reports.iter().map(|seed| self.wire_report(first, *seed)).collect();
                self.edge_submit(key, self.slot(*slot), &batch)
            }
            Op::Hold { node, slot } => {
                let key = self.keys[node % self.keys.len()];
                self.s.hold(key, self.slot(*slot), now).map(drop).map_err(WireError::from)
            }
            Op::Inject(request) => inject_from_wire(*request)
                .and_then(|event| self.s.inject(event).map_err(WireError::from))
                .map(drop),
            Op::SetMode(request) => mode_from_wire(request)
                .and_then(|command| match command {
                    crate::clock::ControlCommand::SetMode { mode, slot_period_ms, deadline_ms } => {
                        self.s.set_mode(mode, slot_period_ms, deadline_ms).map_err(WireError::from)
                    }
                    other => panic!("mode_from_wire made {other:?}"),
                })
                .map(drop),
            Op::LoadScenario(json) => self.s.load_scenario(json).map(drop).map_err(WireError::from),
            Op::Step(count) => self.s.step(*count).map(drop).map_err(WireError::from),
            Op::Open | Op::Clear | Op::Disconnect(_) | Op::Expire(_) => {
                unreachable!("a clock move: {op:?}")
            }
        }
    }

    /// Something the clock does: open or clear a slot, see a stream end,
    /// let time pass (and leases expire).
    fn clock_move(&mut self, op: &Op) {
        let now = self.now_ms;
        match op {
            Op::Open => {
                if self.s.may_open() {
                    self.s.open(now, 0);
                }
            }
            Op::Clear => {
                if self.s.open_slot().is_some() {
                    let out = self.s.clear();
                    check_cleared(&self.s, &out);
                }
            }
            Op::Disconnect(i) => {
                if !self.keys.is_empty() {
                    self.s.disconnect(self.keys[i % self.keys.len()], now);
                }
            }
            Op::Expire(dt) => {
                self.now_ms += dt;
                self.s.expire_leases(self.now_ms);
            }
            request => unreachable!("a request: {request:?}"),
        }
    }

    /// What `grpc::accept_batch` does: the edge's checks, then the state.
    fn edge_submit(
        &mut self,
        key: NodeKey,
        slot: u64,
        batch: &[market::HouseholdReport],
    ) -> Result<(), WireError> {
        let batch = market::OrderBatch { slot, reports: batch.to_vec() };
        let reports = batch_from_wire(&batch, self.s.open_bounds(), MAX_BATCH)?;
        self.s.submit(key, slot, reports, self.now_ms).map(drop).map_err(WireError::from)
    }
}

/// Balances of a cleared slot: every Wh bought was sold and every
/// nano-currency paid was received (exactly: fixed point), the physics of
/// the slot balance, the KPIs are finite.
fn check_cleared(s: &MarketState, out: &ClearOutcome) {
    let status = s.status();
    assert_eq!(status.money_balance_error, 0.0, "money paid ≠ money received: {status:?}");
    assert!(status.energy_balance_error_kwh < 1e-6, "energy: {status:?}");
    let (mut bought, mut sold) = (0i64, 0i64);
    for (_, node) in &out.per_node {
        for h in &node.settlements {
            let fill = h.fill;
            assert!(
                fill.quantity.0 >= 0 && fill.value.0 >= 0,
                "prosumer {}: {fill:?}",
                h.prosumer_id
            );
            assert!(
                fill.quantity.0 == 0 || h.side.is_some(),
                "prosumer {}: a fill without a side",
                h.prosumer_id
            );
            match h.side {
                Some(Side::Buy) => bought += fill.quantity.0,
                _ => sold += fill.quantity.0,
            }
        }
    }
    // A node that sent its batch and then lost its stream before the slot
    // cleared traded, but is not told (only connected nodes are): the
    // settlements sent then cover part of the trades. The money balance
    // above covers every report either way.
    let matched = (out.summary.matched_kwh * 1000.0).round() as i64;
    let told: usize = out.per_node.iter().map(|(_, node)| node.settlements.len()).sum();
    if told == out.summary.reported as usize {
        assert_eq!(bought, sold, "energy bought ≠ energy sold in slot {}", out.summary.slot);
        assert_eq!(bought, matched);
    } else {
        assert!(
            bought <= matched && sold <= matched,
            "slot {}: {bought}, {sold} of {matched} Wh",
            out.summary.slot
        );
    }
    let k = &status.kpis;
    for v in [
        k.load_kwh,
        k.pv_kwh,
        k.grid_import_kwh,
        k.grid_export_kwh,
        k.community_cost,
        k.p2p_kwh,
        k.co2_kg,
    ] {
        assert!(v.is_finite(), "{k:?}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn refused_requests_change_nothing_and_cleared_slots_balance(ops in vec(op(), 1..60)) {
        let mut h = Harness::new();
        for op in &ops {
            let before = fingerprint(&h.s);
            if let Some(Err(e)) = h.apply(op) {
                prop_assert_ne!(e.code(), tonic::Code::Ok);
                let message = e.to_string();
                prop_assert!(message.len() > 12, "a refusal needs a message: {:?}", e);
                prop_assert_eq!(&fingerprint(&h.s), &before, "refused {:?} ({}) changed the state", op, message);
            }
        }
    }
}

/// A node that reports and then loses its stream before the clearing
/// (found by the property above): its trades clear, it is not told, the
/// books still balance.
#[test]
fn a_reporter_that_disconnects_before_the_clearing_still_balances() {
    let mut h = Harness::new();
    h.apply(&Op::Register { name: "a".into(), count: 2, resume: None }).unwrap().unwrap();
    h.apply(&Op::Join { node: 0, secret: Secret::Right, defect: JoinDefect::None })
        .unwrap()
        .unwrap();
    h.apply(&Op::Open);
    let seed =
        |offset, net_kwh| ReportSeed { offset, net_kwh, hostile: None, share: 1.0, price: 0.0 };
    h.apply(&Op::Submit {
        node: 0,
        slot: SlotChoice::Open,
        reports: vec![seed(1, -1.9), seed(0, 1.4)],
    })
    .unwrap()
    .unwrap();
    h.apply(&Op::Disconnect(0));
    let out = h.s.clear();
    assert!(out.summary.matched_kwh > 0.0 && out.per_node.is_empty(), "{out:?}");
    check_cleared(&h.s, &out);
}

/// Makes sure the sequences above reach the interesting states: with a
/// plain scripted run, slots do open and clear with trades.
#[test]
fn the_harness_trades() {
    let mut h = Harness::new();
    let reg = |name: &str| Op::Register { name: name.into(), count: 2, resume: None };
    let join = |i: usize| Op::Join { node: i, secret: Secret::Right, defect: JoinDefect::None };
    for op in [reg("a"), reg("b")] {
        h.apply(&op).unwrap().unwrap();
    }
    h.apply(&join(0)).unwrap().unwrap();
    h.apply(&join(1)).unwrap().unwrap();
    h.apply(&Op::Open);
    let seed =
        |offset, net_kwh, price| ReportSeed { offset, net_kwh, hostile: None, share: 1.0, price };
    let submit = |node: usize, reports| Op::Submit { node, slot: SlotChoice::Open, reports };
    h.apply(&submit(0, vec![seed(0, 2.0, 1.0)])).unwrap().unwrap();
    h.apply(&submit(1, vec![seed(0, -2.0, 0.0)])).unwrap().unwrap();
    let before = h.s.status();
    h.apply(&Op::Clear);
    let after = h.s.status();
    assert_eq!(after.next_slot, before.next_slot);
    assert!(after.kpis.p2p_kwh > 0.0, "the two reports traded: {after:?}");
}

/// Scenario events in force, pending and scheduled are bounded together:
/// each slot carries every effect in force to every node. Before the
/// bound, one injection per slot (each lasting up to 100,000 slots) grew
/// the `SlotOpen` without end.
#[test]
fn live_scenario_events_are_bounded() {
    use crate::scenario::{TakeOffline, MAX_LIVE_EVENTS};
    let mut h = Harness::new();
    let event = ScenarioEvent::Offline(TakeOffline {
        first_prosumer_id: 0,
        last_prosumer_id: 0,
        slots: 100_000,
    });
    h.s.load_scenario(
        r#"{"events": [{"at_slot": 5, "feeder": {}}, {"at_slot": 9, "feeder": {}}]}"#,
    )
    .unwrap();
    for _ in 2..MAX_LIVE_EVENTS {
        h.s.inject(event).unwrap();
    }
    let before = fingerprint(&h.s);
    let e = h.s.inject(event).unwrap_err();
    assert!(matches!(e, MarketError::Exhausted { .. }), "{e}");
    assert!(e.to_string().contains("event: 10000 events in force or scheduled"), "{e}");
    let e = h.s.load_scenario(r#"{"events": [{"at_slot": 3, "feeder": {}}]}"#).unwrap_err();
    assert!(e.to_string().contains("scenario_json.events"), "{e}");
    assert_eq!(fingerprint(&h.s), before);
}
