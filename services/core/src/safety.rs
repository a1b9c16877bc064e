//! The safety filter: from a raw action to a feasible decision.
//!
//! Whatever a policy outputs (NaN included), the filter returns a set-point
//! inside the battery's feasible range for this slot, an order that never
//! sells energy the household does not have nor buys more than it needs,
//! and a limit price inside `[feed-in, retail]`. It is deterministic and pure.

use crate::market::Side;
use crate::observation::Observation;
use crate::policy::Action;
use crate::units::{PricePerKwh, Wh};

/// An order a household wants to place this slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OrderIntent {
    /// Buy or sell.
    pub side: Side,
    /// Energy to trade, whole Wh (> 0).
    pub quantity: Wh,
    /// Limit price, within the slot's price bounds.
    pub limit_price: PricePerKwh,
}

/// The feasible version of an action.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Decision {
    /// Battery set-point, kW (+ charges), inside the feasible range.
    pub setpoint_kw: f64,
    /// Household position after the battery, kWh: load − PV + battery bus energy
    /// (positive = needs energy, negative = surplus).
    pub net_kwh: f64,
    /// The order to place, if any.
    pub order: Option<OrderIntent>,
}

/// Clamps to [-1, 1]; NaN maps to 0 (the neutral action).
#[inline]
fn unit(x: f32) -> f64 {
    if x.is_nan() {
        0.0
    } else {
        (x as f64).clamp(-1.0, 1.0)
    }
}

/// Applies the safety filter to `action` for a household seeing `obs`.
pub fn filter_action(obs: &Observation, action: Action) -> Decision {
    let (lo, hi) = (obs.setpoint_min_kw, obs.setpoint_max_kw);
    let a = unit(action.battery);
    // −1..0 spans [lo, 0] and 0..1 spans [0, hi], so 0 is always "idle" unless
    // the range excludes 0 (an EV that must charge before departure).
    let wanted = if a >= 0.0 { a * hi } else { -a * lo };
    let setpoint_kw = wanted.clamp(lo, hi);
    let net_kwh = obs.load_kwh - obs.pv_kwh + setpoint_kw * obs.ctx.hours;

    let share = (unit(action.quantity) + 1.0) / 2.0;
    let quantity = Wh::floor_from_kwh(share * net_kwh.abs());
    let order = (quantity.0 > 0).then(|| {
        let t = &obs.ctx.tariff;
        let frac = (unit(action.price) + 1.0) / 2.0;
        let price = t.feed_in.0 as f64 + frac * (t.retail.0 - t.feed_in.0) as f64;
        OrderIntent {
            side: if net_kwh > 0.0 { Side::Buy } else { Side::Sell },
            quantity,
            limit_price: PricePerKwh((price.round() as i64).clamp(t.feed_in.0, t.retail.0)),
        }
    });
    Decision { setpoint_kw, net_kwh, order }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::observation::SlotContext;
    use crate::tariff::TariffConfig;
    use proptest::prelude::*;

    pub(crate) fn obs(load: f64, pv: f64, lo: f64, hi: f64) -> Observation {
        let tariff = TariffConfig::default().slot(12, None);
        Observation {
            load_kwh: load,
            pv_kwh: pv,
            soc: 0.5,
            battery_capacity_kwh: 10.0,
            battery_available: true,
            setpoint_min_kw: lo,
            setpoint_max_kw: hi,
            forecast: Default::default(),
            ctx: SlotContext {
                data_slot: 12,
                hour: 12,
                day_fraction: 0.5,
                weekend: false,
                hours: 1.0,
                tariff,
                next_tariff: tariff,
                last_clearing_price_per_kwh: 0.2,
                tariff_ahead: Default::default(),
                last_slot: Default::default(),
            },
        }
    }

    #[test]
    fn surplus_is_offered_and_deficit_bid() {
        let o = obs(1.0, 3.0, -5.0, 4.0);
        let d = filter_action(&o, Action { battery: 0.25, quantity: 1.0, price: -1.0 });
        assert_eq!(d.setpoint_kw, 1.0);
        assert!((d.net_kwh + 1.0).abs() < 1e-12);
        assert_eq!(
            d.order,
            Some(OrderIntent {
                side: Side::Sell,
                quantity: Wh(1000),
                limit_price: o.ctx.tariff.feed_in
            })
        );
        let d = filter_action(&o, Action { battery: 1.0, quantity: 0.0, price: 1.0 });
        assert_eq!(d.setpoint_kw, 4.0);
        let order = d.order.unwrap();
        assert_eq!(
            (order.side, order.quantity, order.limit_price),
            (Side::Buy, Wh(1000), o.ctx.tariff.retail)
        );
    }

    #[test]
    fn nan_actions_are_neutral() {
        let o = obs(2.0, 0.0, -3.0, 3.0);
        let d =
            filter_action(&o, Action { battery: f32::NAN, quantity: f32::NAN, price: f32::NAN });
        assert_eq!(d.setpoint_kw, 0.0);
        let order = d.order.unwrap();
        assert_eq!(order.quantity, Wh(1000));
        assert_eq!(order.limit_price, o.ctx.tariff.midpoint());
    }

    #[test]
    fn forced_charge_range_excluding_zero_is_respected() {
        let o = obs(0.5, 0.0, 2.0, 7.0);
        assert_eq!(
            filter_action(&o, Action { battery: -1.0, quantity: -1.0, price: 0.0 }).setpoint_kw,
            2.0
        );
    }

    proptest! {
        #[test]
        fn decisions_are_always_feasible(
            load in 0.0f64..20.0, pv in 0.0f64..20.0,
            lo in -10.0f64..=0.0, hi in 0.0f64..10.0,
            a in proptest::array::uniform3(prop_oneof![-5.0f32..5.0, Just(f32::NAN), Just(f32::INFINITY), Just(f32::NEG_INFINITY)]),
        ) {
            let o = obs(load, pv, lo, hi);
            let d = filter_action(&o, Action::from_array(a));
            prop_assert!(d.setpoint_kw >= lo && d.setpoint_kw <= hi);
            prop_assert!(d.net_kwh.is_finite());
            if let Some(order) = d.order {
                prop_assert!(order.quantity.0 > 0);
                prop_assert!(order.quantity.kwh() <= d.net_kwh.abs() + 1e-9);
                prop_assert_eq!(order.side == Side::Buy, d.net_kwh > 0.0);
                prop_assert!(order.limit_price >= o.ctx.tariff.feed_in && order.limit_price <= o.ctx.tariff.retail);
            }
            prop_assert_eq!(filter_action(&o, Action::from_array(a)), d);
        }
    }
}
