//! Small books shared by the market's unit tests (hand-checkable golden cases).

use super::order::{Order, OrderId, Side};
use crate::units::{PricePerKwh, Wh};

pub(crate) fn order(id: OrderId, side: Side, wh: i64, micros: i64) -> Order {
    Order { id, side, quantity: Wh(wh), limit_price: PricePerKwh(micros) }
}

/// Asks A1 2 kWh@0.10, A2 3@0.14, A3 2@0.20; bids B1 3@0.22, B2 2@0.15,
/// B3 2@0.12. Uniform: Q* = 5 kWh at 0.145. Pay-as-bid pairs: B1–A1 2 kWh,
/// B1–A2 1 kWh, B2–A2 2 kWh; B3 < A3.
pub(crate) fn golden_book() -> Vec<Order> {
    vec![
        order(1, Side::Sell, 2000, 100_000),
        order(2, Side::Sell, 3000, 140_000),
        order(3, Side::Sell, 2000, 200_000),
        order(11, Side::Buy, 3000, 220_000),
        order(12, Side::Buy, 2000, 150_000),
        order(13, Side::Buy, 2000, 120_000),
    ]
}
