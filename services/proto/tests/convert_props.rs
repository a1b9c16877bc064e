//! Property tests over every wire → domain conversion of `peergrid_proto::convert`
//! (issue 12; the remote policy's of issue 16): hostile but well-formed messages — extreme floats (±1e38,
//! ±MAX, subnormals, NaN, ±∞), extreme integers, long repeated fields — and
//! random bytes decoded with prost never make a conversion panic; whatever a
//! conversion accepts lies within the bounds its module documents; and an
//! accepted message re-encodes to itself (wire → domain → wire is identity),
//! as valid domain values do the other way round.
//!
//! Deterministic: proptest's default configuration (256 cases, a fixed
//! seed per test unless `PROPTEST_RNG_SEED` says otherwise); regressions
//! are not persisted.

use peergrid_core::experience::{
    Rollout, MAX_ABS_ACTION, MAX_ABS_OBSERVATION, MAX_ABS_REWARD, MAX_STEPS,
};
use peergrid_core::household::{conditions_for, MAX_COMBINED_SCALE};
use peergrid_core::market::{PriceBounds, Side};
use peergrid_core::observation::OBS_DIM;
use peergrid_core::policy::remote::{ActionBatch, ObservationBatch};
use peergrid_core::policy::weights::{to_safetensors, PolicyWeights};
use peergrid_core::policy::{ActorCritic, MlpSpec, ObsNormaliser, ACT_DIM};
use peergrid_core::units::PricePerKwh;
use peergrid_proto::convert::cleared::{
    settlement_from_wire, settlement_to_wire, slot_cleared_from_wire, slot_cleared_to_wire,
};
use peergrid_proto::convert::experience::{
    node_name_from_wire, policy_from_wire, policy_update_from_blob, rollout_from_wire,
};
use peergrid_proto::convert::slot::{
    report_from_wire, report_to_wire, slot_open_from_wire, slot_open_to_wire, MAX_ADJUSTMENTS,
    MAX_DATA_SLOT, MAX_SCALE, MAX_SLOT_KWH, MAX_SLOT_MONEY,
};
use peergrid_proto::convert::{
    order_from_wire, reward_weights_from_json, side_from_wire, slot_tariff_from_wire,
    tou_band_from_wire, MAX_CO2_KG_PER_KWH, MAX_ORDER_WH, MAX_PRICE_MICROS,
};
use peergrid_proto::pb::common::v1 as common;
use peergrid_proto::pb::learner::v1 as learner;
use peergrid_proto::pb::market::v1 as market;
use peergrid_proto::pb::policy::v1 as policy;
use peergrid_proto::WireError;
use proptest::collection::vec;
use proptest::prelude::*;
use prost::Message;
use tonic::Code;

fn config() -> ProptestConfig {
    ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() }
}

// ----- strategies ------------------------------------------------------------

/// Floats a hostile sender picks, mixed with ordinary ones from `typical`
/// (three times in four, so messages with several fields are often
/// valid and the checks of accepted values run).
fn hostile_f64_in(typical: std::ops::Range<f64>) -> impl Strategy<Value = f64> {
    prop_oneof![
        36 => typical,
        1 => Just(0.0),
        1 => Just(-0.0),
        1 => Just(1e38),
        1 => Just(-1e38),
        1 => Just(f64::MAX),
        1 => Just(f64::MIN),
        1 => Just(f64::MIN_POSITIVE),
        1 => Just(f64::MIN_POSITIVE / 4.0), // subnormal
        1 => Just(-5e-324),
        1 => Just(f64::NAN),
        1 => Just(f64::INFINITY),
        1 => Just(f64::NEG_INFINITY),
        1 => any::<f64>(),
    ]
}

/// Energies and money of one slot.
fn hostile_f64() -> impl Strategy<Value = f64> {
    hostile_f64_in(0.0..20.0)
}

fn hostile_f32() -> impl Strategy<Value = f32> {
    prop_oneof![
        4 => -2.0f32..2.0,
        1 => Just(3e38f32),
        1 => Just(-1e38f32),
        1 => Just(f32::MAX),
        1 => Just(f32::MIN_POSITIVE / 8.0),
        1 => Just(f32::NAN),
        1 => Just(f32::INFINITY),
        1 => Just(f32::NEG_INFINITY),
        1 => any::<f32>(),
    ]
}

fn hostile_i64(typical: std::ops::RangeInclusive<i64>) -> impl Strategy<Value = i64> {
    prop_oneof![
        14 => typical,
        1 => Just(0i64),
        1 => Just(-1i64),
        1 => Just(i64::MAX),
        1 => Just(i64::MIN),
        1 => Just(MAX_PRICE_MICROS + 1),
        1 => Just(MAX_ORDER_WH + 1),
        1 => any::<i64>(),
    ]
}

fn hostile_u64(typical: std::ops::RangeInclusive<u64>) -> impl Strategy<Value = u64> {
    prop_oneof![6 => typical, 1 => Just(u64::MAX), 1 => Just(MAX_DATA_SLOT + 1), 1 => any::<u64>()]
}

fn enum_value() -> impl Strategy<Value = i32> {
    prop_oneof![8 => 0i32..5, 1 => any::<i32>()]
}

/// A valid tariff (so messages around it reach their other checks), or a hostile one.
fn tariff() -> impl Strategy<Value = common::SlotTariff> {
    let valid = (0..=MAX_PRICE_MICROS, 0.0..=MAX_CO2_KG_PER_KWH, 1i32..=3, 0.0f64..=1.0).prop_map(
        |(retail, co2, band, f)| common::SlotTariff {
            retail_micros: retail,
            feed_in_micros: (retail as f64 * f) as i64,
            co2_kg_per_kwh: co2,
            band,
        },
    );
    let hostile =
        (
            hostile_i64(0..=500_000),
            hostile_i64(0..=500_000),
            hostile_f64_in(0.0..5.0),
            enum_value(),
        )
            .prop_map(|(retail_micros, feed_in_micros, co2_kg_per_kwh, band)| {
                common::SlotTariff { retail_micros, feed_in_micros, co2_kg_per_kwh, band }
            });
    prop_oneof![valid, hostile]
}

/// A slot's price bounds: mostly household tariffs, sometimes anything up to the ceiling.
fn bounds() -> impl Strategy<Value = PriceBounds> {
    (prop_oneof![4 => 100_000..=600_000i64, 1 => 0..=MAX_PRICE_MICROS], 0.0f64..=0.5).prop_map(
        |(retail, f)| PriceBounds {
            feed_in: PricePerKwh((retail as f64 * f) as i64),
            retail: PricePerKwh(retail),
        },
    )
}

/// An order of about `typical_wh` Wh.
fn order_of(typical_wh: i64) -> impl Strategy<Value = common::Order> {
    (enum_value(), hostile_i64(-5..=typical_wh), hostile_i64(0..=600_000)).prop_map(
        |(side, quantity_wh, limit_price_micros)| common::Order {
            side,
            quantity_wh,
            limit_price_micros,
        },
    )
}

fn order() -> impl Strategy<Value = common::Order> {
    order_of(MAX_ORDER_WH)
}

fn adjustment() -> impl Strategy<Value = market::Adjustment> {
    (
        any::<u32>(),
        any::<u32>(),
        hostile_f64_in(0.0..100.0),
        hostile_f64_in(0.0..100.0),
        any::<bool>(),
    )
        .prop_map(|(a, b, load_scale, pv_scale, offline)| market::Adjustment {
            first_prosumer_id: a.min(b),
            last_prosumer_id: a.max(b),
            load_scale,
            pv_scale,
            offline,
        })
}

/// Hostile tariff-ahead parts (`max`, `mean`, `hours`, plausible?): made
/// plausible against the slot's next tariff most of the time, so the
/// accepted branch runs.
type AheadParts = (i64, i64, f64, bool);

fn tariff_ahead() -> impl Strategy<Value = Option<AheadParts>> {
    prop::option::weighted(
        0.95,
        (
            hostile_i64(0..=600_000),
            hostile_i64(0..=600_000),
            hostile_f64_in(0.0..30.0),
            prop::bool::weighted(0.8),
        ),
    )
}

fn tariff_ahead_for(
    parts: Option<AheadParts>,
    next: Option<&common::SlotTariff>,
    slot_hours: f64,
) -> Option<market::TariffAhead> {
    let (max, mean, hours, plausible) = parts?;
    let floor = next.map_or(0, |t| t.retail_micros);
    Some(if plausible {
        let max = floor.saturating_add(max.rem_euclid(1_000));
        market::TariffAhead {
            retail_max_micros: max,
            retail_mean_micros: mean.rem_euclid(max.max(0).saturating_add(1)),
            hours_until_max: slot_hours + hours.clamp(0.0, 24.0),
        }
    } else {
        market::TariffAhead {
            retail_max_micros: max,
            retail_mean_micros: mean,
            hours_until_max: hours,
        }
    })
}

fn slot_open() -> impl Strategy<Value = market::SlotOpen> {
    (
        (
            any::<u64>(),
            hostile_u64(0..=10_000),
            prop_oneof![8 => 0u32..24, 1 => any::<u32>()],
            hostile_f64_in(0.0..1.0),
            any::<bool>(),
        ),
        (
            hostile_f64_in(0.02..24.0),
            prop::option::weighted(0.95, tariff()),
            prop::option::weighted(0.95, tariff()),
        ),
        (hostile_i64(0..=MAX_PRICE_MICROS), any::<i64>(), vec(adjustment(), 0..6)),
        (tariff_ahead(), hostile_f64_in(0.0..10.0), hostile_f64_in(-10.0..10.0)),
    )
        .prop_map(
            |(
                (slot, data_slot, hour, day_fraction, weekend),
                (slot_hours, tariff, next_tariff),
                (price, deadline, adj),
                (ahead, last_p2p, last_net),
            )| {
                market::SlotOpen {
                    last_p2p_kwh_per_household: last_p2p,
                    last_net_kwh_per_household: last_net,
                    tariff_ahead: tariff_ahead_for(ahead, next_tariff.as_ref(), slot_hours),
                    slot,
                    data_slot,
                    hour,
                    day_fraction,
                    weekend,
                    slot_hours,
                    tariff,
                    next_tariff,
                    last_clearing_price_micros: price,
                    deadline_unix_ms: deadline,
                    adjustments: adj,
                }
            },
        )
}

/// A report whose position is consistent with its physics most of the
/// time (so the order checks are reached), with hostile values anywhere.
fn report() -> impl Strategy<Value = market::HouseholdReport> {
    (
        (any::<u32>(), hostile_f64(), hostile_f64(), hostile_f64(), hostile_f64()),
        (hostile_f64(), hostile_f64(), hostile_f64(), hostile_f64()),
        (prop::option::weighted(0.7, order_of(20_000)), prop::bool::weighted(0.8), hostile_f64()),
    )
        .prop_map(
            |(
                (prosumer_id, load, pv, charged, discharged),
                (losses, degradation, shortfall, stored),
                (order, consistent, net),
            )| {
                market::HouseholdReport {
                    prosumer_id,
                    load_kwh: load,
                    pv_kwh: pv,
                    net_kwh: if consistent { load - pv + charged - discharged } else { net },
                    battery_charged_kwh: charged,
                    battery_discharged_kwh: discharged,
                    battery_losses_kwh: losses,
                    degradation_cost: degradation,
                    ev_shortfall_kwh: shortfall,
                    stored_kwh: stored,
                    order,
                }
            },
        )
}

/// A settlement: half the time a plausible one (the accepted branch runs
/// often), otherwise hostile.
fn settlement() -> impl Strategy<Value = market::ProsumerSettlement> {
    prop_oneof![plausible_settlement(), hostile_settlement()]
}

/// A settlement as the market builds it: a fill only with a side, worth
/// its energy at some tariff price, the split what side and fill imply.
fn plausible_settlement() -> impl Strategy<Value = market::ProsumerSettlement> {
    (
        (any::<u32>(), 0..=MAX_ORDER_WH, 0..=MAX_PRICE_MICROS, 0..=2i32),
        (0.0..20.0f64, 0.0..20.0f64, 0.0..20.0f64, 0.0..20.0f64, 0.0..20.0f64),
    )
        .prop_map(|((prosumer_id, filled_wh, price, side), (gi, ge, ic, er, op))| {
            let filled_wh = if side == 0 { 0 } else { filled_wh };
            let mut w = market::ProsumerSettlement {
                prosumer_id,
                filled_wh,
                fill_value_nanos: filled_wh * price,
                grid_import_kwh: gi,
                grid_export_kwh: ge,
                import_cost: ic,
                export_revenue: er,
                overload_penalty: op,
                side,
                ..market::ProsumerSettlement::default()
            };
            consistent_split(&mut w);
            w
        })
}

/// Sets the P2P split `settle_household` builds from the side and the fill.
fn consistent_split(w: &mut market::ProsumerSettlement) {
    let (kwh, money) = (w.filled_wh as f64 / 1000.0, w.fill_value_nanos as f64 / 1e9);
    let traded = w.filled_wh > 0;
    let buy = traded && w.side == common::Side::Buy as i32;
    let sell = traded && w.side == common::Side::Sell as i32;
    w.p2p_bought_kwh = if buy { kwh } else { 0.0 };
    w.p2p_paid = if buy { money } else { 0.0 };
    w.p2p_sold_kwh = if sell { kwh } else { 0.0 };
    w.p2p_revenue = if sell { money } else { 0.0 };
    w.p2p_received_kwh = w.p2p_bought_kwh * 0.98;
}

/// A settlement with hostile numbers: the side mostly a valid one
/// (sometimes any value), the split three times in four consistent.
fn hostile_settlement() -> impl Strategy<Value = market::ProsumerSettlement> {
    (
        (
            any::<u32>(),
            hostile_i64(0..=MAX_ORDER_WH),
            hostile_i64(0..=MAX_ORDER_WH * MAX_PRICE_MICROS),
        ),
        (hostile_f64(), hostile_f64(), hostile_f64(), hostile_f64(), hostile_f64(), hostile_f64()),
        (
            prop_oneof![3 => 0..=2i32, 1 => any::<i32>()],
            prop::bool::weighted(0.75),
            hostile_f64(),
            hostile_f64(),
            hostile_f64(),
        ),
    )
        .prop_map(
            |(
                (prosumer_id, filled_wh, value),
                (gi, ge, p2p, ic, er, op),
                (side, split, bought, paid, demand),
            )| {
                // Mostly a plausible value for the fill, sometimes anything.
                let fill_value_nanos = if value % 3 == 0 {
                    value
                } else {
                    filled_wh.saturating_mul(value.rem_euclid(MAX_PRICE_MICROS + 2))
                };
                let mut w = market::ProsumerSettlement {
                    prosumer_id,
                    filled_wh,
                    fill_value_nanos,
                    grid_import_kwh: gi,
                    grid_export_kwh: ge,
                    p2p_received_kwh: p2p,
                    import_cost: ic,
                    export_revenue: er,
                    overload_penalty: op,
                    side,
                    p2p_bought_kwh: bought,
                    p2p_sold_kwh: 0.0,
                    p2p_paid: paid,
                    p2p_revenue: 0.0,
                    demand_charge: demand,
                };
                if split {
                    consistent_split(&mut w);
                }
                w
            },
        )
}

/// A `SlotCleared` and the id range of the node receiving it: mostly
/// plausible settlements; their ids unique (a quarter of the time
/// reversed), missing ids unique but maybe also settled, both drawn from
/// 0..12 against a range of 6..13 ids from 0..3 (so some fall outside).
fn slot_cleared() -> impl Strategy<Value = (market::SlotCleared, std::ops::Range<u32>)> {
    let ids =
        |n: std::ops::Range<usize>| prop::sample::subsequence((0u32..12).collect::<Vec<_>>(), n);
    (
        (
            any::<u64>(),
            prop_oneof![
                Just(None),
                (0..=MAX_PRICE_MICROS).prop_map(Some),
                any::<i64>().prop_map(Some)
            ],
        ),
        (
            hostile_i64(0..=MAX_ORDER_WH),
            vec(prop_oneof![4 => plausible_settlement(), 1 => hostile_settlement()], 6),
            ids(0..7),
            ids(0..3),
            prop::bool::weighted(0.25),
        ),
        (0u32..3, 6u32..13),
    )
        .prop_map(
            |(
                (slot, clearing_price_micros),
                (matched_wh, mut all, settled, missing, reverse),
                (first, count),
            )| {
                all.truncate(settled.len());
                for (s, id) in all.iter_mut().zip(&settled) {
                    s.prosumer_id = *id;
                }
                if reverse {
                    all.reverse();
                }
                let w = market::SlotCleared {
                    slot,
                    clearing_price_micros,
                    matched_wh,
                    settlements: all,
                    missing_prosumer_ids: missing,
                };
                (w, first..first + count)
            },
        )
}

/// A batch of `steps` × `ids` samples, every array the right length, the
/// values hostile; sometimes one array is cut or grown.
fn batch() -> impl Strategy<Value = learner::ExperienceBatch> {
    (1usize..4, 1usize..4, prop::bool::weighted(0.3)).prop_flat_map(|(steps, p, bad_length)| {
        let n = steps * p;
        let lengths = if bad_length { (0usize..3).boxed() } else { Just(1usize).boxed() };
        (
            (
                Just(steps),
                prop_oneof![Just("node-a".to_owned()), ".{0,70}"],
                prop_oneof![Just(1u64), any::<u64>()],
            ),
            (
                vec(any::<u32>(), p),
                vec(hostile_f32(), n * OBS_DIM),
                vec(hostile_f32(), n * ACT_DIM),
            ),
            (
                vec(hostile_f32(), n),
                vec(hostile_f32(), n),
                vec(hostile_f32(), n),
                vec(any::<bool>(), n),
            ),
            (vec(hostile_f32(), p), vec(hostile_f32(), n), vec(hostile_f32(), n), lengths),
        )
            .prop_map(
                |(
                    (steps, node_name, policy_version),
                    (mut ids, observations, actions),
                    (log_probs, values, rewards, dones),
                    (bootstrap_values, costs, mut grid_import_kwh, length),
                )| {
                    // Ascending ids most of the time, so the value checks run.
                    if ids[0] % 4 != 0 {
                        ids.sort_unstable();
                    }
                    grid_import_kwh.resize(grid_import_kwh.len() + length - 1, 0.5);
                    learner::ExperienceBatch {
                        node_name,
                        policy_version,
                        first_slot: 0,
                        steps: steps as u32,
                        prosumer_ids: ids,
                        observations,
                        actions,
                        log_probs,
                        values,
                        rewards,
                        dones,
                        bootstrap_values,
                        costs,
                        grid_import_kwh,
                    }
                },
            )
    })
}

/// Ascending ids most of the time (so the value checks run), as a remote
/// policy's request or answer would carry them.
fn ids(p: usize) -> impl Strategy<Value = Vec<u32>> {
    vec(any::<u32>(), p).prop_map(|mut ids| {
        if ids[0] % 4 != 0 {
            ids.sort_unstable();
        }
        ids
    })
}

/// `n` floats: ordinary ones from `typical` three times in four (so whole
/// arrays are often valid and the checks of accepted values run), else hostile.
fn floats(n: usize, typical: std::ops::Range<f32>) -> impl Strategy<Value = Vec<f32>> {
    prop_oneof![3 => vec(typical, n), 1 => vec(hostile_f32(), n)]
}

/// An agent-node's `ActRequest` to a remote policy, hostile values,
/// sometimes a cut or grown array, sometimes without feedback.
fn act_request() -> impl Strategy<Value = policy::ActRequest> {
    (1usize..4, prop::bool::weighted(0.3)).prop_flat_map(|(p, bad_length)| {
        let grow = if bad_length { (0usize..3).boxed() } else { Just(1usize).boxed() };
        (
            (
                ids(p),
                floats(p * OBS_DIM, -2.0..2.0),
                hostile_u64(1..=1000),
                prop_oneof![Just("node-a".to_owned()), ".{0,70}"],
            ),
            (
                prop::bool::weighted(0.8),
                hostile_u64(0..=999),
                floats(p, -2.0..2.0),
                floats(p, -2.0..2.0),
            ),
            (
                floats(p, 0.0..2.0),
                vec(any::<bool>(), p),
                vec(any::<bool>(), p),
                any::<bool>(),
                grow,
            ),
        )
            .prop_map(
                |(
                    (prosumer_ids, observations, slot, node_name),
                    (with_feedback, fb_slot, rewards, costs),
                    (mut imports, dones, by_market, remote, grow),
                )| {
                    imports.resize(imports.len() + grow - 1, 0.5);
                    let previous = with_feedback.then(|| policy::SlotFeedback {
                        slot: fb_slot,
                        prosumer_ids: prosumer_ids.clone(),
                        rewards,
                        costs,
                        grid_import_kwh: imports,
                        dones,
                        settled_by_market: by_market,
                        remote_actions: remote,
                    });
                    policy::ActRequest { node_name, slot, prosumer_ids, observations, previous }
                },
            )
    })
}

/// A remote policy's `ActResponse`: hostile actions, sometimes the wrong count.
fn act_response() -> impl Strategy<Value = policy::ActResponse> {
    (1usize..4, prop_oneof![3 => Just(0usize), 1 => 1usize..5]).prop_flat_map(|(p, extra)| {
        (ids(p), floats(p * ACT_DIM + extra, -2.0..2.0), any::<u64>()).prop_map(
            |(prosumer_ids, actions, slot)| policy::ActResponse { slot, prosumer_ids, actions },
        )
    })
}

// ----- checks of accepted values --------------------------------------------

fn assert_invalid_argument(e: &WireError) {
    assert_eq!(e.code(), Code::InvalidArgument, "{e}");
    let WireError::InvalidArgument { field, reason } = e else { unreachable!() };
    assert!(!field.is_empty() && !reason.is_empty(), "{e:?}");
}

fn in_kwh(v: f64, lo: f64) -> bool {
    v.is_finite() && (lo..=MAX_SLOT_KWH).contains(&v)
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn enums_accept_only_named_values(v in any::<i32>()) {
        match side_from_wire(v, "side") {
            Ok(_) => prop_assert!(v == 1 || v == 2),
            Err(e) => assert_invalid_argument(&e),
        }
        match tou_band_from_wire(v, "band") {
            Ok(_) => prop_assert!((1..=3).contains(&v)),
            Err(e) => assert_invalid_argument(&e),
        }
    }

    #[test]
    fn tariffs_accepted_are_within_bounds_and_round_trip(w in tariff()) {
        match slot_tariff_from_wire(&w, "tariff") {
            Ok(t) => {
                prop_assert!(0 <= t.feed_in.0 && t.feed_in <= t.retail && t.retail.0 <= MAX_PRICE_MICROS);
                prop_assert!(t.co2_kg_per_kwh.is_finite() && (0.0..=MAX_CO2_KG_PER_KWH).contains(&t.co2_kg_per_kwh));
                prop_assert_eq!(common::SlotTariff::from(&t), w);
            }
            Err(e) => {
                assert_invalid_argument(&e);
                prop_assert!(e.to_string().starts_with("invalid tariff."), "{}", e);
            }
        }
    }

    #[test]
    fn orders_accepted_are_within_bounds_and_round_trip(w in order(), b in bounds(), id in any::<u64>()) {
        match order_from_wire(&w, id, b, "order") {
            Ok(o) => {
                prop_assert!((1..=MAX_ORDER_WH).contains(&o.quantity.0));
                prop_assert!(b.feed_in <= o.limit_price && o.limit_price <= b.retail);
                prop_assert_eq!(o.id, id);
                prop_assert_eq!(common::Order::from(&o), w);
            }
            Err(e) => assert_invalid_argument(&e),
        }
    }

    #[test]
    fn slot_opens_accepted_are_within_bounds_and_round_trip(w in slot_open()) {
        match slot_open_from_wire(&w) {
            Ok(open) => {
                let ctx = &open.ctx;
                prop_assert!(ctx.hour <= 23 && (0.0..=1.0).contains(&ctx.day_fraction));
                prop_assert!(ctx.hours.is_finite() && (1.0 / 60.0..=24.0).contains(&ctx.hours));
                prop_assert!(ctx.data_slot as u64 <= MAX_DATA_SLOT);
                let price = ctx.last_clearing_price_per_kwh;
                prop_assert!((0.0..=MAX_PRICE_MICROS as f64 / 1e6).contains(&price), "{}", price);
                for a in &open.adjustments {
                    prop_assert!(a.first_id <= a.last_id);
                    for s in [a.conditions.load_scale, a.conditions.pv_scale] {
                        prop_assert!(s.is_finite() && (0.0..=MAX_SCALE).contains(&s));
                    }
                    // What a household plays under them stays finite, however they overlap.
                    let (c, _) = conditions_for(a.first_id, &open.adjustments);
                    prop_assert!((0.0..=MAX_COMBINED_SCALE).contains(&c.load_scale) && (0.0..=MAX_COMBINED_SCALE).contains(&c.pv_scale));
                }
                prop_assert_eq!(slot_open_to_wire(&open), w);
            }
            Err(e) => assert_invalid_argument(&e),
        }
    }

    #[test]
    fn reports_accepted_are_physical_and_round_trip(w in report(), b in bounds()) {
        match report_from_wire(&w, b, "reports[0]") {
            Ok(r) => {
                for v in [r.load_kwh, r.pv_kwh, r.battery.charged_kwh, r.battery.discharged_kwh, r.battery.losses_kwh, r.ev_shortfall_kwh] {
                    prop_assert!(in_kwh(v, 0.0), "{:?}", r);
                }
                prop_assert!(in_kwh(r.net_kwh, -MAX_SLOT_KWH));
                prop_assert!(r.degradation_cost.is_finite() && (0.0..=MAX_SLOT_MONEY).contains(&r.degradation_cost));
                prop_assert!(r.stored_kwh.is_finite() && r.stored_kwh >= 0.0);
                if let Some(o) = r.order {
                    prop_assert!(o.quantity.0 >= 1 && b.feed_in <= o.limit_price && o.limit_price <= b.retail);
                    // A deficit only buys, a surplus only sells, never more than the position.
                    prop_assert_eq!(o.side == Side::Buy, r.net_kwh > 0.0);
                    prop_assert!(o.quantity.0 as f64 <= r.net_kwh.abs() * 1000.0 + 1e-6);
                }
                prop_assert_eq!(report_to_wire(&r), w);
            }
            Err(e) => {
                assert_invalid_argument(&e);
                prop_assert!(e.to_string().starts_with("invalid reports[0]."), "{}", e);
            }
        }
    }

    #[test]
    fn settlements_accepted_are_within_bounds_and_round_trip(w in settlement()) {
        match settlement_from_wire(&w, "settlements[0]") {
            Ok(h) => {
                let (fill, s) = (h.fill, h.settlement);
                prop_assert!((0..=MAX_ORDER_WH).contains(&fill.quantity.0));
                // The fill's value is at most its energy at the highest tariff price.
                prop_assert!(0 <= fill.value.0 && fill.value.0 <= fill.quantity.0 as i128 * MAX_PRICE_MICROS as i128);
                prop_assert!(fill.quantity.0 == 0 || h.side.is_some());
                for v in [s.grid_import_kwh, s.grid_export_kwh, s.p2p_received_kwh, s.p2p_bought_kwh, s.p2p_sold_kwh] {
                    prop_assert!(in_kwh(v, 0.0));
                }
                for v in [s.import_cost, s.export_revenue, s.overload_penalty, s.p2p_paid, s.p2p_revenue, s.demand_charge] {
                    prop_assert!(v.is_finite() && (0.0..=MAX_SLOT_MONEY).contains(&v), "{:?}", s);
                }
                // The split follows the side: one side trades, a buyer receives at most what it bought.
                prop_assert!(s.p2p_sold_kwh == 0.0 || h.side == Some(Side::Sell), "{:?}", h);
                prop_assert!(s.p2p_bought_kwh == 0.0 || h.side == Some(Side::Buy), "{:?}", h);
                prop_assert_eq!(s.p2p_bought_kwh + s.p2p_sold_kwh, fill.quantity.kwh());
                prop_assert_eq!(s.p2p_paid + s.p2p_revenue, fill.value.amount());
                prop_assert!(s.p2p_received_kwh <= s.p2p_bought_kwh);
                prop_assert_eq!(settlement_to_wire(&h), w);
            }
            Err(e) => {
                assert_invalid_argument(&e);
                prop_assert!(e.to_string().starts_with("invalid settlements[0]."), "{}", e);
            }
        }
    }

    #[test]
    fn cleared_slots_accepted_name_hosted_ids_once_and_round_trip((w, hosted) in slot_cleared()) {
        match slot_cleared_from_wire(&w, &hosted) {
            Ok(c) => {
                prop_assert!(c.clearing_price.is_none_or(|p| (0..=MAX_PRICE_MICROS).contains(&p.0)));
                prop_assert!(c.matched.0 >= 0);
                prop_assert!(c.settlements.windows(2).all(|p| p[0].prosumer_id < p[1].prosumer_id), "sorted, unique");
                let settled: Vec<u32> = c.settlements.iter().map(|h| h.prosumer_id).collect();
                for id in settled.iter().chain(&c.missing) {
                    prop_assert!(hosted.contains(id), "{} outside {:?}", id, hosted);
                }
                prop_assert!(c.missing.iter().all(|id| !settled.contains(id)), "settled or missing, never both");
                let mut sorted = w.clone();
                sorted.settlements.sort_by_key(|s| s.prosumer_id);
                prop_assert_eq!(slot_cleared_to_wire(&c), sorted);
            }
            Err(e) => assert_invalid_argument(&e),
        }
    }

    #[test]
    fn experience_batches_accepted_are_within_bounds_and_round_trip(b in batch()) {
        match rollout_from_wire(b.clone()) {
            Ok(r) => {
                prop_assert!(r.validate().is_ok());
                prop_assert!(r.policy_version >= 1);
                let all = r.observations.iter().chain(&r.actions).chain(&r.rewards).chain(&r.values).chain(&r.log_probs);
                for v in all.chain(&r.bootstrap_values).chain(&r.costs).chain(&r.grid_import_kwh) {
                    // Every accepted value squares to a finite f32 (the trainer's requirement).
                    prop_assert!((v * v).is_finite(), "{}", v);
                }
                prop_assert_eq!(learner::ExperienceBatch::from(&r), b);
            }
            Err(e) => assert_invalid_argument(&e),
        }
    }

    #[test]
    fn remote_policy_requests_accepted_are_within_bounds_and_round_trip(w in act_request()) {
        match ObservationBatch::try_from(w.clone()) {
            Ok(b) => {
                prop_assert!(b.validate().is_ok());
                prop_assert!(b.prosumer_ids.windows(2).all(|p| p[0] < p[1]));
                prop_assert!(b.observations.as_flattened().iter().all(|v| v.is_finite() && v.abs() <= MAX_ABS_OBSERVATION));
                if let Some(f) = &b.previous {
                    prop_assert!(f.slot < b.slot);
                    for o in &f.outcomes {
                        prop_assert!(o.reward.abs() <= MAX_ABS_REWARD && o.cost.abs() <= MAX_ABS_REWARD && o.grid_import_kwh >= 0.0);
                    }
                }
                prop_assert_eq!(policy::ActRequest::from(&b), w);
            }
            Err(e) => assert_invalid_argument(&e),
        }
    }

    #[test]
    fn remote_policy_answers_accepted_are_finite_bounded_and_round_trip(w in act_response()) {
        match ActionBatch::try_from(w.clone()) {
            Ok(a) => {
                prop_assert_eq!(a.actions.len(), a.prosumer_ids.len());
                for v in a.actions.iter().flat_map(|a| a.to_array()) {
                    prop_assert!(v.is_finite() && v.abs() <= MAX_ABS_ACTION, "{}", v);
                }
                prop_assert_eq!(policy::ActResponse::from(&a), w);
            }
            Err(e) => assert_invalid_argument(&e),
        }
    }

    #[test]
    fn huge_declared_shapes_are_refused_without_allocating(steps in prop_oneof![Just(u32::MAX), (MAX_STEPS as u32 + 1)..u32::MAX, 1u32..4]) {
        // Lengths that do not match `steps` are refused by comparison, never
        // by building arrays of the declared size.
        let b = learner::ExperienceBatch {
            node_name: "n".into(),
            policy_version: 1,
            steps,
            prosumer_ids: (0..1000).collect(),
            observations: vec![0.0; OBS_DIM],
            ..learner::ExperienceBatch::default()
        };
        assert_invalid_argument(&rollout_from_wire(b).unwrap_err());
    }

    #[test]
    fn node_names_accepted_are_short_and_printable(name in prop_oneof![".{0,80}", "[a-z]{1,64}", "\\PC{60,70}"]) {
        match node_name_from_wire(&name, "node_name") {
            Ok(n) => prop_assert!(!n.is_empty() && n.chars().count() <= 64 && !n.chars().any(char::is_control)),
            Err(e) => assert_invalid_argument(&e),
        }
    }

    #[test]
    fn reward_weights_accepted_are_finite_and_non_negative(
        values in vec(hostile_f64(), 6),
        junk in ".{0,40}",
        huge in prop::bool::weighted(0.05),
    ) {
        let keys = ["cost", "degradation", "co2", "co2_price_per_kg", "overload", "ev_shortfall_per_kwh"];
        // JSON cannot carry NaN or ∞: serde_json writes them as null.
        let fields: Vec<String> = keys.iter().zip(&values).map(|(k, v)| format!("\"{k}\": {}", serde_json::json!(v))).collect();
        let padding = if huge { " ".repeat(5000) } else { String::new() };
        for json in [format!("{{{}}}{padding}", fields.join(", ")), junk] {
            match reward_weights_from_json(&json, "reward_weights_json") {
                Ok(w) => {
                    for v in [w.cost, w.degradation, w.co2, w.co2_price_per_kg, w.overload, w.ev_shortfall_per_kwh] {
                        prop_assert!(v.is_finite() && v >= 0.0, "{:?}", w);
                    }
                }
                Err(e) => assert_invalid_argument(&e),
            }
        }
    }

    #[test]
    fn policy_updates_round_trip_and_any_corruption_is_refused(
        seed in any::<u64>(),
        version in 1u64..u64::MAX,
        hidden in vec(1usize..6, 1..3),
        flips in vec((any::<prop::sample::Index>(), 1u8..=255), 0..3),
    ) {
        let spec = MlpSpec { hidden, ..MlpSpec::default() };
        let w = PolicyWeights { net: ActorCritic::random(&spec, seed), normaliser: ObsNormaliser::identity(OBS_DIM), version };
        let mut u = policy_update_from_blob(w.version, to_safetensors(&w).unwrap());
        prop_assert_eq!(policy_from_wire(&u).unwrap(), w);
        if flips.is_empty() {
            return Ok(());
        }
        // Corrupt the blob and fix up the digest, so the reader itself is tested.
        for (at, xor) in flips {
            let i = at.index(u.weights.len());
            u.weights[i] ^= xor;
        }
        u.sha256 = policy_update_from_blob(0, u.weights.clone()).sha256;
        if let Err(e) = policy_from_wire(&u) {
            assert_invalid_argument(&e);
        }
    }

    /// Random bytes decoded as each wire message (prost refuses most), then
    /// converted: neither step panics, and every refusal names a field.
    #[test]
    fn random_bytes_never_panic(bytes in vec(any::<u8>(), 0..512), b in bounds()) {
        if let Ok(w) = common::SlotTariff::decode(&bytes[..]) {
            let _ = slot_tariff_from_wire(&w, "tariff").map_err(|e| assert_invalid_argument(&e));
        }
        if let Ok(w) = common::Order::decode(&bytes[..]) {
            let _ = order_from_wire(&w, 1, b, "order").map_err(|e| assert_invalid_argument(&e));
        }
        if let Ok(w) = market::SlotOpen::decode(&bytes[..]) {
            let _ = slot_open_from_wire(&w).map_err(|e| assert_invalid_argument(&e));
        }
        if let Ok(w) = market::HouseholdReport::decode(&bytes[..]) {
            let _ = report_from_wire(&w, b, "r").map_err(|e| assert_invalid_argument(&e));
        }
        if let Ok(w) = market::ProsumerSettlement::decode(&bytes[..]) {
            let _ = settlement_from_wire(&w, "s").map_err(|e| assert_invalid_argument(&e));
        }
        if let Ok(w) = market::SlotCleared::decode(&bytes[..]) {
            let _ = slot_cleared_from_wire(&w, &(0..8)).map_err(|e| assert_invalid_argument(&e));
        }
        if let Ok(w) = market::RegisterResponse::decode(&bytes[..]) {
            let _ = reward_weights_from_json(&w.reward_weights_json, "r").map_err(|e| assert_invalid_argument(&e));
        }
        if let Ok(w) = learner::ExperienceBatch::decode(&bytes[..]) {
            let _ = rollout_from_wire(w).map_err(|e| assert_invalid_argument(&e));
        }
        if let Ok(w) = learner::PolicyUpdate::decode(&bytes[..]) {
            let _ = policy_from_wire(&w).map_err(|e| assert_invalid_argument(&e));
        }
        if let Ok(w) = policy::ActRequest::decode(&bytes[..]) {
            let _ = ObservationBatch::try_from(w).map_err(|e| assert_invalid_argument(&e));
        }
        if let Ok(w) = policy::ActResponse::decode(&bytes[..]) {
            let _ = ActionBatch::try_from(w).map_err(|e| assert_invalid_argument(&e));
        }
    }

    /// Valid messages with a few bytes changed: most still decode, and the
    /// conversion either accepts them within bounds or names a field.
    #[test]
    fn mutated_encodings_never_panic(w in slot_open(), r in report(), flips in vec((any::<prop::sample::Index>(), any::<u8>()), 1..4), b in bounds()) {
        let mut open = w.encode_to_vec();
        let mut rep = r.encode_to_vec();
        for (at, byte) in &flips {
            if !open.is_empty() {
                let i = at.index(open.len());
                open[i] = *byte;
            }
            if !rep.is_empty() {
                let i = at.index(rep.len());
                rep[i] = *byte;
            }
        }
        if let Ok(w) = market::SlotOpen::decode(&open[..]) {
            let _ = slot_open_from_wire(&w).map_err(|e| assert_invalid_argument(&e));
        }
        if let Ok(w) = market::HouseholdReport::decode(&rep[..]) {
            let _ = report_from_wire(&w, b, "r").map_err(|e| assert_invalid_argument(&e));
        }
    }
}

/// The most adjustments a `SlotOpen` may carry, all 100× on one prosumer:
/// accepted, and the combined multiplier is capped (before the cap,
/// 100^10000 was ∞, and a zero PV trace times ∞ is NaN). One more is refused.
#[test]
fn overlapping_adjustments_are_bounded_in_number_and_combined_scale() {
    let open = common_open();
    let mut w = slot_open_to_wire(&open);
    let big = market::Adjustment {
        first_prosumer_id: 0,
        last_prosumer_id: 9,
        load_scale: MAX_SCALE,
        pv_scale: 0.0,
        offline: false,
    };
    w.adjustments = vec![big; MAX_ADJUSTMENTS];
    let accepted = slot_open_from_wire(&w).unwrap();
    let (c, offline) = conditions_for(3, &accepted.adjustments);
    assert_eq!((c.load_scale, c.pv_scale, offline), (MAX_COMBINED_SCALE, 0.0, false));
    w.adjustments.push(big);
    let e = slot_open_from_wire(&w).unwrap_err().to_string();
    assert!(e.starts_with("invalid adjustments: ") && e.contains("at most 10000"), "{e}");
}

fn common_open() -> peergrid_core::observation::OpenSlot {
    use peergrid_core::observation::SlotContext;
    use peergrid_core::tariff::TariffConfig;
    let t = TariffConfig::default();
    let ctx = SlotContext {
        data_slot: 42,
        hour: 18,
        day_fraction: 0.75,
        weekend: false,
        hours: 1.0,
        tariff: t.slot(18, None),
        next_tariff: t.slot(19, None),
        last_clearing_price_per_kwh: 0.25,
        tariff_ahead: peergrid_core::observation::TariffAhead {
            retail_mean: PricePerKwh(282_083),
            retail_max: PricePerKwh(450_000),
            hours_until_max: 1.0,
        },
        last_slot: Default::default(),
    };
    peergrid_core::observation::OpenSlot { slot: 1, ctx, deadline_unix_ms: 0, adjustments: vec![] }
}

/// Valid domain values survive domain → wire → domain unchanged.
mod domain_round_trips {
    use super::*;
    use peergrid_core::battery::BatteryStep;
    use peergrid_core::household::{Adjustment, Conditions, HouseholdReport};
    use peergrid_core::market::{Fill, Order};
    use peergrid_core::observation::{
        CommunitySignals, OpenSlot, SlotContext, TariffAhead, TARIFF_AHEAD_HOURS,
    };
    use peergrid_core::safety::OrderIntent;
    use peergrid_core::settlement::{settle_household, ClearedSlot, SettledHousehold, Settlement};
    use peergrid_core::tariff::{GridConfig, SlotTariff, TariffConfig, TouBand};
    use peergrid_core::units::{Money, Wh};

    fn valid_tariff() -> impl Strategy<Value = SlotTariff> {
        (
            0..=MAX_PRICE_MICROS,
            0.0f64..=1.0,
            0.0..=MAX_CO2_KG_PER_KWH,
            prop_oneof![Just(TouBand::OffPeak), Just(TouBand::Shoulder), Just(TouBand::Peak)],
        )
            .prop_map(|(retail, f, co2, band)| SlotTariff {
                band,
                retail: PricePerKwh(retail),
                feed_in: PricePerKwh((retail as f64 * f) as i64),
                co2_kg_per_kwh: co2,
            })
    }

    fn valid_open() -> impl Strategy<Value = OpenSlot> {
        let adjustment =
            (any::<u32>(), any::<u32>(), 0.0..=MAX_SCALE, 0.0..=MAX_SCALE, any::<bool>()).prop_map(
                |(a, b, l, p, offline)| Adjustment {
                    first_id: a.min(b),
                    last_id: a.max(b),
                    conditions: Conditions { load_scale: l, pv_scale: p },
                    offline,
                },
            );
        (
            (
                any::<u64>(),
                0..=MAX_DATA_SLOT,
                0u8..24,
                0.0f64..=1.0,
                any::<bool>(),
                1.0 / 60.0..=24.0f64,
            ),
            (
                valid_tariff(),
                valid_tariff(),
                0..=MAX_PRICE_MICROS,
                any::<i64>(),
                vec(adjustment, 0..4),
            ),
            (
                0.0f64..=1.0,
                0.0f64..=1.0,
                0.0f64..=1.0,
                0.0..=MAX_SLOT_KWH,
                -MAX_SLOT_KWH..=MAX_SLOT_KWH,
            ),
        )
            .prop_map(
                |(
                    (slot, data_slot, hour, day_fraction, weekend, hours),
                    (tariff, next_tariff, price, deadline, adjustments),
                    (above, mean, until, last_p2p, last_net),
                )| {
                    // Highest at least the next slot's retail, mean at most the highest.
                    let max = next_tariff.retail.0
                        + ((MAX_PRICE_MICROS - next_tariff.retail.0) as f64 * above) as i64;
                    let tariff_ahead = TariffAhead {
                        retail_mean: PricePerKwh((max as f64 * mean) as i64),
                        retail_max: PricePerKwh(max),
                        hours_until_max: hours + TARIFF_AHEAD_HOURS * until,
                    };
                    OpenSlot {
                        slot,
                        ctx: SlotContext {
                            data_slot: data_slot as usize,
                            hour,
                            day_fraction,
                            weekend,
                            hours,
                            tariff,
                            next_tariff,
                            last_clearing_price_per_kwh: PricePerKwh(price).per_kwh(),
                            tariff_ahead,
                            last_slot: CommunitySignals {
                                p2p_kwh_per_household: last_p2p,
                                net_kwh_per_household: last_net,
                            },
                        },
                        deadline_unix_ms: deadline,
                        adjustments,
                    }
                },
            )
    }

    fn valid_report() -> impl Strategy<Value = (HouseholdReport, PriceBounds)> {
        (
            any::<u32>(),
            0.0..100.0f64,
            0.0..100.0f64,
            0.0..10.0f64,
            0.0..10.0f64,
            0.0..1.0f64,
            bounds(),
            0.0f64..=1.0,
        )
            .prop_map(|(id, load, pv, charged, discharged, share, bounds, f)| {
                let net = load - pv + charged - discharged;
                let position = Wh::floor_from_kwh(net.abs()).0;
                let quantity = (position as f64 * share) as i64;
                let side = if net > 0.0 { Side::Buy } else { Side::Sell };
                let price =
                    bounds.feed_in.0 + ((bounds.retail.0 - bounds.feed_in.0) as f64 * f) as i64;
                let order = (quantity >= 1 && net != 0.0).then_some(OrderIntent {
                    side,
                    quantity: Wh(quantity),
                    limit_price: PricePerKwh(price),
                });
                let report = HouseholdReport {
                    prosumer_id: id,
                    load_kwh: load,
                    pv_kwh: pv,
                    net_kwh: net,
                    battery: BatteryStep {
                        charged_kwh: charged,
                        discharged_kwh: discharged,
                        losses_kwh: 0.01 * charged,
                        stored_delta_kwh: 0.0,
                    },
                    degradation_cost: 0.001 * discharged,
                    ev_shortfall_kwh: 0.0,
                    stored_kwh: 5.0,
                    order,
                };
                (report, bounds)
            })
    }

    proptest! {
        #![proptest_config(config())]

        #[test]
        fn slot_opens(open in valid_open()) {
            prop_assert_eq!(slot_open_from_wire(&slot_open_to_wire(&open)).unwrap(), open);
        }

        #[test]
        fn tariffs(t in valid_tariff()) {
            prop_assert_eq!(SlotTariff::try_from(&common::SlotTariff::from(&t)).unwrap(), t);
        }

        #[test]
        fn orders(id in any::<u64>(), q in 1..=MAX_ORDER_WH, b in bounds(), f in 0.0f64..=1.0, buy in any::<bool>()) {
            let price = b.feed_in.0 + ((b.retail.0 - b.feed_in.0) as f64 * f) as i64;
            let o = Order { id, side: if buy { Side::Buy } else { Side::Sell }, quantity: Wh(q), limit_price: PricePerKwh(price) };
            prop_assert_eq!(order_from_wire(&common::Order::from(&o), id, b, "order").unwrap(), o);
        }

        #[test]
        fn reports((r, bounds) in valid_report()) {
            prop_assert_eq!(report_from_wire(&report_to_wire(&r), bounds, "r").unwrap(), r);
        }

        #[test]
        fn settlements(q in 0..=MAX_ORDER_WH, price in 0..=MAX_PRICE_MICROS, buy in any::<bool>(), kwh in 0.0..=MAX_SLOT_KWH, money in 0.0..=MAX_SLOT_MONEY) {
            let fill = Fill { quantity: Wh(q), value: Money::of(Wh(q), PricePerKwh(price)) };
            let side = if buy { Side::Buy } else { Side::Sell };
            let traded = q > 0;
            let s = Settlement {
                grid_import_kwh: kwh,
                grid_export_kwh: kwh / 2.0,
                p2p_received_kwh: if buy && traded { fill.quantity.kwh() * 0.98 } else { 0.0 },
                import_cost: money,
                export_revenue: money / 2.0,
                overload_penalty: money / 4.0,
                demand_charge: money / 8.0,
                p2p_bought_kwh: if buy && traded { fill.quantity.kwh() } else { 0.0 },
                p2p_paid: if buy && traded { fill.value.amount() } else { 0.0 },
                p2p_sold_kwh: if !buy && traded { fill.quantity.kwh() } else { 0.0 },
                p2p_revenue: if !buy && traded { fill.value.amount() } else { 0.0 },
            };
            let h = SettledHousehold { prosumer_id: 3, side: Some(side), fill, settlement: s };
            prop_assert_eq!(settlement_from_wire(&settlement_to_wire(&h), "s").unwrap(), h);
        }

        /// What the market settles is what the node decodes, to the bit:
        /// `settle_household` for each household, in any id order.
        #[test]
        fn cleared_slots(nets in vec((-5.0f64..5.0, 0.0f64..=1.0, 0..=MAX_PRICE_MICROS), 0..8), price in proptest::option::of(0..=MAX_PRICE_MICROS), slot in any::<u64>()) {
            let tariff = TariffConfig::default().slot(18, None);
            let grid = GridConfig::default();
            let settlements: Vec<SettledHousehold> = nets
                .iter()
                .enumerate()
                .map(|(i, &(net, share, price))| {
                    let side = (net.abs() >= 0.001).then_some(if net > 0.0 { Side::Buy } else { Side::Sell });
                    let q = if side.is_some() { (net.abs() * 1000.0 * share).floor() as i64 } else { 0 };
                    let fill = Fill { quantity: Wh(q), value: Money::of(Wh(q), PricePerKwh(price)) };
                    let settlement = settle_household(net, side, fill, &tariff, &grid);
                    SettledHousehold { prosumer_id: 10 + i as u32, side, fill, settlement }
                })
                .collect();
            let c = ClearedSlot { slot, clearing_price: price.map(PricePerKwh), matched: Wh(5), settlements, missing: vec![30, 31] };
            let mut w = slot_cleared_to_wire(&c);
            w.settlements.reverse();
            prop_assert_eq!(slot_cleared_from_wire(&w, &(10..32)).unwrap(), c);
        }

        #[test]
        fn rollouts(steps in 1usize..4, p in 1usize..4, reward in -1e6f32..=1e6, seed in any::<u32>()) {
            let n = steps * p;
            let r = Rollout {
                node_name: format!("node-{seed}"),
                policy_version: 1 + seed as u64,
                first_slot: seed as u64,
                steps,
                prosumer_ids: (0..p as u32).map(|i| i * 3 + seed % 7).collect(),
                observations: vec![0.5; n * OBS_DIM],
                actions: vec![-0.25; n * ACT_DIM],
                log_probs: vec![-3.0; n],
                values: vec![reward; n],
                rewards: vec![reward; n],
                dones: vec![seed % 2 == 0; n],
                bootstrap_values: vec![reward; p],
                costs: vec![reward; n],
                grid_import_kwh: vec![1.5; n],
            };
            prop_assert_eq!(rollout_from_wire(learner::ExperienceBatch::from(&r)).unwrap(), r);
        }
    }
}
