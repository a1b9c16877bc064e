//! Limit orders: wire `Order` ⇄ `peergrid_core::market::Order`.
//!
//! The wire order carries no id: the market knows which prosumer reported it
//! and passes the id in. The limit price is checked against the bounds of the
//! slot's tariff (nobody buys P2P above retail or sells below feed-in), so the
//! caller passes those too; the quantity must be a positive number of Wh no
//! larger than [`MAX_ORDER_WH`]. Whether the quantity fits the household's
//! position is checked where the position is known, not here.

use peergrid_core::market::{Order, OrderId, PriceBounds};
use peergrid_core::units::{PricePerKwh, Wh};

use super::{field, side_from_wire};
use crate::error::WireError;
use crate::pb::common::v1 as pb;

/// The largest quantity one household may offer in one slot, Wh: 1 MWh, far
/// beyond any household connection (a 100 kW connection for 10 hours).
pub const MAX_ORDER_WH: i64 = 1_000_000;

/// Validates the wire order at `path` (e.g. `reports[3].order`) for the
/// prosumer `id` in a slot whose tariff has `bounds`.
pub fn order_from_wire(
    wire: &pb::Order,
    id: OrderId,
    bounds: PriceBounds,
    path: &str,
) -> Result<Order, WireError> {
    let side = side_from_wire(wire.side, &field(path, "side"))?;
    if !(1..=MAX_ORDER_WH).contains(&wire.quantity_wh) {
        return Err(WireError::invalid(
            field(path, "quantity_wh"),
            format!("must lie in [1, {MAX_ORDER_WH}] Wh, got {}", wire.quantity_wh),
        ));
    }
    let PriceBounds { feed_in, retail } = bounds;
    if !(feed_in.0..=retail.0).contains(&wire.limit_price_micros) {
        return Err(WireError::invalid(
            field(path, "limit_price_micros"),
            format!(
                "must lie within the slot's tariff [{}, {}] µ/kWh, got {}",
                feed_in.0, retail.0, wire.limit_price_micros
            ),
        ));
    }
    Ok(Order {
        id,
        side,
        quantity: Wh(wire.quantity_wh),
        limit_price: PricePerKwh(wire.limit_price_micros),
    })
}

/// The wire form drops the id (the report it travels in names the prosumer).
impl From<&Order> for pb::Order {
    fn from(o: &Order) -> pb::Order {
        pb::Order {
            side: pb::Side::from(o.side).into(),
            quantity_wh: o.quantity.0,
            limit_price_micros: o.limit_price.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use peergrid_core::market::Side;
    use tonic::Code;

    const BOUNDS: PriceBounds =
        PriceBounds { feed_in: PricePerKwh(50_000), retail: PricePerKwh(450_000) };

    fn buy() -> pb::Order {
        pb::Order { side: pb::Side::Buy.into(), quantity_wh: 1_500, limit_price_micros: 300_000 }
    }

    #[test]
    fn round_trips_at_the_bounds() {
        for (side, quantity, price) in [
            (Side::Buy, 1, 50_000),
            (Side::Sell, MAX_ORDER_WH, 450_000),
            (Side::Sell, 2_000, 145_000),
        ] {
            let o = Order { id: 42, side, quantity: Wh(quantity), limit_price: PricePerKwh(price) };
            assert_eq!(order_from_wire(&pb::Order::from(&o), 42, BOUNDS, "order").unwrap(), o);
        }
    }

    #[test]
    fn each_invalid_field_is_named_with_its_bound() {
        type Case = (fn(&mut pb::Order), &'static str, &'static str);
        let cases: [Case; 7] = [
            (|o| o.side = pb::Side::Unspecified.into(), "side", "SIDE_UNSPECIFIED"),
            (|o| o.side = 9, "side", "unknown Side value 9"),
            (|o| o.quantity_wh = 0, "quantity_wh", "[1, 1000000] Wh, got 0"),
            (|o| o.quantity_wh = -20, "quantity_wh", "got -20"),
            (|o| o.quantity_wh = MAX_ORDER_WH + 1, "quantity_wh", "got 1000001"),
            (
                |o| o.limit_price_micros = 49_999,
                "limit_price_micros",
                "[50000, 450000] µ/kWh, got 49999",
            ),
            (|o| o.limit_price_micros = 450_001, "limit_price_micros", "got 450001"),
        ];
        for (mutate, name, bound) in cases {
            let mut o = buy();
            mutate(&mut o);
            let e = order_from_wire(&o, 3, BOUNDS, "reports[3].order").unwrap_err();
            assert_eq!(e.code(), Code::InvalidArgument);
            let msg = e.to_string();
            assert!(
                msg.starts_with(&format!("invalid reports[3].order.{name}: "))
                    && msg.contains(bound),
                "{msg}"
            );
        }
    }
}
