//! Scenario events an operator injects into a running market, and the
//! bookkeeping of the ones in effect.
//!
//! An event is a plain value ([`ScenarioEvent`]) validated on its own
//! ([`ScenarioEvent::validate`]); a scenario file is a list of timed events
//! (`{"events": [{"at_slot": 12, "scale": {...}}, ...]}`) parsed and validated
//! as a whole by [`parse_scenario`] before any of them is applied. This file
//! knows nothing of gRPC or of the clock: [`crate::state`] applies events and
//! asks [`Effects`] what holds for the slot it opens.

use peergrid_core::household::{Adjustment, Conditions};
use peergrid_core::units::ProsumerId;
use serde::Deserialize;

use peergrid_proto::convert::slot::MAX_SCALE;

use crate::error::MarketError;

/// Longest duration of a timed effect, slots.
pub(crate) const MAX_EFFECT_SLOTS: u32 = 100_000;
/// Most events one scenario may schedule.
pub(crate) const MAX_SCENARIO_EVENTS: usize = 10_000;
/// Largest scenario document, bytes.
pub(crate) const MAX_SCENARIO_BYTES: usize = 1 << 20;
/// Highest tariff price an override may set, currency/kWh (the wire bound).
pub(crate) const MAX_PRICE_PER_KWH: f64 = 100.0;
/// Most events in force, injected or scheduled at once: every effect in
/// force travels in each `SlotOpen`, so their number is bounded like the
/// adjustments a node accepts (`peergrid_proto::convert::slot::MAX_ADJUSTMENTS`).
pub(crate) const MAX_LIVE_EVENTS: usize = peergrid_proto::convert::slot::MAX_ADJUSTMENTS;

#[derive(Clone, Copy, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScaleGroup {
    pub first_prosumer_id: ProsumerId,
    pub last_prosumer_id: ProsumerId,
    #[serde(default = "one")]
    pub pv_scale: f64,
    #[serde(default = "one")]
    pub load_scale: f64,
    pub slots: u32,
}

fn one() -> f64 {
    1.0
}

#[derive(Clone, Copy, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TariffOverride {
    pub retail_per_kwh: f64,
    pub feed_in_per_kwh: f64,
    pub slots: u32,
}

/// kW; 0 = unlimited.
#[derive(Clone, Copy, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeederLimit {
    #[serde(default)]
    pub import_limit_kw: f64,
    #[serde(default)]
    pub export_limit_kw: f64,
}

#[derive(Clone, Copy, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TakeOffline {
    pub first_prosumer_id: ProsumerId,
    pub last_prosumer_id: ProsumerId,
    pub slots: u32,
}

/// One change to the run.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ScenarioEvent {
    Scale(ScaleGroup),
    Tariff(TariffOverride),
    Feeder(FeederLimit),
    Offline(TakeOffline),
}

impl std::fmt::Display for ScenarioEvent {
    /// What an operator reads back from `peergrid ctl inject`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ScenarioEvent::Scale(e) => write!(
                f,
                "prosumers {}..={}: PV ×{}, load ×{} for {} slot(s)",
                e.first_prosumer_id, e.last_prosumer_id, e.pv_scale, e.load_scale, e.slots
            ),
            ScenarioEvent::Tariff(e) => {
                write!(
                    f,
                    "tariff: retail {}/kWh, feed-in {}/kWh for {} slot(s)",
                    e.retail_per_kwh, e.feed_in_per_kwh, e.slots
                )
            }
            ScenarioEvent::Feeder(e) => {
                let limit =
                    |kw: f64| if kw == 0.0 { "unlimited".to_owned() } else { format!("{kw} kW") };
                write!(
                    f,
                    "feeder limits: import {}, export {}",
                    limit(e.import_limit_kw),
                    limit(e.export_limit_kw)
                )
            }
            ScenarioEvent::Offline(e) => {
                write!(
                    f,
                    "prosumers {}..={} offline for {} slot(s)",
                    e.first_prosumer_id, e.last_prosumer_id, e.slots
                )
            }
        }
    }
}

fn slots_ok(slots: u32, path: &str) -> Result<(), MarketError> {
    if (1..=MAX_EFFECT_SLOTS).contains(&slots) {
        Ok(())
    } else {
        Err(MarketError::invalid(
            format!("{path}.slots"),
            format!("must lie in 1..={MAX_EFFECT_SLOTS}, got {slots}"),
        ))
    }
}

fn range_ok(first: ProsumerId, last: ProsumerId, path: &str) -> Result<(), MarketError> {
    if first <= last {
        Ok(())
    } else {
        Err(MarketError::invalid(
            format!("{path}.last_prosumer_id"),
            format!("must be ≥ first_prosumer_id ({first}), got {last}"),
        ))
    }
}

fn finite_in(v: f64, lo: f64, hi: f64, path: String) -> Result<(), MarketError> {
    if v.is_finite() && (lo..=hi).contains(&v) {
        Ok(())
    } else {
        Err(MarketError::invalid(path, format!("must be finite and lie in [{lo}, {hi}], got {v}")))
    }
}

impl ScenarioEvent {
    /// Checks every field; `path` names the event in errors (`"event"`, `"events[3].scale"`).
    pub fn validate(&self, path: &str) -> Result<(), MarketError> {
        match *self {
            ScenarioEvent::Scale(s) => {
                range_ok(s.first_prosumer_id, s.last_prosumer_id, path)?;
                finite_in(s.pv_scale, 0.0, MAX_SCALE, format!("{path}.pv_scale"))?;
                finite_in(s.load_scale, 0.0, MAX_SCALE, format!("{path}.load_scale"))?;
                slots_ok(s.slots, path)
            }
            ScenarioEvent::Tariff(t) => {
                finite_in(
                    t.retail_per_kwh,
                    0.0,
                    MAX_PRICE_PER_KWH,
                    format!("{path}.retail_per_kwh"),
                )?;
                finite_in(
                    t.feed_in_per_kwh,
                    0.0,
                    t.retail_per_kwh,
                    format!("{path}.feed_in_per_kwh"),
                )?;
                slots_ok(t.slots, path)
            }
            ScenarioEvent::Feeder(f) => {
                finite_in(f.import_limit_kw, 0.0, 1.0e9, format!("{path}.import_limit_kw"))?;
                finite_in(f.export_limit_kw, 0.0, 1.0e9, format!("{path}.export_limit_kw"))
            }
            ScenarioEvent::Offline(o) => {
                range_ok(o.first_prosumer_id, o.last_prosumer_id, path)?;
                slots_ok(o.slots, path)
            }
        }
    }
}

/// An event of a scenario file, applied when slot `at_slot` opens.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct TimedEvent {
    pub at_slot: u64,
    pub event: ScenarioEvent,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScenarioFile {
    events: Vec<RawTimedEvent>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTimedEvent {
    at_slot: u64,
    scale: Option<ScaleGroup>,
    tariff: Option<TariffOverride>,
    feeder: Option<FeederLimit>,
    offline: Option<TakeOffline>,
}

/// Parses and validates a whole scenario; `next_slot` is the first slot an
/// event may still target. Nothing is applied here: on any error the caller
/// changes nothing.
pub(crate) fn parse_scenario(json: &str, next_slot: u64) -> Result<Vec<TimedEvent>, MarketError> {
    if json.len() > MAX_SCENARIO_BYTES {
        return Err(MarketError::exhausted(
            "scenario_json",
            format!("{} bytes exceed the limit of {MAX_SCENARIO_BYTES}", json.len()),
        ));
    }
    let file: ScenarioFile = serde_json::from_str(json)
        .map_err(|e| MarketError::invalid("scenario_json", e.to_string()))?;
    if file.events.len() > MAX_SCENARIO_EVENTS {
        return Err(MarketError::invalid(
            "scenario_json.events",
            format!("at most {MAX_SCENARIO_EVENTS} events"),
        ));
    }
    let mut events = Vec::with_capacity(file.events.len());
    for (i, raw) in file.events.into_iter().enumerate() {
        let path = format!("events[{i}]");
        if raw.at_slot < next_slot {
            return Err(MarketError::invalid(
                format!("{path}.at_slot"),
                format!("must be ≥ the next slot {next_slot}, got {}", raw.at_slot),
            ));
        }
        let mut set = Vec::new();
        if let Some(s) = raw.scale {
            set.push(("scale", ScenarioEvent::Scale(s)));
        }
        if let Some(t) = raw.tariff {
            set.push(("tariff", ScenarioEvent::Tariff(t)));
        }
        if let Some(f) = raw.feeder {
            set.push(("feeder", ScenarioEvent::Feeder(f)));
        }
        if let Some(o) = raw.offline {
            set.push(("offline", ScenarioEvent::Offline(o)));
        }
        let [(name, event)] = set[..] else {
            return Err(MarketError::invalid(
                path,
                "needs exactly one of scale, tariff, feeder, offline",
            ));
        };
        event.validate(&format!("{path}.{name}"))?;
        events.push(TimedEvent { at_slot: raw.at_slot, event });
    }
    events.sort_by_key(|e| e.at_slot);
    Ok(events)
}

/// A timed effect in force: an adjustment (scale or offline) or a tariff.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Effect {
    Adjust(Adjustment),
    Tariff { retail_per_kwh: f64, feed_in_per_kwh: f64 },
}

/// The effects in force and how many more slots each lasts.
#[derive(Clone, Debug, Default)]
pub(crate) struct Effects {
    active: Vec<(Effect, u32)>,
}

impl Effects {
    /// Starts a timed effect (feeder changes are not timed: the state applies them).
    pub(crate) fn start(&mut self, event: &ScenarioEvent) {
        let effect = match *event {
            ScenarioEvent::Scale(s) => (
                Effect::Adjust(Adjustment {
                    first_id: s.first_prosumer_id,
                    last_id: s.last_prosumer_id,
                    conditions: Conditions { load_scale: s.load_scale, pv_scale: s.pv_scale },
                    offline: false,
                }),
                s.slots,
            ),
            ScenarioEvent::Offline(o) => (
                Effect::Adjust(Adjustment {
                    first_id: o.first_prosumer_id,
                    last_id: o.last_prosumer_id,
                    conditions: Conditions::default(),
                    offline: true,
                }),
                o.slots,
            ),
            ScenarioEvent::Tariff(t) => (
                Effect::Tariff {
                    retail_per_kwh: t.retail_per_kwh,
                    feed_in_per_kwh: t.feed_in_per_kwh,
                },
                t.slots,
            ),
            ScenarioEvent::Feeder(_) => return,
        };
        self.active.push(effect);
    }

    /// Effects in force.
    pub(crate) fn len(&self) -> usize {
        self.active.len()
    }

    /// The adjustments of the slot being opened, in the order they started.
    pub(crate) fn adjustments(&self) -> Vec<Adjustment> {
        self.active
            .iter()
            .filter_map(|(e, _)| match e {
                Effect::Adjust(a) => Some(*a),
                Effect::Tariff { .. } => None,
            })
            .collect()
    }

    /// The latest tariff override in force: (retail, feed-in) per kWh.
    pub(crate) fn tariff(&self) -> Option<(f64, f64)> {
        self.active.iter().rev().find_map(|(e, _)| match e {
            Effect::Tariff { retail_per_kwh, feed_in_per_kwh } => {
                Some((*retail_per_kwh, *feed_in_per_kwh))
            }
            Effect::Adjust(_) => None,
        })
    }

    /// One slot has used the effects: count them down, drop the expired ones.
    pub(crate) fn consume_slot(&mut self) {
        for (_, left) in self.active.iter_mut() {
            *left -= 1;
        }
        self.active.retain(|(_, left)| *left > 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scenario_parses_sorted_and_bad_ones_name_the_field() {
        let json = r#"{"events": [
            {"at_slot": 9, "tariff": {"retail_per_kwh": 0.5, "feed_in_per_kwh": 0.1, "slots": 2}},
            {"at_slot": 3, "scale": {"first_prosumer_id": 0, "last_prosumer_id": 4, "pv_scale": 0.2, "slots": 5}}
        ]}"#;
        let events = parse_scenario(json, 2).unwrap();
        assert_eq!(events.iter().map(|e| e.at_slot).collect::<Vec<_>>(), [3, 9]);
        let cases = [
            (r#"{"events": [{"at_slot": 1, "feeder": {}}]}"#, "events[0].at_slot"),
            (r#"{"events": [{"at_slot": 5}]}"#, "events[0]"),
            (
                r#"{"events": [{"at_slot": 5, "feeder": {}}, {"at_slot": 5, "scale": {"first_prosumer_id": 3, "last_prosumer_id": 1, "slots": 1}}]}"#,
                "events[1].scale.last_prosumer_id",
            ),
            (
                r#"{"events": [{"at_slot": 5, "tariff": {"retail_per_kwh": 0.2, "feed_in_per_kwh": 0.3, "slots": 1}}]}"#,
                "events[0].tariff.feed_in_per_kwh",
            ),
            (
                r#"{"events": [{"at_slot": 5, "offline": {"first_prosumer_id": 0, "last_prosumer_id": 1, "slots": 0}}]}"#,
                "slots",
            ),
            (r#"{"events": [{"at_slot": 5, "bogus": 1}]}"#, "scenario_json"),
        ];
        for (json, field) in cases {
            let e = parse_scenario(json, 2).unwrap_err().to_string();
            assert!(e.contains(field), "{field}: {e}");
        }
    }

    #[test]
    fn effects_last_their_slots() {
        let mut fx = Effects::default();
        let scale = ScaleGroup {
            first_prosumer_id: 0,
            last_prosumer_id: 3,
            pv_scale: 0.5,
            load_scale: 1.0,
            slots: 2,
        };
        fx.start(&ScenarioEvent::Scale(scale));
        fx.start(&ScenarioEvent::Tariff(TariffOverride {
            retail_per_kwh: 0.4,
            feed_in_per_kwh: 0.1,
            slots: 1,
        }));
        assert_eq!(fx.adjustments().len(), 1);
        assert_eq!(fx.tariff(), Some((0.4, 0.1)));
        fx.consume_slot();
        assert_eq!((fx.adjustments().len(), fx.tariff()), (1, None));
        fx.consume_slot();
        assert!(fx.adjustments().is_empty());
    }
}
