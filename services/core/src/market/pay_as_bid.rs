//! Pay-as-bid (discriminatory) clearing: each matched pair has its own price.
//!
//! Owns the pairing rule (highest bid against lowest ask while the bid is at
//! least the ask, ties by id) and the pair price ([`PairPricing`]). It matches
//! exactly the Q* of the uniform auction: the greedy walk is the same, only
//! the prices differ. A fill's value is the exact sum over its pairs, so what
//! buyers pay is what sellers receive. It must never read a clock or depend
//! on the input order of the book.

use std::cmp::Reverse;

use super::order::{Clearing, Fill, Order, OrderId, PairPricing, Side};
use crate::units::{Money, PricePerKwh, Wh};

/// One order in priority order: where it came from and how much it has left.
#[derive(Clone, Copy, Debug)]
struct Queued {
    price: i64,
    id: OrderId,
    index: usize,
}

/// Clears `orders` pay-as-bid. Assumes `validate_orders` passed (positive
/// quantities, unique ids). `clearing_price` is always `None`.
pub fn clear_pay_as_bid(orders: &[Order], pricing: PairPricing) -> Clearing {
    let (bids, asks) = queues(orders);
    let mut fills = vec![Fill::default(); orders.len()];
    let mut matched_wh = 0i64;
    let (mut b, mut a) = (0, 0);
    let mut bid_left = bids.first().map_or(0, |q| orders[q.index].quantity.0);
    let mut ask_left = asks.first().map_or(0, |q| orders[q.index].quantity.0);
    while b < bids.len() && a < asks.len() && bids[b].price >= asks[a].price {
        let (bid, ask) = (bids[b], asks[a]);
        let quantity = Wh(bid_left.min(ask_left));
        let value = Money::of(quantity, pair_price(bid.price, ask.price, pricing));
        for index in [bid.index, ask.index] {
            fills[index].quantity.0 += quantity.0;
            fills[index].value += value;
        }
        matched_wh += quantity.0;
        bid_left -= quantity.0;
        ask_left -= quantity.0;
        if bid_left == 0 {
            b += 1;
            bid_left = bids.get(b).map_or(0, |q| orders[q.index].quantity.0);
        }
        if ask_left == 0 {
            a += 1;
            ask_left = asks.get(a).map_or(0, |q| orders[q.index].quantity.0);
        }
    }
    Clearing { clearing_price: None, matched: Wh(matched_wh), fills }
}

/// Bids highest price first and asks lowest price first, ties by id: ids are
/// unique, so the queues do not depend on where an order sat in the input.
fn queues(orders: &[Order]) -> (Vec<Queued>, Vec<Queued>) {
    let (mut bids, mut asks): (Vec<Queued>, Vec<Queued>) = orders
        .iter()
        .enumerate()
        .map(|(index, o)| Queued { price: o.limit_price.0, id: o.id, index })
        .partition(|q| orders[q.index].side == Side::Buy);
    bids.sort_unstable_by_key(|q| (Reverse(q.price), q.id));
    asks.sort_unstable_by_key(|q| (q.price, q.id));
    (bids, asks)
}

/// The price of one matched pair. Both choices lie in `[ask, bid]`, so every
/// trade is individually rational for both sides.
fn pair_price(bid: i64, ask: i64, pricing: PairPricing) -> PricePerKwh {
    match pricing {
        PairPricing::BuyerLimit => PricePerKwh(bid),
        // i128 so the sum cannot overflow; div_euclid rounds towards −∞.
        PairPricing::Midpoint => PricePerKwh((bid as i128 + ask as i128).div_euclid(2) as i64),
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{golden_book, order};
    use super::*;

    #[test]
    fn buyer_limit_pays_each_bid_its_own_price() {
        let c = clear_pay_as_bid(&golden_book(), PairPricing::BuyerLimit);
        assert_eq!(c.matched, Wh(5000));
        assert_eq!(c.clearing_price, None);
        let values: Vec<Money> = c.fills.iter().map(|f| f.value).collect();
        // A1 sells 2 kWh to B1 at 0.22; A2 sells 1 kWh to B1 at 0.22 and 2 kWh to B2 at 0.15.
        let expected_nanos =
            [440_000_000, 220_000_000 + 300_000_000, 0, 660_000_000, 300_000_000, 0];
        assert_eq!(values, expected_nanos.map(Money).to_vec());
    }

    #[test]
    fn midpoint_splits_each_pair_and_rounds_down() {
        let book = vec![order(1, Side::Sell, 1000, 100_001), order(2, Side::Buy, 1000, 200_000)];
        let c = clear_pay_as_bid(&book, PairPricing::Midpoint);
        // (0.100001 + 0.2) / 2 = 0.1500005 → 0.150000 per kWh.
        assert_eq!(c.fills[0].value, Money(150_000_000));
        assert_eq!(c.fills[1].value, Money(150_000_000));
    }

    #[test]
    fn no_crossing_trades_nothing() {
        let book = vec![order(1, Side::Sell, 1000, 200_000), order(2, Side::Buy, 1000, 150_000)];
        let c = clear_pay_as_bid(&book, PairPricing::BuyerLimit);
        assert_eq!(c.matched, Wh::ZERO);
        assert!(c.fills.iter().all(|f| *f == Fill::default()));
    }

    #[test]
    fn ties_are_served_by_id_not_input_position() {
        let book = vec![
            order(9, Side::Buy, 1000, 200_000),
            order(3, Side::Buy, 1000, 200_000),
            order(5, Side::Sell, 1000, 100_000),
        ];
        let c = clear_pay_as_bid(&book, PairPricing::BuyerLimit);
        assert_eq!(c.fills[1].quantity, Wh(1000), "id 3 goes first");
        assert_eq!(c.fills[0].quantity, Wh::ZERO);
    }
}
