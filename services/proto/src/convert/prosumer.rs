//! A hosted prosumer's equipment: wire `ProsumerSummary` ⇄
//! `peergrid_core::physics::Envelope`.
//!
//! The envelope bounds every later report of the prosumer, so it is checked
//! in full here: a known kind, PV and battery within
//! [`MAX_EQUIPMENT`](peergrid_core::physics::MAX_EQUIPMENT), a battery
//! rating and an EV window exactly where the kind has them, and the legacy
//! `battery_kwh` equal to the rating's capacity.

use peergrid_core::battery::BatterySpec;
use peergrid_core::physics::{Envelope, EvWindow};
use peergrid_core::prosumer::ProsumerKind;

use super::field;
use crate::error::WireError;
use crate::pb::market::v1 as pb;

/// The wire summary of prosumer `id` with equipment `env`.
pub fn envelope_to_wire(id: u32, env: &Envelope) -> pb::ProsumerSummary {
    pb::ProsumerSummary {
        prosumer_id: id,
        kind: env.kind.name().to_owned(),
        pv_kwp: env.pv_kwp,
        battery_kwh: env.battery.map_or(0.0, |b| b.capacity_kwh),
        battery: env.battery.map(|b| pb::BatteryRating {
            capacity_kwh: b.capacity_kwh,
            max_charge_kw: b.max_charge_kw,
            max_discharge_kw: b.max_discharge_kw,
            round_trip_efficiency: b.round_trip_efficiency,
            soc_min: b.soc_min,
            soc_max: b.soc_max,
            degradation_cost_per_kwh: b.degradation_cost_per_kwh,
        }),
        ev: env.ev.map(|e| pb::EvWindow {
            arrive_hour: e.arrive_hour.into(),
            depart_hour: e.depart_hour.into(),
            trip_kwh: e.trip_kwh,
        }),
    }
}

/// Validates the summary found at `path` (e.g. `prosumers[3]`).
pub fn envelope_from_wire(w: &pb::ProsumerSummary, path: &str) -> Result<Envelope, WireError> {
    let Some(kind) = ProsumerKind::ALL.into_iter().find(|k| k.name() == w.kind) else {
        return Err(WireError::invalid(
            field(path, "kind"),
            format!("unknown kind {:?}: one of pv-battery, pv-only, consumer, ev", w.kind),
        ));
    };
    let battery = w.battery.as_ref().map(|b| BatterySpec {
        capacity_kwh: b.capacity_kwh,
        max_charge_kw: b.max_charge_kw,
        max_discharge_kw: b.max_discharge_kw,
        round_trip_efficiency: b.round_trip_efficiency,
        soc_min: b.soc_min,
        soc_max: b.soc_max,
        degradation_cost_per_kwh: b.degradation_cost_per_kwh,
    });
    let hour = |v: u32, name: &str| {
        u8::try_from(v).ok().filter(|h| *h <= 23).ok_or_else(|| {
            WireError::invalid(
                field(&field(path, "ev"), name),
                format!("must be an hour in 0..=23, got {v}"),
            )
        })
    };
    let ev = match &w.ev {
        None => None,
        Some(e) => Some(EvWindow {
            arrive_hour: hour(e.arrive_hour, "arrive_hour")?,
            depart_hour: hour(e.depart_hour, "depart_hour")?,
            trip_kwh: e.trip_kwh,
        }),
    };
    let env = Envelope { kind, pv_kwp: w.pv_kwp, battery, ev };
    env.validate(path).map_err(WireError::from)?;
    let capacity = battery.map_or(0.0, |b| b.capacity_kwh);
    if w.battery_kwh != capacity {
        return Err(WireError::invalid(
            field(path, "battery_kwh"),
            format!("must equal battery.capacity_kwh ({capacity}), got {}", w.battery_kwh),
        ));
    }
    Ok(env)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev() -> Envelope {
        Envelope {
            kind: ProsumerKind::Ev,
            pv_kwp: 4.0,
            battery: Some(BatterySpec::home(40.0)),
            ev: Some(EvWindow { arrive_hour: 18, depart_hour: 7, trip_kwh: 8.0 }),
        }
    }

    #[test]
    fn envelopes_round_trip() {
        let consumer =
            Envelope { kind: ProsumerKind::Consumer, pv_kwp: 0.0, battery: None, ev: None };
        let pv_battery = Envelope { kind: ProsumerKind::PvBattery, ev: None, ..ev() };
        for env in [ev(), consumer, pv_battery] {
            assert_eq!(envelope_from_wire(&envelope_to_wire(7, &env), "p").unwrap(), env);
        }
    }

    type Case = (fn(&mut pb::ProsumerSummary), &'static str);

    #[test]
    fn bad_summaries_name_the_field() {
        let cases: [Case; 7] = [
            (|w| w.kind = "windmill".into(), "p.kind"),
            (|w| w.pv_kwp = f64::INFINITY, "p.pv_kwp"),
            (|w| w.battery = None, "p.battery"),
            (|w| w.battery.as_mut().unwrap().max_discharge_kw = 1e30, "p.battery.max_discharge_kw"),
            (|w| w.battery_kwh = 3.0, "p.battery_kwh"),
            (|w| w.ev.as_mut().unwrap().depart_hour = 300, "p.ev.depart_hour"),
            (|w| w.ev = None, "p.ev"),
        ];
        for (break_it, want) in cases {
            let mut w = envelope_to_wire(1, &ev());
            break_it(&mut w);
            match envelope_from_wire(&w, "p") {
                Err(WireError::InvalidArgument { field, .. }) => assert_eq!(field, want),
                other => panic!("{want}: {other:?}"),
            }
        }
    }
}
