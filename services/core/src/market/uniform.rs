//! The uniform-price call auction (k-double auction): one price for the slot.
//!
//! Owns the matching rule (the largest quantity Q* at which the highest bids
//! and the lowest asks still cross), the clearing interval, the `k` pricing
//! rule and pro-rata rationing at the margin. It is a pure function of a
//! validated book: it must never allocate per order, read a clock, or let the
//! input order of the book change any fill or the price.
//!
//! How it stays fast (the reference simulator calls it every slot with up to
//! 100k orders): each order becomes one `u128` sort key that carries its price
//! rank, input index and quantity, so the walk after the sort never goes back
//! to the `orders` slice; large books are sorted with an LSD radix sort over
//! just the price bits that differ. [`ClearingScratch`] keeps the buffers
//! between calls.

use super::order::{Clearing, Fill, Order, OrderId, Side};
use crate::units::{Money, PricePerKwh, Wh};

/// Most orders one book may hold: the input index is packed into 24 bits of a key.
pub const MAX_ORDERS: usize = 1 << INDEX_BITS;

const INDEX_BITS: u32 = 24;
/// `validate_orders` caps quantities at 1e12 Wh, which fits in 40 bits.
const QUANTITY_BITS: u32 = 40;
const QUANTITY_MASK: u128 = (1 << QUANTITY_BITS) - 1;
const INDEX_MASK: u128 = (1 << INDEX_BITS) - 1;
/// Flipping the sign bit maps `i64` order onto `u64` order.
const SIGN_BIT: u64 = 1 << 63;

/// Below this many keys per side a comparison sort beats the radix passes.
const RADIX_MIN_KEYS: usize = 2048;
const RADIX_BITS: u32 = 11;
const RADIX_BUCKETS: usize = 1 << RADIX_BITS;

/// Reusable buffers for [`clear_uniform_price_into`]; keep one per thread
/// and pass it to every call so a slot allocates nothing once warmed up.
#[derive(Debug, Default)]
pub struct ClearingScratch {
    bids: Vec<u128>,
    asks: Vec<u128>,
    radix_buffer: Vec<u128>,
    radix_counts: Vec<usize>,
    marginal: Vec<MarginalShare>,
}

impl ClearingScratch {
    /// Empty buffers; they grow to the largest book cleared with them.
    pub fn new() -> ClearingScratch {
        ClearingScratch::default()
    }
}

/// One order of a marginal price level during pro-rata rationing.
#[derive(Clone, Copy, Debug)]
struct MarginalShare {
    /// Remainder of `filled × quantity / level_total`: who gets the leftover Wh.
    remainder: i128,
    id: OrderId,
    index: usize,
    /// This order's fill: the floor share, plus 1 Wh if it wins a leftover.
    share_wh: i64,
}

/// Where Q* ends on one side of the sorted book.
#[derive(Clone, Copy, Debug)]
struct Margin {
    /// Sorted positions `[0, start)` fill completely.
    start: usize,
    /// Sorted positions `[start, end)` form the marginal price level.
    end: usize,
    /// What the marginal level gets in total: `0 < filled_wh ≤ level_wh`.
    filled_wh: i64,
    level_wh: i64,
    price: i64,
    /// Price of the first order after the marginal level, if there is one.
    next_price: Option<i64>,
}

impl Margin {
    /// A level only partly filled counts as both accepted and rejected.
    fn rejected_price(&self) -> Option<i64> {
        if self.filled_wh < self.level_wh {
            Some(self.price)
        } else {
            self.next_price
        }
    }
}

/// Clears `orders` at one uniform price; see [`clear_uniform_price_into`].
pub fn clear_uniform_price(orders: &[Order], k: f64) -> Clearing {
    let mut out = Clearing::default();
    clear_uniform_price_into(orders, k, &mut ClearingScratch::new(), &mut out);
    out
}

/// Clears `orders` at one uniform price into `out`, reusing `scratch`.
///
/// Assumes `validate_orders` passed (quantities in (0, 1e12] Wh) and at most
/// [`MAX_ORDERS`] orders; panics otherwise rather than clear a wrong book.
/// `k` outside [0, 1] is clamped (NaN acts as 0); `market::clear` rejects it.
///
/// The price is `lower + k·(upper − lower)` of the clearing interval, rounded
/// to the nearest µ with halves rounded up (away from `lower`); the rounded
/// offset is clamped to the interval so the price never leaves it.
pub fn clear_uniform_price_into(
    orders: &[Order],
    k: f64,
    scratch: &mut ClearingScratch,
    out: &mut Clearing,
) {
    assert!(
        orders.len() <= MAX_ORDERS,
        "a book holds at most {MAX_ORDERS} orders, got {}",
        orders.len()
    );
    out.fills.clear();
    out.fills.resize(orders.len(), Fill::default());
    out.clearing_price = None;
    out.matched = Wh::ZERO;

    pack_sort_keys(orders, scratch);
    let matched_wh = matched_quantity(&scratch.bids, &scratch.asks);
    if matched_wh == 0 {
        return;
    }
    let bid_margin = find_margin(&scratch.bids, matched_wh, Side::Buy);
    let ask_margin = find_margin(&scratch.asks, matched_wh, Side::Sell);
    let price = PricePerKwh(interval_price(&bid_margin, &ask_margin, k));

    for (keys, margin) in [(&scratch.bids, &bid_margin), (&scratch.asks, &ask_margin)] {
        write_full_fills(&keys[..margin.start], price, &mut out.fills);
        ration_margin(
            orders,
            &keys[margin.start..margin.end],
            margin,
            price,
            &mut scratch.marginal,
            &mut out.fills,
        );
    }
    out.clearing_price = Some(price);
    out.matched = Wh(matched_wh);
}

/// Sort rank of a price: ascending for asks, descending for bids, so that
/// both sides sort ascending and read best-first.
#[inline]
fn rank_of_price(price: i64, side: Side) -> u64 {
    let rank = (price as u64) ^ SIGN_BIT;
    match side {
        Side::Sell => rank,
        Side::Buy => !rank,
    }
}

#[inline]
fn price_of(key: u128, side: Side) -> i64 {
    let rank = (key >> 64) as u64;
    let rank = match side {
        Side::Sell => rank,
        Side::Buy => !rank,
    };
    (rank ^ SIGN_BIT) as i64
}

#[inline]
fn index_of(key: u128) -> usize {
    ((key >> QUANTITY_BITS) & INDEX_MASK) as usize
}

#[inline]
fn quantity_of(key: u128) -> i64 {
    (key & QUANTITY_MASK) as i64
}

/// Fills `scratch.bids` and `scratch.asks` with one key per order,
/// `[price rank: 64 | input index: 24 | quantity Wh: 40]`, sorted best-first.
/// Keys are unique (the index), so any correct sort gives the same order:
/// by price, then by input index. The index tie-break never shows in the
/// result because a whole price level is always rationed together.
fn pack_sort_keys(orders: &[Order], scratch: &mut ClearingScratch) {
    scratch.bids.clear();
    scratch.asks.clear();
    for (index, order) in orders.iter().enumerate() {
        let quantity = order.quantity.0;
        assert!(
            quantity > 0 && (quantity as u128) <= QUANTITY_MASK,
            "order #{index}: quantity {quantity} Wh out of range"
        );
        let rank = rank_of_price(order.limit_price.0, order.side);
        let key = (rank as u128) << 64 | (index as u128) << QUANTITY_BITS | quantity as u128;
        match order.side {
            Side::Buy => scratch.bids.push(key),
            Side::Sell => scratch.asks.push(key),
        }
    }
    sort_keys(&mut scratch.bids, &mut scratch.radix_buffer, &mut scratch.radix_counts);
    sort_keys(&mut scratch.asks, &mut scratch.radix_buffer, &mut scratch.radix_counts);
}

/// Sorts keys ascending. Large inputs use a stable LSD radix sort over the
/// price-rank bits only: keys were pushed in index order, so stability keeps
/// equal ranks in index order, exactly what a full comparison sort gives.
fn sort_keys(keys: &mut Vec<u128>, buffer: &mut Vec<u128>, counts: &mut Vec<usize>) {
    if keys.len() < RADIX_MIN_KEYS {
        keys.sort_unstable();
        return;
    }
    let (min_rank, max_rank) = keys.iter().fold((u64::MAX, 0u64), |(lo, hi), &key| {
        let rank = (key >> 64) as u64;
        (lo.min(rank), hi.max(rank))
    });
    let span_bits = 64 - (max_rank - min_rank).leading_zeros();
    let passes = span_bits.div_ceil(RADIX_BITS) as usize;
    if passes == 0 {
        return; // one price level: already in index order
    }
    let digit = |key: u128, pass: usize| {
        (((key >> 64) as u64 - min_rank) >> (pass as u32 * RADIX_BITS)) as usize
            & (RADIX_BUCKETS - 1)
    };

    // All histograms in one read of the data, then one scatter per pass.
    counts.clear();
    counts.resize(passes * RADIX_BUCKETS, 0);
    for &key in keys.iter() {
        for pass in 0..passes {
            counts[pass * RADIX_BUCKETS + digit(key, pass)] += 1;
        }
    }
    buffer.clear();
    buffer.resize(keys.len(), 0);
    for pass in 0..passes {
        let offsets = &mut counts[pass * RADIX_BUCKETS..(pass + 1) * RADIX_BUCKETS];
        let mut next = 0;
        for slot in offsets.iter_mut() {
            let count = *slot;
            *slot = next;
            next += count;
        }
        for &key in keys.iter() {
            let d = digit(key, pass);
            buffer[offsets[d]] = key;
            offsets[d] += 1;
        }
        std::mem::swap(keys, buffer);
    }
}

/// Q*: walks the best bid and the best ask down their curves, trading the
/// smaller remaining quantity while the bid price is at least the ask price.
/// This greedy match is the maximum: any other matching can be rearranged
/// into it without losing quantity.
fn matched_quantity(bids: &[u128], asks: &[u128]) -> i64 {
    let (mut b, mut a) = (0, 0);
    let mut matched = 0i64;
    let mut bid_left = bids.first().map_or(0, |&key| quantity_of(key));
    let mut ask_left = asks.first().map_or(0, |&key| quantity_of(key));
    while b < bids.len()
        && a < asks.len()
        && price_of(bids[b], Side::Buy) >= price_of(asks[a], Side::Sell)
    {
        let traded = bid_left.min(ask_left);
        matched += traded;
        bid_left -= traded;
        ask_left -= traded;
        if bid_left == 0 {
            b += 1;
            bid_left = bids.get(b).map_or(0, |&key| quantity_of(key));
        }
        if ask_left == 0 {
            a += 1;
            ask_left = asks.get(a).map_or(0, |&key| quantity_of(key));
        }
    }
    matched
}

/// Finds the price level where the cumulative quantity of one sorted side
/// first reaches `matched_wh` (> 0, and ≤ the side's total by construction).
fn find_margin(keys: &[u128], matched_wh: i64, side: Side) -> Margin {
    let mut start = 0;
    let mut before_wh = 0i64;
    loop {
        let price = price_of(keys[start], side);
        let mut end = start;
        let mut level_wh = 0i64;
        while end < keys.len() && price_of(keys[end], side) == price {
            level_wh += quantity_of(keys[end]);
            end += 1;
        }
        if before_wh + level_wh >= matched_wh {
            let next_price = keys.get(end).map(|&key| price_of(key, side));
            return Margin {
                start,
                end,
                filled_wh: matched_wh - before_wh,
                level_wh,
                price,
                next_price,
            };
        }
        before_wh += level_wh;
        start = end;
    }
}

/// The clearing interval `[max(highest accepted ask, highest rejected bid),
/// min(lowest accepted bid, lowest rejected ask)]` and the `k` point in it.
fn interval_price(bid: &Margin, ask: &Margin, k: f64) -> i64 {
    let lower = ask.price.max(bid.rejected_price().unwrap_or(i64::MIN));
    let upper = bid.price.min(ask.rejected_price().unwrap_or(i64::MAX));
    debug_assert!(lower <= upper, "empty clearing interval [{lower}, {upper}]");
    let width = upper.saturating_sub(lower);
    let offset = (k.clamp(0.0, 1.0) * width as f64).round();
    // `as` saturates and maps NaN to 0; the clamp keeps float error inside.
    lower + (offset as i64).clamp(0, width)
}

fn write_full_fills(keys: &[u128], price: PricePerKwh, fills: &mut [Fill]) {
    for &key in keys {
        let quantity = Wh(quantity_of(key));
        fills[index_of(key)] = Fill { quantity, value: Money::of(quantity, price) };
    }
}

/// Shares `margin.filled_wh` among every order of the marginal level in
/// proportion to quantity: floor shares first, then one Wh each to the
/// largest remainders (ties to the smaller id). Exact and deterministic:
/// the shares add up to `filled_wh` and no share exceeds its order.
fn ration_margin(
    orders: &[Order],
    level: &[u128],
    margin: &Margin,
    price: PricePerKwh,
    shares: &mut Vec<MarginalShare>,
    fills: &mut [Fill],
) {
    if margin.filled_wh == margin.level_wh {
        write_full_fills(level, price, fills);
        return;
    }
    let filled = margin.filled_wh as i128;
    let total = margin.level_wh as i128;
    shares.clear();
    let mut floor_sum_wh = 0i64;
    for &key in level {
        let (index, quantity_wh) = (index_of(key), quantity_of(key));
        let exact = filled * quantity_wh as i128;
        let floor_wh = (exact / total) as i64;
        floor_sum_wh += floor_wh;
        shares.push(MarginalShare {
            remainder: exact % total,
            id: orders[index].id,
            index,
            share_wh: floor_wh,
        });
    }
    // Each remainder is < total and they sum to leftover × total, so at
    // least `leftover` orders have a non-zero remainder and room for +1 Wh.
    let leftover = (margin.filled_wh - floor_sum_wh) as usize;
    if leftover > 0 {
        let by_priority = |x: &MarginalShare, y: &MarginalShare| {
            y.remainder.cmp(&x.remainder).then(x.id.cmp(&y.id))
        };
        shares.select_nth_unstable_by(leftover - 1, by_priority);
        for share in &mut shares[..leftover] {
            share.share_wh += 1;
        }
    }
    for share in shares.iter() {
        let quantity = Wh(share.share_wh);
        fills[share.index] = Fill { quantity, value: Money::of(quantity, price) };
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{golden_book, order};
    use super::*;

    fn filled_wh(c: &Clearing) -> Vec<i64> {
        c.fills.iter().map(|f| f.quantity.0).collect()
    }

    #[test]
    fn golden_book_clears_five_kwh_at_0_145() {
        // Q* = 5 kWh: B1+B2 buy A1+A2. Interval [max(A2 0.14, B3 0.12), min(B2 0.15, A3 0.20)].
        let c = clear_uniform_price(&golden_book(), 0.5);
        assert_eq!(c.matched, Wh(5000));
        assert_eq!(c.clearing_price, Some(PricePerKwh(145_000)));
        assert_eq!(filled_wh(&c), [2000, 3000, 0, 3000, 2000, 0]);
        assert_eq!(c.fills[3].value, Money(435_000_000), "3 kWh × 0.145");
    }

    #[test]
    fn k_picks_the_interval_end() {
        assert_eq!(
            clear_uniform_price(&golden_book(), 0.0).clearing_price,
            Some(PricePerKwh(140_000))
        );
        assert_eq!(
            clear_uniform_price(&golden_book(), 1.0).clearing_price,
            Some(PricePerKwh(150_000))
        );
        // 0.14 + 0.3 × 0.01 = 0.143; 0.14 + 0.00005 × 0.01 = 0.1400005 is half a µ: rounds up.
        assert_eq!(
            clear_uniform_price(&golden_book(), 0.3).clearing_price,
            Some(PricePerKwh(143_000))
        );
        assert_eq!(
            clear_uniform_price(&golden_book(), 0.00005).clearing_price,
            Some(PricePerKwh(140_001))
        );
    }

    #[test]
    fn marginal_asks_share_pro_rata_to_quantity() {
        // One bid of 2 kWh against 4 kWh offered at one price: each ask sells half.
        let book = [
            order(2, Side::Sell, 3000, 100_000),
            order(7, Side::Buy, 2000, 200_000),
            order(1, Side::Sell, 1000, 100_000),
        ];
        let c = clear_uniform_price(&book, 0.5);
        assert_eq!(filled_wh(&c), [1500, 2000, 500]);
        // The partly filled asks are also rejected at 0.10: the interval is [0.10, 0.10].
        assert_eq!(c.clearing_price, Some(PricePerKwh(100_000)));
    }

    #[test]
    fn leftover_wh_goes_to_the_smallest_id_among_equal_remainders() {
        // 1000 Wh over three equal asks: 333 each and 1 Wh left, which id 1 gets.
        let book = [
            order(3, Side::Sell, 1000, 100_000),
            order(1, Side::Sell, 1000, 100_000),
            order(2, Side::Sell, 1000, 100_000),
            order(9, Side::Buy, 1000, 100_000),
        ];
        let c = clear_uniform_price(&book, 0.5);
        assert_eq!(filled_wh(&c), [333, 334, 333, 1000]);
    }

    #[test]
    fn excess_demand_at_the_margin_sets_the_price() {
        // B2 is only half filled, so it is also rejected at 0.25: interval [0.25, 0.25].
        let book = [
            order(1, Side::Buy, 1000, 300_000),
            order(2, Side::Buy, 2000, 250_000),
            order(3, Side::Sell, 2000, 100_000),
        ];
        for k in [0.0, 0.5, 1.0] {
            let c = clear_uniform_price(&book, k);
            assert_eq!(c.clearing_price, Some(PricePerKwh(250_000)));
            assert_eq!(filled_wh(&c), [1000, 1000, 2000]);
        }
    }

    #[test]
    fn nothing_trades_without_crossing_or_without_a_side() {
        let books: [&[Order]; 4] = [
            &[order(1, Side::Buy, 1000, 100_000), order(2, Side::Sell, 1000, 200_000)],
            &[order(1, Side::Buy, 1000, 100_000), order(2, Side::Buy, 1000, 200_000)],
            &[order(1, Side::Sell, 1000, 100_000)],
            &[],
        ];
        for book in books {
            let c = clear_uniform_price(book, 0.5);
            assert_eq!((c.clearing_price, c.matched), (None, Wh::ZERO));
            assert_eq!(c.fills, vec![Fill::default(); book.len()]);
        }
    }

    #[test]
    fn radix_and_comparison_sorts_agree() {
        let mut rng = crate::rng::SeededRng::new(5);
        let keys: Vec<u128> = (0..3 * RADIX_MIN_KEYS)
            .map(|index| {
                let price =
                    50_000 + rng.below(250_000) as i64 * if index % 7 == 0 { 1_000_000 } else { 1 };
                (rank_of_price(price, Side::Buy) as u128) << 64
                    | (index as u128) << QUANTITY_BITS
                    | 1
            })
            .collect();
        let mut expected = keys.clone();
        expected.sort_unstable();
        let mut radix = keys;
        sort_keys(&mut radix, &mut Vec::new(), &mut Vec::new());
        assert_eq!(radix, expected);
    }
}
