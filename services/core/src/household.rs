//! One household's slot, start to finish: EV comings and goings, what it
//! observes, and applying its decision to the battery.
//!
//! This is the per-prosumer logic shared by the reference simulator and the
//! agent-node actors, so both produce the same numbers. A household owns its
//! battery state; it never sees other households or the market book.

use crate::battery::{BatteryState, BatteryStep};
use crate::data::Dataset;
use crate::forecast::OwnForecaster;
use crate::observation::{Observation, SlotContext};
use crate::policy::Policy;
use crate::prosumer::ProsumerSpec;
use crate::safety::{filter_action, Decision, OrderIntent};
use crate::units::ProsumerId;

/// Temporary conditions a scenario imposes on a household (a heat wave
/// scales load, a cloudy week scales PV).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Conditions {
    /// Factor on the household's load.
    pub load_scale: f64,
    /// Factor on the household's PV output.
    pub pv_scale: f64,
}

impl Default for Conditions {
    fn default() -> Self {
        Conditions { load_scale: 1.0, pv_scale: 1.0 }
    }
}

/// A scenario's temporary change to an inclusive id range of prosumers.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Adjustment {
    /// First prosumer id affected.
    pub first_id: ProsumerId,
    /// Last prosumer id affected (inclusive).
    pub last_id: ProsumerId,
    /// The load and PV factors it applies.
    pub conditions: Conditions,
    /// Offline prosumers place no order and settle with the grid.
    pub offline: bool,
}

/// The largest combined load or PV multiplier: overlapping adjustments
/// compose, and thousands of them could otherwise reach ∞ (and 0 × ∞ = NaN).
pub const MAX_COMBINED_SCALE: f64 = 100.0;

/// The conditions of prosumer `id` under `adjustments` (later ones compose
/// multiplicatively, capped at [`MAX_COMBINED_SCALE`]) and whether it is offline.
pub fn conditions_for(id: ProsumerId, adjustments: &[Adjustment]) -> (Conditions, bool) {
    let mut c = Conditions::default();
    let mut offline = false;
    for a in adjustments.iter().filter(|a| (a.first_id..=a.last_id).contains(&id)) {
        c.load_scale = (c.load_scale * a.conditions.load_scale).min(MAX_COMBINED_SCALE);
        c.pv_scale = (c.pv_scale * a.conditions.pv_scale).min(MAX_COMBINED_SCALE);
        offline |= a.offline;
    }
    (c, offline)
}

/// What a household did in a slot: its physics (decided before clearing,
/// because the battery set-point does not depend on the market outcome) and
/// the order it places. This is what an agent-node sends for each prosumer.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct HouseholdReport {
    /// Whose slot this is.
    pub prosumer_id: ProsumerId,
    /// Consumption, kWh.
    pub load_kwh: f64,
    /// PV generation, kWh.
    pub pv_kwh: f64,
    /// Position after the battery, kWh (positive = deficit).
    pub net_kwh: f64,
    /// What the battery did.
    pub battery: BatteryStep,
    /// Battery degradation cost of the slot.
    pub degradation_cost: f64,
    /// EV energy missing at a departure or for a trip this slot, kWh.
    pub ev_shortfall_kwh: f64,
    /// Energy stored at the end of the slot, kWh.
    pub stored_kwh: f64,
    /// The order the household places, if any.
    pub order: Option<OrderIntent>,
}

/// A household during a run: its spec and its battery's state.
#[derive(Clone, Debug, PartialEq)]
pub struct Household {
    /// What the household owns and where its series come from.
    pub spec: ProsumerSpec,
    /// Its battery's state (the EV's for an EV owner).
    pub battery: Option<BatteryState>,
    /// Whether the EV was plugged in during the previous slot.
    plugged_in: bool,
}

/// What happened to an EV between slots.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct EvEvents {
    /// Energy that was missing at departure, plus trip energy the battery could not supply, kWh.
    pub shortfall_kwh: f64,
    /// Energy taken out of the battery by driving, kWh.
    pub trip_kwh: f64,
}

/// What a household carries from one slot to the next (its spec aside):
/// enough to continue it after its host process restarted.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct HouseholdState {
    /// The battery's state.
    pub battery: Option<BatteryState>,
    /// Whether the EV was plugged in during the last slot.
    pub plugged_in: bool,
}

impl Household {
    /// The state to persist; [`Household::restore`] continues from it.
    pub fn state(&self) -> HouseholdState {
        HouseholdState { battery: self.battery, plugged_in: self.plugged_in }
    }

    /// The household of `spec` continued from `state`. The state must fit
    /// the spec: a battery exactly when the spec has one, its stored energy
    /// finite and within the battery's SoC bounds.
    pub fn restore(spec: ProsumerSpec, state: HouseholdState) -> Result<Household, String> {
        match (spec.battery, state.battery) {
            (None, None) => {}
            (Some(b), Some(s)) => {
                let (lo, hi) = (b.min_stored_kwh(), b.max_stored_kwh());
                if !(s.stored_kwh.is_finite()
                    && s.stored_kwh >= lo - 1e-9
                    && s.stored_kwh <= hi + 1e-9)
                {
                    return Err(format!(
                        "battery.stored_kwh must lie in [{lo}, {hi}], got {}",
                        s.stored_kwh
                    ));
                }
            }
            (Some(_), None) => {
                return Err("battery: the prosumer has a battery, the state has none".into())
            }
            (None, Some(_)) => {
                return Err("battery: the prosumer has no battery, the state has one".into())
            }
        }
        Ok(Household { spec, battery: state.battery, plugged_in: state.plugged_in })
    }

    /// A household at the start of a run, its EV plugged in or not according
    /// to the first slot's hour.
    pub fn new(spec: ProsumerSpec, first_hour: u8) -> Household {
        let battery = spec.battery.map(|b| BatteryState {
            stored_kwh: (spec.initial_soc * b.capacity_kwh)
                .clamp(b.min_stored_kwh(), b.max_stored_kwh()),
        });
        let plugged_in = spec.ev.is_none_or(|ev| ev.plugged_in(first_hour));
        Household { spec, battery, plugged_in }
    }

    /// Whether the battery can be used this slot (an EV's only while plugged in).
    pub fn battery_available(&self) -> bool {
        self.battery.is_some() && self.plugged_in
    }

    /// Advances EV state to the slot starting at `ctx.hour`: on departure,
    /// records any shortfall against the required SoC; on arrival, removes the
    /// trip energy (never below the SoC floor; what is missing counts as shortfall).
    pub fn begin_slot(&mut self, ctx: &SlotContext) -> EvEvents {
        let (Some(ev), Some(spec), Some(state)) =
            (self.spec.ev, self.spec.battery, self.battery.as_mut())
        else {
            return EvEvents::default();
        };
        let now = ev.plugged_in(ctx.hour);
        let mut events = EvEvents::default();
        if self.plugged_in && !now {
            events.shortfall_kwh =
                (ev.departure_soc * spec.capacity_kwh - state.stored_kwh).max(0.0);
        } else if !self.plugged_in && now {
            let available = state.stored_kwh - spec.min_stored_kwh();
            events.trip_kwh = ev.trip_kwh.min(available.max(0.0));
            events.shortfall_kwh = ev.trip_kwh - events.trip_kwh;
            state.stored_kwh -= events.trip_kwh;
        }
        self.plugged_in = now;
        events
    }

    /// The feasible set-point range this slot, with an EV's departure
    /// requirement turned into a minimum charge when later slots could no
    /// longer make it up.
    fn setpoint_range_kw(&self, ctx: &SlotContext) -> (f64, f64) {
        let (Some(spec), Some(state)) = (self.spec.battery, self.battery) else {
            return (0.0, 0.0);
        };
        let (lo, hi) =
            spec.setpoint_range_kw(state.stored_kwh, ctx.hours, self.battery_available());
        let Some(ev) = self.spec.ev.filter(|_| self.battery_available()) else {
            return (lo, hi);
        };
        let hours_left = (ev.depart_hour as f64 - ctx.day_fraction * 24.0).rem_euclid(24.0);
        let slots_left = (hours_left / ctx.hours - 1e-9).ceil().max(1.0);
        let per_slot_kwh = spec.max_charge_kw * ctx.hours * spec.one_way_efficiency();
        let needed = ev.departure_soc.min(spec.soc_max) * spec.capacity_kwh - state.stored_kwh;
        let must_now = needed - (slots_left - 1.0) * per_slot_kwh;
        if must_now > 0.0 {
            let min_kw = (must_now / spec.one_way_efficiency() / ctx.hours).min(hi);
            (min_kw.max(lo), hi)
        } else {
            (lo, hi)
        }
    }

    /// Observes the slot under default conditions.
    pub fn observe(&self, ds: &Dataset, ctx: &SlotContext) -> Observation {
        self.observe_under(ds, ctx, Conditions::default())
    }

    /// Observes the slot with load and PV scaled by `cond`. The forecasts
    /// read the scaled series up to this slot only ([`OwnForecaster`]).
    pub fn observe_under(&self, ds: &Dataset, ctx: &SlotContext, cond: Conditions) -> Observation {
        let trace = &self.spec.trace;
        let t = ctx.data_slot;
        let load = |t| trace.load_kwh(ds, t) * cond.load_scale;
        let pv = |t| trace.pv_kwh(ds, t) * cond.pv_scale;
        let (soc, capacity) = match (self.spec.battery, self.battery) {
            (Some(spec), Some(state)) => (state.soc(&spec), spec.capacity_kwh),
            _ => (0.0, 0.0),
        };
        let (setpoint_min_kw, setpoint_max_kw) = self.setpoint_range_kw(ctx);
        Observation {
            load_kwh: load(t),
            pv_kwh: pv(t),
            soc,
            battery_capacity_kwh: capacity,
            battery_available: self.battery_available(),
            setpoint_min_kw,
            setpoint_max_kw,
            forecast: OwnForecaster::of(ds).forecast(load, pv, t),
            ctx: *ctx,
        }
    }

    /// Applies the decided set-point to the battery. The decision came from
    /// the safety filter on this slot's observation, so it is feasible and the
    /// step draws exactly `setpoint_kw · hours` from the bus.
    pub fn apply(&mut self, decision: &Decision, ctx: &SlotContext) -> BatteryStep {
        let available = self.battery_available();
        match (self.spec.battery, self.battery.as_mut()) {
            (Some(spec), Some(state)) => state
                .apply_setpoint(&spec, decision.setpoint_kw, ctx.hours, available)
                .unwrap_or_default(),
            _ => BatteryStep::default(),
        }
    }
}

/// A slot begun but not yet acted on: the EV events have happened and the
/// observation is fixed. [`Household::prepare`] makes it and
/// [`Household::act`] finishes it; a learning agent-node uses the pause in
/// between to value the observation and wait for a new policy version.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Prepared {
    /// The EV events of the slot.
    pub ev: EvEvents,
    /// The observation the household acts on.
    pub obs: Observation,
}

impl Household {
    /// Plays the household's part of a slot: EV events, observe, act, safety
    /// filter, battery. The same call serves the reference simulator and the
    /// agent-node actors, which is what makes their results identical.
    pub fn play(
        &mut self,
        ds: &Dataset,
        ctx: &SlotContext,
        cond: Conditions,
        policy: &mut dyn Policy,
    ) -> HouseholdReport {
        let prepared = self.prepare(ds, ctx, cond);
        self.act(&prepared, ctx, policy)
    }

    /// The first half of [`play`](Self::play): EV events, then the observation.
    pub fn prepare(&mut self, ds: &Dataset, ctx: &SlotContext, cond: Conditions) -> Prepared {
        let ev = self.begin_slot(ctx);
        Prepared { ev, obs: self.observe_under(ds, ctx, cond) }
    }

    /// The second half of [`play`](Self::play): act on the prepared
    /// observation, safety filter, battery.
    pub fn act(
        &mut self,
        prepared: &Prepared,
        ctx: &SlotContext,
        policy: &mut dyn Policy,
    ) -> HouseholdReport {
        let Prepared { ev, obs } = *prepared;
        let decision = filter_action(&obs, policy.act(self.spec.id, &obs));
        let battery = self.apply(&decision, ctx);
        HouseholdReport {
            prosumer_id: self.spec.id,
            load_kwh: obs.load_kwh,
            pv_kwh: obs.pv_kwh,
            net_kwh: decision.net_kwh,
            battery,
            degradation_cost: self
                .spec
                .battery
                .map_or(0.0, |b| b.degradation_cost_per_kwh * battery.throughput_kwh()),
            ev_shortfall_kwh: ev.shortfall_kwh,
            stored_kwh: self.battery.map_or(0.0, |b| b.stored_kwh),
            order: decision.order,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::synthetic::synthetic_dataset;
    use crate::prosumer::{generate_community, CommunityConfig};

    #[test]
    fn rewriting_the_data_after_a_slot_never_changes_its_observation() {
        let ds = synthetic_dataset(4, 10, 60, 3);
        let mut specs = generate_community(
            &ds,
            &CommunityConfig { n_prosumers: 8, ..CommunityConfig::default() },
        )
        .unwrap();
        // Unshifted traces: the trace's slot s is the dataset's index s.
        specs.iter_mut().for_each(|s| s.trace.shift_slots = 0);
        let cond = Conditions { load_scale: 1.5, pv_scale: 0.5 };
        let cfg = crate::simulation::SimConfig::default();
        for t in [0, 5, 30, 24 * 7 + 13, ds.n_slots() - 2] {
            let ctx = crate::simulation::slot_context(&ds, &cfg, t, None);
            let mut future = ds.clone();
            for home in &mut future.homes {
                home.load_kwh[t + 1..].iter_mut().for_each(|v| *v = *v * 3.0 + 1.0);
                home.pv_kwh_per_kwp[t + 1..].iter_mut().for_each(|v| *v = 1.0 - *v);
            }
            for spec in &specs {
                let h = Household::new(spec.clone(), ctx.hour);
                let seen = h.observe_under(&ds, &ctx, cond);
                assert_eq!(seen, h.observe_under(&future, &ctx, cond), "slot {t}, {}", spec.id);
                assert!(seen.forecast.mean_load_near_kwh > 0.0, "{seen:?}");
                let next = |ds| spec.trace.load_kwh(ds, t + 1) * cond.load_scale;
                assert_ne!(next(&ds), next(&future), "the future did change");
            }
        }
        // The scenario's factors scale what the forecaster reads.
        let ctx = crate::simulation::slot_context(&ds, &cfg, 100, None);
        let h = Household::new(specs[0].clone(), ctx.hour);
        let plain = h.observe(&ds, &ctx).forecast;
        let scaled = h.observe_under(&ds, &ctx, cond).forecast;
        assert!((scaled.mean_load_near_kwh - 1.5 * plain.mean_load_near_kwh).abs() < 1e-9);
        assert!((scaled.mean_pv_near_kwh - 0.5 * plain.mean_pv_near_kwh).abs() < 1e-9);
    }

    #[test]
    fn a_household_continues_from_its_state_and_a_state_that_does_not_fit_is_refused() {
        let ds = synthetic_dataset(4, 2, 60, 3);
        let specs = generate_community(
            &ds,
            &CommunityConfig { n_prosumers: 12, ..CommunityConfig::default() },
        )
        .unwrap();
        let with = specs.iter().find(|s| s.battery.is_some()).unwrap().clone();
        let without = specs.iter().find(|s| s.battery.is_none()).unwrap().clone();

        let mut h = Household::new(with.clone(), 0);
        h.battery.as_mut().unwrap().stored_kwh = with.battery.unwrap().min_stored_kwh();
        let state = h.state();
        let json = serde_json::to_string(&state).unwrap();
        let back = Household::restore(with.clone(), serde_json::from_str(&json).unwrap()).unwrap();
        assert_eq!(back, h, "the state round-trips through JSON");

        let e = Household::restore(without.clone(), state).unwrap_err();
        assert!(e.contains("no battery"), "{e}");
        let e = Household::restore(with.clone(), Household::new(without, 0).state()).unwrap_err();
        assert!(e.contains("has none"), "{e}");
        for bad in [f64::NAN, -1.0, with.battery.unwrap().capacity_kwh * 2.0] {
            let s = HouseholdState {
                battery: Some(BatteryState { stored_kwh: bad }),
                plugged_in: true,
            };
            let e = Household::restore(with.clone(), s).unwrap_err();
            assert!(e.contains("battery.stored_kwh"), "{bad}: {e}");
        }
    }
}
