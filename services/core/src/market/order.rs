//! Orders and clearing results: the plain data the auction works on.
//!
//! An order is a limit order for one slot: a side, a positive quantity in Wh
//! and a limit price in µ/kWh. A [`Clearing`] holds one [`Fill`] per input
//! order, **in input order**, so callers index fills by the position of their
//! order and never need a map.

use serde::{Deserialize, Serialize};

use crate::error::CoreError;
use crate::units::{Money, PricePerKwh, Wh};

/// Identifies an order within one book. In simulations it is the prosumer id.
pub type OrderId = u64;

/// Which side of the book an order is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    /// Wants energy; pays at most its limit price.
    Buy,
    /// Offers energy; accepts at least its limit price.
    Sell,
}

impl Side {
    /// `"buy"` or `"sell"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Buy => "buy",
            Side::Sell => "sell",
        }
    }
}

/// One order of a book.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    /// Unique within the book.
    pub id: OrderId,
    /// Buy or sell.
    pub side: Side,
    /// Must be > 0.
    pub quantity: Wh,
    /// Buy: the most the buyer will pay; sell: the least the seller accepts.
    pub limit_price: PricePerKwh,
}

/// Grid prices that bound every limit price of a slot: nobody buys P2P above
/// retail or sells below feed-in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PriceBounds {
    /// The feed-in price: the lowest limit price.
    pub feed_in: PricePerKwh,
    /// The retail price: the highest limit price.
    pub retail: PricePerKwh,
}

/// The market mechanism of a slot.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Mechanism {
    /// Uniform-price call auction; the price is `lower + k·(upper − lower)` of
    /// the clearing interval, `k ∈ [0, 1]`.
    Uniform {
        /// Where in the clearing interval the price lies, 0 to 1.
        k: f64,
    },
    /// Discriminatory: each matched pair trades at its own price.
    PayAsBid {
        /// How a matched pair's price is set.
        pricing: PairPricing,
    },
}

impl Default for Mechanism {
    fn default() -> Self {
        Mechanism::Uniform { k: 0.5 }
    }
}

impl Mechanism {
    /// The mechanism's name in configs and reports.
    pub fn name(&self) -> &'static str {
        match self {
            Mechanism::Uniform { .. } => "uniform",
            Mechanism::PayAsBid { .. } => "pay-as-bid",
        }
    }
}

/// How a pay-as-bid pair is priced.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PairPricing {
    /// The buyer's limit price (classic pay-as-bid).
    #[default]
    BuyerLimit,
    /// The midpoint of the buyer's and the seller's limit prices (rounded down to 1 µ).
    Midpoint,
}

/// What one order got.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fill {
    /// Energy traded P2P; 0 for an unfilled order.
    pub quantity: Wh,
    /// Money paid (buy) or received (sell) for `quantity`; always ≥ 0.
    pub value: Money,
}

impl Fill {
    /// Average price of this fill, or `None` when nothing was filled.
    pub fn average_price_per_kwh(&self) -> Option<f64> {
        (self.quantity.0 > 0).then(|| self.value.amount() / self.quantity.kwh())
    }
}

/// The outcome of clearing one book.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Clearing {
    /// Uniform price of the slot; `None` when nothing traded or for pay-as-bid.
    pub clearing_price: Option<PricePerKwh>,
    /// Total energy matched (sold == bought == this).
    pub matched: Wh,
    /// One fill per input order, in input order.
    pub fills: Vec<Fill>,
}

/// Checks a book: quantities > 0, ids unique, limit prices within `bounds`
/// (when given) and non-negative. Returns the first problem found, naming the
/// order's position, id, field and bound.
pub fn validate_orders(orders: &[Order], bounds: Option<PriceBounds>) -> Result<(), CoreError> {
    for (index, o) in orders.iter().enumerate() {
        if o.quantity.0 <= 0 {
            return Err(CoreError::InvalidOrder {
                index,
                id: o.id,
                field: "kwh",
                reason: format!("must be > 0, got {}", o.quantity.kwh()),
            });
        }
        if o.quantity.0 > 1_000_000_000_000 {
            return Err(CoreError::InvalidOrder {
                index,
                id: o.id,
                field: "kwh",
                reason: format!("must be ≤ 1e9 kWh, got {}", o.quantity.kwh()),
            });
        }
        let (lo, hi) = match bounds {
            Some(b) => (b.feed_in, b.retail),
            None => (PricePerKwh(0), PricePerKwh(1_000_000_000_000)),
        };
        if o.limit_price < lo || o.limit_price > hi {
            return Err(CoreError::InvalidOrder {
                index,
                id: o.id,
                field: "limit_price",
                reason: format!(
                    "{} is outside [{}, {}]",
                    o.limit_price.per_kwh(),
                    lo.per_kwh(),
                    hi.per_kwh()
                ),
            });
        }
    }
    let mut ids: Vec<(OrderId, usize)> =
        orders.iter().enumerate().map(|(i, o)| (o.id, i)).collect();
    ids.sort_unstable();
    if let Some(w) = ids.windows(2).find(|w| w[0].0 == w[1].0) {
        return Err(CoreError::DuplicateOrderId { index: w[0].1.max(w[1].1), id: w[0].0 });
    }
    Ok(())
}
