//! Property tests of the market: the invariants every clearing must keep.
//!
//! Random books of 0..200 orders with prices on a coarse grid (so ties at the
//! margin are common) and 1..5000 Wh quantities. Both mechanisms must balance
//! energy and money exactly, be individually rational, fill no order beyond
//! its quantity, match the maximal Q* (checked against a brute force over
//! candidate prices), and give the same per-id result for any input order.
//! Golden hand-checked cases live next to each mechanism.

use proptest::prelude::*;

use super::*;
use crate::rng::SeededRng;
use crate::units::{Money, PricePerKwh, Wh};

const GRID_LEVELS: i64 = 12;
const GRID_STEP_MICROS: i64 = 20_000;

fn book_strategy() -> impl Strategy<Value = Vec<Order>> {
    prop::collection::vec((any::<bool>(), 1i64..5000, 0..GRID_LEVELS), 0..200).prop_map(|rows| {
        rows.into_iter()
            .enumerate()
            .map(|(i, (buy, wh, level))| Order {
                // Unique but not monotone in position, so id order ≠ input order.
                id: (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40,
                side: if buy { Side::Buy } else { Side::Sell },
                quantity: Wh(wh),
                limit_price: PricePerKwh(50_000 + level * GRID_STEP_MICROS),
            })
            .collect()
    })
}

fn k_strategy() -> impl Strategy<Value = f64> {
    prop_oneof![Just(0.0), Just(1.0), Just(0.5), 0.0..=1.0]
}

fn mechanisms(k: f64) -> [Mechanism; 3] {
    [
        Mechanism::Uniform { k },
        Mechanism::PayAsBid { pricing: PairPricing::BuyerLimit },
        Mechanism::PayAsBid { pricing: PairPricing::Midpoint },
    ]
}

/// The largest tradable quantity, computed independently of any walk:
/// max over candidate prices p of min(demand at ≥ p, supply at ≤ p).
fn brute_force_max_matched(orders: &[Order]) -> i64 {
    let volume = |side: Side, accepts: &dyn Fn(PricePerKwh) -> bool| -> i64 {
        orders
            .iter()
            .filter(|o| o.side == side && accepts(o.limit_price))
            .map(|o| o.quantity.0)
            .sum()
    };
    orders
        .iter()
        .map(|candidate| {
            let p = candidate.limit_price;
            volume(Side::Buy, &|limit| limit >= p).min(volume(Side::Sell, &|limit| limit <= p))
        })
        .max()
        .unwrap_or(0)
}

fn shuffled(orders: &[Order], seed: u64) -> Vec<Order> {
    let mut rng = SeededRng::new(seed);
    let mut out = orders.to_vec();
    for i in (1..out.len()).rev() {
        out.swap(i, rng.below(i as u64 + 1) as usize);
    }
    out
}

/// Fills keyed by order id, sorted, so books in different orders compare.
fn fills_by_id(orders: &[Order], clearing: &Clearing) -> Vec<(OrderId, Fill)> {
    let mut out: Vec<_> = orders.iter().map(|o| o.id).zip(clearing.fills.iter().copied()).collect();
    out.sort_unstable_by_key(|&(id, _)| id);
    out
}

fn side_total<T: std::iter::Sum<T>>(
    orders: &[Order],
    c: &Clearing,
    side: Side,
    of: impl Fn(&Fill) -> T,
) -> T {
    orders.iter().zip(&c.fills).filter(|(o, _)| o.side == side).map(|(_, f)| of(f)).sum()
}

fn check_invariants(orders: &[Order], c: &Clearing) -> Result<(), TestCaseError> {
    prop_assert_eq!(c.fills.len(), orders.len());
    let sold: i64 = side_total(orders, c, Side::Sell, |f| f.quantity.0);
    let bought: i64 = side_total(orders, c, Side::Buy, |f| f.quantity.0);
    prop_assert_eq!(sold, c.matched.0, "energy balance (sold)");
    prop_assert_eq!(bought, c.matched.0, "energy balance (bought)");
    let received: Money = side_total(orders, c, Side::Sell, |f| f.value);
    let paid: Money = side_total(orders, c, Side::Buy, |f| f.value);
    prop_assert_eq!(paid, received, "budget balance");
    for (o, f) in orders.iter().zip(&c.fills) {
        prop_assert!(f.quantity.0 >= 0 && f.quantity <= o.quantity, "fill {:?} of {:?}", f, o);
        prop_assert!(f.value.0 >= 0);
        let at_limit = Money::of(f.quantity, o.limit_price);
        match o.side {
            Side::Buy => {
                prop_assert!(f.value <= at_limit, "buyer pays above limit: {:?} {:?}", o, f)
            }
            Side::Sell => {
                prop_assert!(f.value >= at_limit, "seller paid below limit: {:?} {:?}", o, f)
            }
        }
    }
    prop_assert_eq!(c.matched.0, brute_force_max_matched(orders), "Q* is maximal");
    Ok(())
}

/// Uniform-only: one price for all, orders strictly better than it filled
/// completely, and each price level rationed within 1 Wh of pro-rata.
fn check_uniform(orders: &[Order], c: &Clearing) -> Result<(), TestCaseError> {
    let Some(price) = c.clearing_price else {
        prop_assert_eq!(c.matched, Wh::ZERO);
        return Ok(());
    };
    prop_assert!(c.matched.0 > 0);
    for (o, f) in orders.iter().zip(&c.fills) {
        prop_assert_eq!(f.value, Money::of(f.quantity, price));
        let strictly_better = match o.side {
            Side::Buy => o.limit_price > price,
            Side::Sell => o.limit_price < price,
        };
        if strictly_better {
            prop_assert_eq!(f.quantity, o.quantity, "in-the-money order not filled: {:?}", o);
        }
    }
    for side in [Side::Buy, Side::Sell] {
        for level in 0..GRID_LEVELS {
            let level_price = PricePerKwh(50_000 + level * GRID_STEP_MICROS);
            let members: Vec<_> = orders
                .iter()
                .zip(&c.fills)
                .filter(|(o, _)| o.side == side && o.limit_price == level_price)
                .collect();
            let total: i128 = members.iter().map(|(o, _)| o.quantity.0 as i128).sum();
            let filled: i128 = members.iter().map(|(_, f)| f.quantity.0 as i128).sum();
            // (remainder of the exact share, id, whether it got the extra Wh)
            let mut rounding = Vec::new();
            for (o, f) in members {
                let deviation = f.quantity.0 as i128 * total - filled * o.quantity.0 as i128;
                prop_assert!(deviation.abs() < total, "not pro-rata: {:?} {:?}", o, f);
                rounding.push((
                    (filled * o.quantity.0 as i128) % total.max(1),
                    o.id,
                    deviation > 0,
                ));
            }
            // Largest remainder: everyone rounded up outranks everyone rounded down.
            let up = rounding.iter().filter(|r| r.2).map(|r| (std::cmp::Reverse(r.0), r.1)).max();
            let down = rounding
                .iter()
                .filter(|r| !r.2 && r.0 > 0)
                .map(|r| (std::cmp::Reverse(r.0), r.1))
                .min();
            if let (Some(up), Some(down)) = (up, down) {
                prop_assert!(
                    up < down,
                    "leftover Wh not by largest remainder, then id: {:?}",
                    rounding
                );
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn every_mechanism_keeps_the_invariants(orders in book_strategy(), k in k_strategy()) {
        for mechanism in mechanisms(k) {
            let c = clear(&orders, mechanism, None).unwrap();
            check_invariants(&orders, &c)?;
            if let Mechanism::Uniform { .. } = mechanism {
                check_uniform(&orders, &c)?;
            } else {
                prop_assert_eq!(c.clearing_price, None);
            }
        }
    }

    #[test]
    fn input_order_never_changes_the_result(orders in book_strategy(), k in k_strategy(), seed in any::<u64>()) {
        let other = shuffled(&orders, seed);
        for mechanism in mechanisms(k) {
            let a = clear(&orders, mechanism, None).unwrap();
            let b = clear(&other, mechanism, None).unwrap();
            prop_assert_eq!(a.clearing_price, b.clearing_price);
            prop_assert_eq!(a.matched, b.matched);
            prop_assert_eq!(fills_by_id(&orders, &a), fills_by_id(&other, &b));
            prop_assert_eq!(&a, &clear(&orders, mechanism, None).unwrap(), "deterministic");
        }
    }

    #[test]
    fn pay_as_bid_matches_the_uniform_quantity(orders in book_strategy()) {
        let uniform = clear_uniform_price(&orders, 0.5).matched;
        prop_assert_eq!(clear_pay_as_bid(&orders, PairPricing::BuyerLimit).matched, uniform);
        prop_assert_eq!(clear_pay_as_bid(&orders, PairPricing::Midpoint).matched, uniform);
    }

    #[test]
    fn reused_scratch_gives_the_fresh_result(first in book_strategy(), second in book_strategy(), k in k_strategy()) {
        let mut scratch = ClearingScratch::new();
        let mut out = Clearing::default();
        clear_uniform_price_into(&first, k, &mut scratch, &mut out);
        prop_assert_eq!(&out, &clear_uniform_price(&first, k));
        clear_uniform_price_into(&second, k, &mut scratch, &mut out);
        prop_assert_eq!(&out, &clear_uniform_price(&second, k));
    }
}

#[test]
fn large_books_take_the_radix_path_and_keep_the_invariants() {
    // 10k orders: past the radix threshold, with a wide spread of prices.
    let mut rng = SeededRng::new(42);
    let orders: Vec<Order> = (0..10_000u64)
        .map(|id| Order {
            id: id * 3 + 1,
            side: if rng.below(2) == 0 { Side::Buy } else { Side::Sell },
            quantity: Wh(1 + rng.below(5000) as i64),
            limit_price: PricePerKwh(50_000 + rng.below(250_000) as i64),
        })
        .collect();
    let c = clear_uniform_price(&orders, 0.5);
    check_invariants(&orders, &c).unwrap();
    check_uniform(&orders, &c).unwrap();
    let other = shuffled(&orders, 9);
    assert_eq!(fills_by_id(&orders, &c), fills_by_id(&other, &clear_uniform_price(&other, 0.5)));
}

#[test]
fn clear_rejects_bad_k_and_bad_orders() {
    let book =
        [Order { id: 1, side: Side::Buy, quantity: Wh(1000), limit_price: PricePerKwh(100_000) }];
    for k in [f64::NAN, -0.1, 1.5, f64::INFINITY] {
        let e = clear(&book, Mechanism::Uniform { k }, None).unwrap_err().to_string();
        assert!(e.starts_with("invalid k: must be finite and in [0, 1]"), "{e}");
    }
    let bad = [Order { quantity: Wh(0), ..book[0] }];
    let e = clear(&bad, Mechanism::default(), None).unwrap_err().to_string();
    assert_eq!(e, "order #0 (id 1): invalid kwh: must be > 0, got 0");
}
