//! The answer to a batch: `SlotCleared` ⇄ the domain [`ClearedSlot`] (a
//! core type, like `OpenSlot`) and `ProsumerSettlement` ⇄
//! [`SettledHousehold`].
//!
//! The market sends each node one `SlotCleared` per slot. Every settlement
//! in it is self-describing: the side of the household's order, its fill
//! and the whole settlement, the bought/sold split included. So a node
//! decodes it in one pass, at its edge, without the batch it sent — and
//! must therefore check it without that batch. It is validated like any
//! input, so a broken market cannot corrupt an agent: every number finite
//! and within its bound, the split exactly what `settle_household` builds
//! from the side and the fill, every id hosted by the node and named once
//! (settled or missing, never both).
//!
//! What it cannot check without the batch: that a settled household did
//! report this slot (an offline one does not), and that the side is the
//! one it sent. Both are the market's word; it settles every report with
//! the report's own side.

use std::ops::Range;

use peergrid_core::market::{Fill, Side};
use peergrid_core::settlement::{ClearedSlot, SettledHousehold, Settlement};
use peergrid_core::units::{Money, PricePerKwh, ProsumerId, Wh};

use super::slot::{bounded, MAX_SLOT_KWH, MAX_SLOT_MONEY};
use super::{field, index, MAX_ORDER_WH, MAX_PRICE_MICROS};
use crate::error::WireError;
use crate::pb::common::v1 as common;
use crate::pb::market::v1 as pb;

pub fn settlement_to_wire(h: &SettledHousehold) -> pb::ProsumerSettlement {
    let s = &h.settlement;
    pb::ProsumerSettlement {
        prosumer_id: h.prosumer_id,
        filled_wh: h.fill.quantity.0,
        fill_value_nanos: i64::try_from(h.fill.value.0).unwrap_or(i64::MAX),
        grid_import_kwh: s.grid_import_kwh,
        grid_export_kwh: s.grid_export_kwh,
        p2p_received_kwh: s.p2p_received_kwh,
        import_cost: s.import_cost,
        export_revenue: s.export_revenue,
        overload_penalty: s.overload_penalty,
        side: h.side.map_or(common::Side::Unspecified, common::Side::from).into(),
        p2p_bought_kwh: s.p2p_bought_kwh,
        p2p_sold_kwh: s.p2p_sold_kwh,
        p2p_paid: s.p2p_paid,
        p2p_revenue: s.p2p_revenue,
        demand_charge: s.demand_charge,
    }
}

/// Validates settlement `w` at `path` (e.g. `settlements[3]`) on its own.
/// Whether its prosumer is hosted by the receiver is the caller's check.
pub fn settlement_from_wire(
    w: &pb::ProsumerSettlement,
    path: &str,
) -> Result<SettledHousehold, WireError> {
    settlement_from_wire_at(w, &|| path.to_owned())
}

/// [`settlement_from_wire`] with the path built only on error: a node
/// decodes every settlement of every slot.
pub fn settlement_from_wire_at(
    w: &pb::ProsumerSettlement,
    path: &dyn Fn() -> String,
) -> Result<SettledHousehold, WireError> {
    let side = match common::Side::try_from(w.side) {
        Ok(common::Side::Unspecified) => None,
        Ok(common::Side::Buy) => Some(Side::Buy),
        Ok(common::Side::Sell) => Some(Side::Sell),
        Err(_) => {
            return Err(WireError::invalid(
                field(&path(), "side"),
                format!("unknown Side value {}", w.side),
            ))
        }
    };
    let fill = fill_from_wire(w, side, path)?;
    let kwh = |v: f64, name: &str| bounded(v, 0.0, MAX_SLOT_KWH, path, name);
    let money = |v: f64, name: &str| bounded(v, 0.0, MAX_SLOT_MONEY, path, name);
    let settlement = Settlement {
        grid_import_kwh: kwh(w.grid_import_kwh, "grid_import_kwh")?,
        grid_export_kwh: kwh(w.grid_export_kwh, "grid_export_kwh")?,
        p2p_bought_kwh: kwh(w.p2p_bought_kwh, "p2p_bought_kwh")?,
        p2p_received_kwh: kwh(w.p2p_received_kwh, "p2p_received_kwh")?,
        p2p_sold_kwh: kwh(w.p2p_sold_kwh, "p2p_sold_kwh")?,
        p2p_paid: money(w.p2p_paid, "p2p_paid")?,
        p2p_revenue: money(w.p2p_revenue, "p2p_revenue")?,
        import_cost: money(w.import_cost, "import_cost")?,
        export_revenue: money(w.export_revenue, "export_revenue")?,
        overload_penalty: money(w.overload_penalty, "overload_penalty")?,
        demand_charge: money(w.demand_charge, "demand_charge")?,
    };
    check_split(&settlement, side, fill, path)?;
    Ok(SettledHousehold { prosumer_id: w.prosumer_id, side, fill, settlement })
}

/// The fill: at most [`MAX_ORDER_WH`], worth at most its energy at the
/// highest price a tariff may have, and none without an order.
fn fill_from_wire(
    w: &pb::ProsumerSettlement,
    side: Option<Side>,
    path: &dyn Fn() -> String,
) -> Result<Fill, WireError> {
    if !(0..=MAX_ORDER_WH).contains(&w.filled_wh) {
        return Err(WireError::invalid(
            field(&path(), "filled_wh"),
            format!("must lie in [0, {MAX_ORDER_WH}] Wh, got {}", w.filled_wh),
        ));
    }
    let max_value = w.filled_wh as i128 * MAX_PRICE_MICROS as i128;
    if !(0..=max_value).contains(&(w.fill_value_nanos as i128)) {
        return Err(WireError::invalid(
            field(&path(), "fill_value_nanos"),
            format!(
                "must lie in [0, filled_wh × {MAX_PRICE_MICROS} µ/kWh = {max_value}] nano, got {}",
                w.fill_value_nanos
            ),
        ));
    }
    if w.filled_wh > 0 && side.is_none() {
        return Err(WireError::invalid(
            field(&path(), "filled_wh"),
            "a household without an order (side SIDE_UNSPECIFIED) cannot be filled",
        ));
    }
    Ok(Fill { quantity: Wh(w.filled_wh), value: Money(w.fill_value_nanos as i128) })
}

/// The P2P split must be what `settle_household` builds from `side` and
/// `fill` (the same operations, so equal to the bit), and a buyer receives
/// at most what it bought (distribution losses only take energy away).
fn check_split(
    s: &Settlement,
    side: Option<Side>,
    fill: Fill,
    path: &dyn Fn() -> String,
) -> Result<(), WireError> {
    let traded = fill.quantity.0 > 0;
    let (energy, value) = (fill.quantity.kwh(), fill.value.amount());
    let (bought, paid) =
        if traded && side == Some(Side::Buy) { (energy, value) } else { (0.0, 0.0) };
    let (sold, revenue) =
        if traded && side == Some(Side::Sell) { (energy, value) } else { (0.0, 0.0) };
    let what = match side {
        _ if !traded => "without a fill".to_owned(),
        Some(Side::Buy) => format!("for a buy filled {} Wh", fill.quantity.0),
        Some(Side::Sell) => format!("for a sell filled {} Wh", fill.quantity.0),
        None => unreachable!("fill_from_wire refuses a fill without a side"),
    };
    let expected = [
        (s.p2p_bought_kwh, bought, "p2p_bought_kwh", "kWh"),
        (s.p2p_sold_kwh, sold, "p2p_sold_kwh", "kWh"),
        (s.p2p_paid, paid, "p2p_paid", "(the fill's value)"),
        (s.p2p_revenue, revenue, "p2p_revenue", "(the fill's value)"),
    ];
    for (got, want, name, unit) in expected {
        if got != want {
            return Err(WireError::invalid(
                field(&path(), name),
                format!("must be {want} {unit} {what}, got {got}"),
            ));
        }
    }
    if s.p2p_received_kwh > s.p2p_bought_kwh {
        return Err(WireError::invalid(
            field(&path(), "p2p_received_kwh"),
            format!(
                "must be ≤ p2p_bought_kwh = {} kWh, got {}",
                s.p2p_bought_kwh, s.p2p_received_kwh
            ),
        ));
    }
    Ok(())
}

pub fn slot_cleared_to_wire(c: &ClearedSlot) -> pb::SlotCleared {
    pb::SlotCleared {
        slot: c.slot,
        clearing_price_micros: c.clearing_price.map(|p| p.0),
        matched_wh: c.matched.0,
        settlements: c.settlements.iter().map(settlement_to_wire).collect(),
        missing_prosumer_ids: c.missing.clone(),
    }
}

/// Validates a `SlotCleared` for the node hosting the ids `hosted`: every
/// settlement on its own ([`settlement_from_wire`]), every id hosted and
/// named once across `settlements` and `missing_prosumer_ids`. The
/// settlements come back sorted by id.
pub fn slot_cleared_from_wire(
    w: &pb::SlotCleared,
    hosted: &Range<ProsumerId>,
) -> Result<ClearedSlot, WireError> {
    let clearing_price = match w.clearing_price_micros {
        Some(p) if !(0..=MAX_PRICE_MICROS).contains(&p) => {
            return Err(WireError::invalid(
                "clearing_price_micros",
                format!("must lie in [0, {MAX_PRICE_MICROS}] µ/kWh, got {p}"),
            ));
        }
        p => p.map(PricePerKwh),
    };
    if w.matched_wh < 0 {
        return Err(WireError::invalid(
            "matched_wh",
            format!("must be ≥ 0 Wh, got {}", w.matched_wh),
        ));
    }
    // Counted before anything is decoded or allocated per id.
    let hosted_count = hosted.len();
    if w.settlements.len() + w.missing_prosumer_ids.len() > hosted_count {
        return Err(WireError::invalid(
            "settlements",
            format!(
                "with missing_prosumer_ids may name at most the {hosted_count} hosted prosumers, got {} + {}",
                w.settlements.len(),
                w.missing_prosumer_ids.len()
            ),
        ));
    }
    let mut named = vec![false; hosted_count];
    let mut name_once = |id: ProsumerId, path: &dyn Fn() -> String| -> Result<(), WireError> {
        if !hosted.contains(&id) {
            return Err(WireError::invalid(
                path(),
                format!("{id} is not hosted by this node (ids {hosted:?})"),
            ));
        }
        if std::mem::replace(&mut named[(id - hosted.start) as usize], true) {
            return Err(WireError::invalid(
                path(),
                format!("prosumer {id} is named twice (settled or missing once)"),
            ));
        }
        Ok(())
    };
    let mut settlements = Vec::with_capacity(w.settlements.len());
    for (i, s) in w.settlements.iter().enumerate() {
        let path = || index("settlements", i);
        name_once(s.prosumer_id, &|| field(&path(), "prosumer_id"))?;
        settlements.push(settlement_from_wire_at(s, &path)?);
    }
    for (i, id) in w.missing_prosumer_ids.iter().enumerate() {
        name_once(*id, &|| index("missing_prosumer_ids", i))?;
    }
    // The market sends them in id order; any order is accepted.
    if !settlements.is_sorted_by_key(|h| h.prosumer_id) {
        settlements.sort_unstable_by_key(|h| h.prosumer_id);
    }
    Ok(ClearedSlot {
        slot: w.slot,
        clearing_price,
        matched: Wh(w.matched_wh),
        settlements,
        missing: w.missing_prosumer_ids.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use peergrid_core::settlement::settle_household;
    use peergrid_core::tariff::{GridConfig, TariffConfig};
    use tonic::Code;

    /// A household with a 2.5 kWh deficit whose buy order got 1.5 kWh at 0.25/kWh.
    fn buyer(id: ProsumerId) -> SettledHousehold {
        let tariff = TariffConfig::default().slot(18, Some(0.3));
        let fill = Fill { quantity: Wh(1500), value: Money::of(Wh(1500), PricePerKwh(250_000)) };
        let grid = GridConfig { p2p_loss_fraction: 0.02, ..GridConfig::default() };
        let settlement = settle_household(2.5, Some(Side::Buy), fill, &tariff, &grid);
        SettledHousehold { prosumer_id: id, side: Some(Side::Buy), fill, settlement }
    }

    /// A household with a 1 kWh surplus whose sell order got nothing.
    fn unfilled_seller(id: ProsumerId) -> SettledHousehold {
        let tariff = TariffConfig::default().slot(18, Some(0.3));
        let settlement = settle_household(
            -1.0,
            Some(Side::Sell),
            Fill::default(),
            &tariff,
            &GridConfig::default(),
        );
        SettledHousehold {
            prosumer_id: id,
            side: Some(Side::Sell),
            fill: Fill::default(),
            settlement,
        }
    }

    fn cleared() -> ClearedSlot {
        ClearedSlot {
            slot: 9,
            clearing_price: Some(PricePerKwh(250_000)),
            matched: Wh(1500),
            settlements: vec![buyer(3), unfilled_seller(5)],
            missing: vec![4],
        }
    }

    fn message(e: WireError) -> String {
        assert_eq!(e.code(), Code::InvalidArgument);
        e.to_string()
    }

    #[test]
    fn a_cleared_slot_round_trips_and_says_its_sides() {
        let c = cleared();
        let w = slot_cleared_to_wire(&c);
        assert_eq!(w.settlements[0].side, common::Side::Buy as i32);
        assert_eq!((w.settlements[0].p2p_bought_kwh, w.settlements[0].p2p_sold_kwh), (1.5, 0.0));
        assert_eq!(w.settlements[0].p2p_paid, 0.375, "1.5 kWh at 0.25/kWh");
        assert_eq!(w.settlements[1].side, common::Side::Sell as i32);
        assert_eq!(slot_cleared_from_wire(&w, &(3..6)).unwrap(), c);
    }

    #[test]
    fn settlements_in_any_order_come_back_sorted() {
        let mut w = slot_cleared_to_wire(&cleared());
        w.settlements.reverse();
        assert_eq!(slot_cleared_from_wire(&w, &(3..6)).unwrap(), cleared());
    }

    #[test]
    fn ids_must_be_hosted_and_named_once() {
        type Case = (fn(&mut pb::SlotCleared), &'static str);
        let cases: [Case; 5] = [
            (
                |w| w.settlements[1].prosumer_id = 42,
                "invalid settlements[1].prosumer_id: 42 is not hosted by this node (ids 3..6)",
            ),
            (
                |w| w.missing_prosumer_ids = vec![99],
                "invalid missing_prosumer_ids[0]: 99 is not hosted",
            ),
            (
                |w| w.settlements[1].prosumer_id = 3,
                "invalid settlements[1].prosumer_id: prosumer 3 is named twice",
            ),
            (
                |w| w.missing_prosumer_ids = vec![5],
                "invalid missing_prosumer_ids[0]: prosumer 5 is named twice",
            ),
            (
                |w| w.missing_prosumer_ids = vec![4, 4, 4],
                "invalid settlements: with missing_prosumer_ids may name at most the 3",
            ),
        ];
        for (mutate, expected) in cases {
            let mut w = slot_cleared_to_wire(&cleared());
            mutate(&mut w);
            let e = message(slot_cleared_from_wire(&w, &(3..6)).unwrap_err());
            assert!(e.starts_with(expected), "{e}");
        }
    }

    #[test]
    fn slot_fields_name_their_bound() {
        let mut w = slot_cleared_to_wire(&cleared());
        w.clearing_price_micros = Some(MAX_PRICE_MICROS + 1);
        let e = message(slot_cleared_from_wire(&w, &(3..6)).unwrap_err());
        assert!(
            e.starts_with("invalid clearing_price_micros: must lie in [0, 100000000] µ/kWh"),
            "{e}"
        );
        w.clearing_price_micros = None;
        w.matched_wh = -1;
        let e = message(slot_cleared_from_wire(&w, &(3..6)).unwrap_err());
        assert_eq!(e, "invalid matched_wh: must be ≥ 0 Wh, got -1");
    }

    #[test]
    fn the_split_must_follow_the_side_and_the_fill() {
        type Case = (fn(&mut pb::ProsumerSettlement), &'static str);
        let cases: [Case; 9] = [
            (|w| w.side = 9, "s.side: unknown Side value 9"),
            (|w| w.side = 0, "s.filled_wh: a household without an order"),
            (
                |w| w.side = common::Side::Sell.into(),
                "s.p2p_bought_kwh: must be 0 kWh for a sell filled 1500 Wh, got 1.5",
            ),
            (
                |w| w.p2p_bought_kwh = 1.4,
                "s.p2p_bought_kwh: must be 1.5 kWh for a buy filled 1500 Wh, got 1.4",
            ),
            (|w| w.p2p_sold_kwh = 1.5, "s.p2p_sold_kwh: must be 0 kWh for a buy"),
            (|w| w.p2p_paid = 0.0, "s.p2p_paid: must be 0.375 (the fill's value) for a buy"),
            (|w| w.p2p_revenue = 0.375, "s.p2p_revenue: must be 0 (the fill's value)"),
            (
                |w| w.p2p_received_kwh = 1.6,
                "s.p2p_received_kwh: must be ≤ p2p_bought_kwh = 1.5 kWh, got 1.6",
            ),
            (|w| w.p2p_bought_kwh = f64::NAN, "s.p2p_bought_kwh: must be finite"),
        ];
        for (mutate, expected) in cases {
            let mut w = settlement_to_wire(&buyer(3));
            mutate(&mut w);
            let e = message(settlement_from_wire(&w, "s").unwrap_err());
            assert!(e.starts_with(&format!("invalid {expected}")), "{expected}: {e}");
        }
        // Without a fill, the split is 0 whatever the side.
        let mut w = settlement_to_wire(&unfilled_seller(5));
        w.p2p_sold_kwh = 1.0;
        let e = message(settlement_from_wire(&w, "s").unwrap_err());
        assert!(
            e.starts_with("invalid s.p2p_sold_kwh: must be 0 kWh without a fill, got 1"),
            "{e}"
        );
    }

    #[test]
    fn a_fill_is_bounded_by_its_energy_and_the_highest_price() {
        let mut w = settlement_to_wire(&buyer(7));
        w.fill_value_nanos = 1500 * MAX_PRICE_MICROS + 1;
        let e = message(settlement_from_wire(&w, "s").unwrap_err());
        assert!(
            e.starts_with("invalid s.fill_value_nanos: ") && e.contains("= 150000000000] nano"),
            "{e}"
        );
        w.filled_wh = 0;
        w.fill_value_nanos = 1;
        let e = message(settlement_from_wire(&w, "s").unwrap_err());
        assert!(e.contains("s.fill_value_nanos"), "value without a fill: {e}");
        w.filled_wh = -1;
        let e = message(settlement_from_wire(&w, "s").unwrap_err());
        assert!(e.contains("s.filled_wh") && e.contains("got -1"), "{e}");
        let mut w = settlement_to_wire(&buyer(7));
        w.grid_import_kwh = f64::NAN;
        assert!(message(settlement_from_wire(&w, "s").unwrap_err()).contains("s.grid_import_kwh"));
    }
}
