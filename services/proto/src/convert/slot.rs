//! The per-slot messages up to clearing: `SlotOpen` ⇄ the domain
//! [`OpenSlot`] (the slot's context and adjustments; a core type) and
//! `HouseholdReport` ⇄ the domain report. The answer, `SlotCleared`, is
//! [`super::cleared`].
//!
//! Reports come from agent-nodes, so they are validated hard: every number
//! finite and within physical bounds, and the order consistent with the
//! household's position (a deficit can only buy, a surplus only sell, never
//! more than the position). `SlotOpen` comes from the market and is
//! validated too, so a broken market cannot corrupt an agent.

use peergrid_core::battery::BatteryStep;
use peergrid_core::household::{Adjustment, Conditions, HouseholdReport};
use peergrid_core::market::{PriceBounds, Side};
use peergrid_core::observation::{
    CommunitySignals, OpenSlot, SlotContext, TariffAhead, TARIFF_AHEAD_HOURS,
};
use peergrid_core::safety::OrderIntent;
use peergrid_core::tariff::SlotTariff;
use peergrid_core::units::{PricePerKwh, ProsumerId, Wh};

use super::{
    field, finite_in, index, order_from_wire, required, slot_tariff_from_wire, MAX_PRICE_MICROS,
};
use crate::error::WireError;
use crate::pb::common::v1 as common;
use crate::pb::market::v1 as pb;

/// The largest energy one household can move in one slot, kWh (matches
/// [`super::MAX_ORDER_WH`]).
pub const MAX_SLOT_KWH: f64 = 1000.0;
/// The largest money amount one household can owe in one slot, currency.
pub const MAX_SLOT_MONEY: f64 = 1.0e6;
/// The largest load/PV multiplier an adjustment may apply.
pub const MAX_SCALE: f64 = 100.0;
/// The largest dataset slot a `SlotOpen` may name: more than 19 years of
/// one-minute slots. Nodes add small offsets to it (a household's trace
/// shift), which must never overflow.
pub const MAX_DATA_SLOT: u64 = 10_000_000;
/// Most adjustments one `SlotOpen` may carry (the market bounds the
/// scenario events in force by the same number).
pub const MAX_ADJUSTMENTS: usize = 10_000;

pub fn slot_open_to_wire(open: &OpenSlot) -> pb::SlotOpen {
    let ctx = &open.ctx;
    pb::SlotOpen {
        slot: open.slot,
        data_slot: ctx.data_slot as u64,
        hour: ctx.hour as u32,
        day_fraction: ctx.day_fraction,
        weekend: ctx.weekend,
        slot_hours: ctx.hours,
        tariff: Some(common::SlotTariff::from(&ctx.tariff)),
        next_tariff: Some(common::SlotTariff::from(&ctx.next_tariff)),
        last_clearing_price_micros: PricePerKwh::from_per_kwh(
            ctx.last_clearing_price_per_kwh,
            "last_clearing_price",
        )
        .map_or(ctx.tariff.midpoint().0, |p| p.0),
        deadline_unix_ms: open.deadline_unix_ms,
        tariff_ahead: Some(pb::TariffAhead {
            retail_mean_micros: ctx.tariff_ahead.retail_mean.0,
            retail_max_micros: ctx.tariff_ahead.retail_max.0,
            hours_until_max: ctx.tariff_ahead.hours_until_max,
        }),
        last_p2p_kwh_per_household: ctx.last_slot.p2p_kwh_per_household,
        last_net_kwh_per_household: ctx.last_slot.net_kwh_per_household,
        adjustments: open
            .adjustments
            .iter()
            .map(|a| pb::Adjustment {
                first_prosumer_id: a.first_id,
                last_prosumer_id: a.last_id,
                load_scale: a.conditions.load_scale,
                pv_scale: a.conditions.pv_scale,
                offline: a.offline,
            })
            .collect(),
    }
}

pub fn slot_open_from_wire(w: &pb::SlotOpen) -> Result<OpenSlot, WireError> {
    let tariff = slot_tariff_from_wire(required(w.tariff.as_ref(), "tariff")?, "tariff")?;
    let next_tariff =
        slot_tariff_from_wire(required(w.next_tariff.as_ref(), "next_tariff")?, "next_tariff")?;
    if w.hour > 23 {
        return Err(WireError::invalid("hour", format!("must lie in [0, 23], got {}", w.hour)));
    }
    let day_fraction = finite_in(w.day_fraction, 0.0, 1.0, "day_fraction")?;
    let hours = finite_in(w.slot_hours, 1.0 / 60.0, 24.0, "slot_hours")?;
    if w.data_slot > MAX_DATA_SLOT {
        return Err(WireError::invalid(
            "data_slot",
            format!("must lie in [0, {MAX_DATA_SLOT}], got {}", w.data_slot),
        ));
    }
    let data_slot = w.data_slot as usize;
    let tariff_ahead = tariff_ahead_from_wire(
        required(w.tariff_ahead.as_ref(), "tariff_ahead")?,
        &next_tariff,
        hours,
    )?;
    let last_slot = CommunitySignals {
        p2p_kwh_per_household: finite_in(
            w.last_p2p_kwh_per_household,
            0.0,
            MAX_SLOT_KWH,
            "last_p2p_kwh_per_household",
        )?,
        net_kwh_per_household: finite_in(
            w.last_net_kwh_per_household,
            -MAX_SLOT_KWH,
            MAX_SLOT_KWH,
            "last_net_kwh_per_household",
        )?,
    };
    if !(0..=MAX_PRICE_MICROS).contains(&w.last_clearing_price_micros) {
        return Err(WireError::invalid(
            "last_clearing_price_micros",
            format!(
                "must lie in [0, {MAX_PRICE_MICROS}] µ/kWh, got {}",
                w.last_clearing_price_micros
            ),
        ));
    }
    if w.adjustments.len() > MAX_ADJUSTMENTS {
        return Err(WireError::invalid(
            "adjustments",
            format!("must hold at most {MAX_ADJUSTMENTS} entries, got {}", w.adjustments.len()),
        ));
    }
    let mut adjustments = Vec::with_capacity(w.adjustments.len());
    for (i, a) in w.adjustments.iter().enumerate() {
        let path = index("adjustments", i);
        if a.first_prosumer_id > a.last_prosumer_id {
            return Err(WireError::invalid(
                field(&path, "last_prosumer_id"),
                "must be ≥ first_prosumer_id",
            ));
        }
        adjustments.push(Adjustment {
            first_id: a.first_prosumer_id,
            last_id: a.last_prosumer_id,
            conditions: Conditions {
                load_scale: finite_in(a.load_scale, 0.0, MAX_SCALE, &field(&path, "load_scale"))?,
                pv_scale: finite_in(a.pv_scale, 0.0, MAX_SCALE, &field(&path, "pv_scale"))?,
            },
            offline: a.offline,
        });
    }
    Ok(OpenSlot {
        slot: w.slot,
        ctx: SlotContext {
            data_slot,
            hour: w.hour as u8,
            day_fraction,
            weekend: w.weekend,
            hours,
            tariff,
            next_tariff,
            last_clearing_price_per_kwh: PricePerKwh(w.last_clearing_price_micros).per_kwh(),
            tariff_ahead,
            last_slot,
        },
        deadline_unix_ms: w.deadline_unix_ms,
        adjustments,
    })
}

/// Validates the tariff ahead against the slot it came with: prices within
/// the wire's bounds, the mean at most the highest, the highest at least the
/// next slot's retail (one of the slots it covers), the highest price at
/// least one slot and at most a day and a slot ahead.
fn tariff_ahead_from_wire(
    w: &pb::TariffAhead,
    next_tariff: &SlotTariff,
    slot_hours: f64,
) -> Result<TariffAhead, WireError> {
    let max = w.retail_max_micros;
    if !(next_tariff.retail.0..=MAX_PRICE_MICROS).contains(&max) {
        return Err(WireError::invalid(
            "tariff_ahead.retail_max_micros",
            format!(
                "must lie in [next_tariff.retail_micros = {}, {MAX_PRICE_MICROS}] µ/kWh, got {max}",
                next_tariff.retail.0
            ),
        ));
    }
    if !(0..=max).contains(&w.retail_mean_micros) {
        return Err(WireError::invalid(
            "tariff_ahead.retail_mean_micros",
            format!(
                "must lie in [0, retail_max_micros = {max}] µ/kWh, got {}",
                w.retail_mean_micros
            ),
        ));
    }
    let hours_until_max = finite_in(
        w.hours_until_max,
        slot_hours,
        TARIFF_AHEAD_HOURS + slot_hours,
        "tariff_ahead.hours_until_max",
    )?;
    Ok(TariffAhead {
        retail_mean: PricePerKwh(w.retail_mean_micros),
        retail_max: PricePerKwh(max),
        hours_until_max,
    })
}

pub fn report_to_wire(r: &HouseholdReport) -> pb::HouseholdReport {
    pb::HouseholdReport {
        prosumer_id: r.prosumer_id,
        load_kwh: r.load_kwh,
        pv_kwh: r.pv_kwh,
        net_kwh: r.net_kwh,
        battery_charged_kwh: r.battery.charged_kwh,
        battery_discharged_kwh: r.battery.discharged_kwh,
        battery_losses_kwh: r.battery.losses_kwh,
        degradation_cost: r.degradation_cost,
        ev_shortfall_kwh: r.ev_shortfall_kwh,
        stored_kwh: r.stored_kwh,
        order: r.order.map(|o| common::Order {
            side: common::Side::from(o.side).into(),
            quantity_wh: o.quantity.0,
            limit_price_micros: o.limit_price.0,
        }),
    }
}

/// Validates report `i` of a batch for a slot whose tariff has `bounds`.
/// Whether the prosumer belongs to the sender is the caller's check.
pub fn report_from_wire(
    w: &pb::HouseholdReport,
    bounds: PriceBounds,
    path: &str,
) -> Result<HouseholdReport, WireError> {
    report_from_wire_at(w, bounds, &|| path.to_owned())
}

/// [`report_from_wire`] with the report's path built only if it is invalid:
/// a market validates every report of every slot, and formatting field
/// paths for valid input was its largest cost.
pub fn report_from_wire_at(
    w: &pb::HouseholdReport,
    bounds: PriceBounds,
    path: &dyn Fn() -> String,
) -> Result<HouseholdReport, WireError> {
    let non_negative = |v: f64, name: &str| bounded(v, 0.0, MAX_SLOT_KWH, path, name);
    let load_kwh = non_negative(w.load_kwh, "load_kwh")?;
    let pv_kwh = non_negative(w.pv_kwh, "pv_kwh")?;
    let net_kwh = bounded(w.net_kwh, -MAX_SLOT_KWH, MAX_SLOT_KWH, path, "net_kwh")?;
    let battery = BatteryStep {
        charged_kwh: non_negative(w.battery_charged_kwh, "battery_charged_kwh")?,
        discharged_kwh: non_negative(w.battery_discharged_kwh, "battery_discharged_kwh")?,
        losses_kwh: non_negative(w.battery_losses_kwh, "battery_losses_kwh")?,
        stored_delta_kwh: 0.0,
    };
    // The position must be what the reported physics says it is.
    let implied = load_kwh - pv_kwh + battery.charged_kwh - battery.discharged_kwh;
    if (implied - net_kwh).abs() > 1e-6 * (1.0 + implied.abs()) {
        return Err(WireError::invalid(
            field(&path(), "net_kwh"),
            format!("must equal load − pv + charged − discharged = {implied}, got {net_kwh}"),
        ));
    }
    let degradation_cost =
        bounded(w.degradation_cost, 0.0, MAX_SLOT_MONEY, path, "degradation_cost")?;
    let ev_shortfall_kwh = non_negative(w.ev_shortfall_kwh, "ev_shortfall_kwh")?;
    let stored_kwh = bounded(w.stored_kwh, 0.0, 1.0e6, path, "stored_kwh")?;
    let order = match &w.order {
        None => None,
        Some(o) => Some(order_intent(o, w.prosumer_id, net_kwh, bounds, path)?),
    };
    Ok(HouseholdReport {
        prosumer_id: w.prosumer_id,
        load_kwh,
        pv_kwh,
        net_kwh,
        battery,
        degradation_cost,
        ev_shortfall_kwh,
        stored_kwh,
        order,
    })
}

/// A finite value in `[min, max]`; the field path is formatted only on error.
#[inline]
pub(super) fn bounded(
    v: f64,
    min: f64,
    max: f64,
    path: &dyn Fn() -> String,
    name: &str,
) -> Result<f64, WireError> {
    if v.is_finite() && (min..=max).contains(&v) {
        Ok(v)
    } else {
        finite_in(v, min, max, &field(&path(), name))
    }
}

/// The order of a report, consistent with the household's position.
fn order_intent(
    o: &common::Order,
    id: ProsumerId,
    net_kwh: f64,
    bounds: PriceBounds,
    path: &dyn Fn() -> String,
) -> Result<OrderIntent, WireError> {
    let side = match common::Side::try_from(o.side) {
        Ok(common::Side::Buy) => Some(Side::Buy),
        Ok(common::Side::Sell) => Some(Side::Sell),
        _ => None,
    };
    let valid = side.is_some()
        && (1..=super::MAX_ORDER_WH).contains(&o.quantity_wh)
        && (bounds.feed_in.0..=bounds.retail.0).contains(&o.limit_price_micros);
    let order = match side {
        Some(side) if valid => OrderIntent {
            side,
            quantity: Wh(o.quantity_wh),
            limit_price: PricePerKwh(o.limit_price_micros),
        },
        // Invalid: let the full conversion name the field and the bound.
        _ => {
            let order = order_from_wire(o, id as u64, bounds, &field(&path(), "order"))?;
            OrderIntent {
                side: order.side,
                quantity: order.quantity,
                limit_price: order.limit_price,
            }
        }
    };
    let wrong_side = match order.side {
        Side::Buy if net_kwh <= 0.0 => Some("a household with no deficit cannot buy"),
        Side::Sell if net_kwh >= 0.0 => Some("a household with no surplus cannot sell"),
        _ => None,
    };
    if let Some(reason) = wrong_side {
        return Err(WireError::invalid(
            field(&field(&path(), "order"), "side"),
            format!("{reason} (net_kwh {net_kwh})"),
        ));
    }
    let position = Wh::floor_from_kwh(net_kwh.abs()).0;
    if order.quantity.0 > position {
        return Err(WireError::invalid(
            field(&field(&path(), "order"), "quantity_wh"),
            format!("must be ≤ the household's position {position} Wh, got {}", order.quantity.0),
        ));
    }
    Ok(order)
}

#[cfg(test)]
mod tests {
    use super::*;
    use peergrid_core::tariff::TariffConfig;
    use tonic::Code;

    fn ctx() -> SlotContext {
        let t = TariffConfig::default();
        SlotContext {
            data_slot: 42,
            hour: 18,
            day_fraction: 0.75,
            weekend: true,
            hours: 1.0,
            tariff: t.slot(18, Some(0.3)),
            next_tariff: t.slot(19, None),
            last_clearing_price_per_kwh: 0.25,
            tariff_ahead: TariffAhead {
                retail_mean: PricePerKwh(282_083),
                retail_max: PricePerKwh(450_000),
                hours_until_max: 1.0,
            },
            last_slot: CommunitySignals {
                p2p_kwh_per_household: 0.75,
                net_kwh_per_household: -0.125,
            },
        }
    }

    fn report() -> HouseholdReport {
        HouseholdReport {
            prosumer_id: 7,
            load_kwh: 2.0,
            pv_kwh: 0.5,
            net_kwh: 2.5,
            battery: BatteryStep {
                charged_kwh: 1.0,
                discharged_kwh: 0.0,
                losses_kwh: 0.05,
                stored_delta_kwh: 0.0,
            },
            degradation_cost: 0.01,
            ev_shortfall_kwh: 0.0,
            stored_kwh: 5.0,
            order: Some(OrderIntent {
                side: Side::Buy,
                quantity: Wh(2000),
                limit_price: PricePerKwh(300_000),
            }),
        }
    }

    #[test]
    fn slot_open_round_trips() {
        let adj = Adjustment {
            first_id: 3,
            last_id: 9,
            conditions: Conditions { load_scale: 1.5, pv_scale: 0.2 },
            offline: false,
        };
        let open = OpenSlot { slot: 5, ctx: ctx(), deadline_unix_ms: 123, adjustments: vec![adj] };
        assert_eq!(slot_open_from_wire(&slot_open_to_wire(&open)).unwrap(), open);
    }

    #[test]
    fn slot_open_bounds_name_the_field() {
        let open = OpenSlot { slot: 5, ctx: ctx(), deadline_unix_ms: 123, adjustments: vec![] };
        type Case = (fn(&mut pb::SlotOpen), &'static str, &'static str);
        let cases: [Case; 12] = [
            (|w| w.data_slot = MAX_DATA_SLOT + 1, "data_slot", "[0, 10000000], got 10000001"),
            (|w| w.data_slot = u64::MAX, "data_slot", "got 18446744073709551615"),
            (
                |w| w.last_clearing_price_micros = -1,
                "last_clearing_price_micros",
                "[0, 100000000] µ/kWh, got -1",
            ),
            (
                |w| w.last_clearing_price_micros = i64::MAX,
                "last_clearing_price_micros",
                "got 9223372036854775807",
            ),
            (|w| w.tariff_ahead = None, "tariff_ahead", "is required"),
            (
                |w| w.tariff_ahead.as_mut().unwrap().retail_max_micros = 400_000,
                "tariff_ahead.retail_max_micros",
                "[next_tariff.retail_micros = 450000, 100000000] µ/kWh, got 400000",
            ),
            (
                |w| w.tariff_ahead.as_mut().unwrap().retail_mean_micros = 450_001,
                "tariff_ahead.retail_mean_micros",
                "[0, retail_max_micros = 450000] µ/kWh, got 450001",
            ),
            (
                |w| w.tariff_ahead.as_mut().unwrap().hours_until_max = 0.0,
                "tariff_ahead.hours_until_max",
                "[1, 25], got 0",
            ),
            (
                |w| w.tariff_ahead.as_mut().unwrap().hours_until_max = f64::NAN,
                "tariff_ahead.hours_until_max",
                "finite",
            ),
            (|w| w.last_p2p_kwh_per_household = -0.5, "last_p2p_kwh_per_household", "[0, 1000]"),
            (
                |w| w.last_net_kwh_per_household = 1000.5,
                "last_net_kwh_per_household",
                "[-1000, 1000], got 1000.5",
            ),
            (|w| w.last_net_kwh_per_household = f64::NAN, "last_net_kwh_per_household", "finite"),
        ];
        for (mutate, name, bound) in cases {
            let mut w = slot_open_to_wire(&open);
            mutate(&mut w);
            let e = slot_open_from_wire(&w).unwrap_err();
            assert_eq!(e.code(), Code::InvalidArgument);
            let msg = e.to_string();
            assert!(msg.starts_with(&format!("invalid {name}: ")) && msg.contains(bound), "{msg}");
        }
        let mut w = slot_open_to_wire(&open);
        w.data_slot = MAX_DATA_SLOT;
        w.last_clearing_price_micros = MAX_PRICE_MICROS;
        let back = slot_open_from_wire(&w).unwrap();
        assert_eq!(
            (back.ctx.data_slot, back.ctx.last_clearing_price_per_kwh),
            (MAX_DATA_SLOT as usize, 100.0)
        );
    }

    #[test]
    fn report_round_trips() {
        let r = report();
        assert_eq!(
            report_from_wire(&report_to_wire(&r), ctx().tariff.bounds(), "reports[0]").unwrap(),
            r
        );
    }

    #[test]
    fn bad_reports_name_the_field() {
        let bounds = ctx().tariff.bounds();
        type Mutation = Box<dyn Fn(&mut pb::HouseholdReport)>;
        let cases: Vec<(Mutation, &str)> = vec![
            (Box::new(|w| w.load_kwh = f64::NAN), "reports[2].load_kwh"),
            (Box::new(|w| w.pv_kwh = -1.0), "reports[2].pv_kwh"),
            (Box::new(|w| w.net_kwh = 9.0), "reports[2].net_kwh"),
            (Box::new(|w| w.degradation_cost = f64::INFINITY), "reports[2].degradation_cost"),
            (
                Box::new(|w| w.order.as_mut().unwrap().quantity_wh = 0),
                "reports[2].order.quantity_wh",
            ),
            (
                Box::new(|w| w.order.as_mut().unwrap().quantity_wh = 2600),
                "reports[2].order.quantity_wh",
            ),
            (
                Box::new(|w| w.order.as_mut().unwrap().limit_price_micros = 900_000),
                "reports[2].order.limit_price_micros",
            ),
            (
                Box::new(|w| w.order.as_mut().unwrap().side = common::Side::Sell.into()),
                "reports[2].order.side",
            ),
            (Box::new(|w| w.order.as_mut().unwrap().side = 0), "reports[2].order.side"),
        ];
        for (mutate, field) in cases {
            let mut w = report_to_wire(&report());
            mutate(&mut w);
            let status =
                tonic::Status::from(report_from_wire(&w, bounds, "reports[2]").unwrap_err());
            assert_eq!(status.code(), Code::InvalidArgument);
            assert!(status.message().contains(field), "{field}: {}", status.message());
        }
    }
}
