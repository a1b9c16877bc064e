//! What a household's equipment makes possible in one slot.
//!
//! A market-node never sees a household's meters: it sees the report an
//! agent-node sends. What it does know is the equipment each prosumer
//! declared when its node joined (an [`Envelope`]: PV capacity, battery
//! rating, EV plug-in window) and the slot it opened (hour, length, scenario
//! multipliers). [`Envelope::check`] refuses every report that this
//! equipment could not have produced: more PV than the panels yield in the
//! dataset's sunniest slot, more load than a household connection carries,
//! storage without a battery, a battery beyond its power rating or SoC
//! window, an EV charging while it is away, losses or degradation that do
//! not follow from the declared efficiency and cost. What it cannot know —
//! the household's actual load and PV within those bounds, and that the
//! stored energy continues the previous slot's — it trusts (see
//! ARCHITECTURE.md, "What the market trusts and what it verifies").

use crate::battery::BatterySpec;
use crate::error::CoreError;
use crate::household::{Conditions, HouseholdReport};
use crate::prosumer::{EvSpec, ProsumerKind, ProsumerSpec};

/// The largest PV array and battery a prosumer may declare (kWp, kWh, kW):
/// far above any household, low enough that a report bounded by them cannot
/// dominate a community.
pub const MAX_EQUIPMENT: f64 = 1000.0;

/// Relative slack for floating-point rounding between the agent's
/// arithmetic and the market's.
const REL_TOL: f64 = 1e-6;
/// Absolute slack, kWh or currency.
const ABS_TOL: f64 = 1e-9;

/// An EV's plug-in window as the market needs it: when the battery is
/// usable and how much a trip can take out.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EvWindow {
    /// Hour of day (0..=23) the EV is plugged in again.
    pub arrive_hour: u8,
    /// Hour of day (0..=23) the EV leaves.
    pub depart_hour: u8,
    /// Energy a trip takes out of the battery, kWh.
    pub trip_kwh: f64,
}

impl EvWindow {
    /// Whether the EV is plugged in during the slot starting at `hour`.
    pub fn plugged_in(&self, hour: u8) -> bool {
        EvSpec {
            arrive_hour: self.arrive_hour,
            depart_hour: self.depart_hour,
            trip_kwh: self.trip_kwh,
            departure_soc: 0.0,
        }
        .plugged_in(hour)
    }
}

/// The equipment one prosumer declared: everything the market checks its
/// reports against.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Envelope {
    /// What the prosumer owns; decides which equipment it must declare.
    pub kind: ProsumerKind,
    /// Installed PV, kWp (0 = none).
    pub pv_kwp: f64,
    /// Home battery, or the EV's battery.
    pub battery: Option<BatterySpec>,
    /// The EV's window (EV prosumers only).
    pub ev: Option<EvWindow>,
}

/// What the market knows about the open slot and the community that bounds
/// every household's report.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SlotLimits {
    /// Slot length, hours.
    pub hours: f64,
    /// Hour of day at the start of the slot.
    pub hour: u8,
    /// PV yield of the dataset's sunniest slot, kWh per kWp installed.
    pub pv_peak_kwh_per_kwp: f64,
    /// Largest average power one household may draw, kW.
    pub max_household_kw: f64,
}

impl Envelope {
    /// The envelope of a generated household.
    pub fn of(spec: &ProsumerSpec) -> Envelope {
        Envelope {
            kind: spec.kind,
            pv_kwp: spec.trace.pv_kwp as f64,
            battery: spec.battery,
            ev: spec.ev.map(|e| EvWindow {
                arrive_hour: e.arrive_hour,
                depart_hour: e.depart_hour,
                trip_kwh: e.trip_kwh,
            }),
        }
    }

    /// Checks the declaration itself: finite, within [`MAX_EQUIPMENT`], and
    /// consistent with the kind (a battery exactly for `pv-battery` and
    /// `ev`, an EV window exactly for `ev`, no PV for a consumer).
    pub fn validate(&self, field: &str) -> Result<(), CoreError> {
        if !(self.pv_kwp.is_finite() && (0.0..=MAX_EQUIPMENT).contains(&self.pv_kwp)) {
            return Err(CoreError::invalid(
                format!("{field}.pv_kwp"),
                format!("must lie in [0, {MAX_EQUIPMENT}], got {}", self.pv_kwp),
            ));
        }
        let kind = self.kind.name();
        let (wants_battery, wants_ev) = match self.kind {
            ProsumerKind::PvBattery => (true, false),
            ProsumerKind::PvOnly => (false, false),
            ProsumerKind::Consumer => (false, false),
            ProsumerKind::Ev => (true, true),
        };
        if self.kind == ProsumerKind::Consumer && self.pv_kwp != 0.0 {
            return Err(CoreError::invalid(
                format!("{field}.pv_kwp"),
                format!("a consumer has no PV: must be 0, got {}", self.pv_kwp),
            ));
        }
        match (wants_battery, &self.battery) {
            (true, None) => {
                return Err(CoreError::invalid(
                    format!("{field}.battery"),
                    format!("required for kind {kind}"),
                ))
            }
            (false, Some(_)) => {
                return Err(CoreError::invalid(
                    format!("{field}.battery"),
                    format!("kind {kind} has no battery: leave it unset"),
                ))
            }
            (true, Some(b)) => {
                let battery_field = format!("{field}.battery");
                b.validate(&battery_field)?;
                for (name, v) in [
                    ("capacity_kwh", b.capacity_kwh),
                    ("max_charge_kw", b.max_charge_kw),
                    ("max_discharge_kw", b.max_discharge_kw),
                ] {
                    if !(v > 0.0 && v <= MAX_EQUIPMENT) {
                        return Err(CoreError::invalid(
                            format!("{battery_field}.{name}"),
                            format!("must lie in (0, {MAX_EQUIPMENT}], got {v}"),
                        ));
                    }
                }
            }
            (false, None) => {}
        }
        match (wants_ev, &self.ev) {
            (true, None) => {
                return Err(CoreError::invalid(
                    format!("{field}.ev"),
                    format!("required for kind {kind}"),
                ))
            }
            (false, Some(_)) => {
                return Err(CoreError::invalid(
                    format!("{field}.ev"),
                    format!("kind {kind} has no EV: leave it unset"),
                ))
            }
            (true, Some(ev)) => {
                let spec = EvSpec {
                    arrive_hour: ev.arrive_hour,
                    depart_hour: ev.depart_hour,
                    trip_kwh: ev.trip_kwh,
                    departure_soc: 0.0,
                };
                spec.validate(&format!("{field}.ev"))?;
                if ev.trip_kwh > MAX_EQUIPMENT {
                    return Err(CoreError::invalid(
                        format!("{field}.ev.trip_kwh"),
                        format!("must lie in [0, {MAX_EQUIPMENT}], got {}", ev.trip_kwh),
                    ));
                }
            }
            (false, None) => {}
        }
        Ok(())
    }

    /// Checks one report of this prosumer for a slot with `limits`, under
    /// the scenario `conditions` the market sent for it. `field` builds the
    /// report's path (only on error). The report is already wire-valid:
    /// finite, non-negative where it must be, `net_kwh` consistent.
    pub fn check(
        &self,
        r: &HouseholdReport,
        limits: &SlotLimits,
        conditions: Conditions,
        field: &dyn Fn() -> String,
    ) -> Result<(), CoreError> {
        let refuse = |name: &str, reason: String| {
            Err(CoreError::invalid(format!("{}.{name}", field()), reason))
        };
        let at_most = |v: f64, bound: f64| v <= bound * (1.0 + REL_TOL) + ABS_TOL;
        let close =
            |v: f64, want: f64| (v - want).abs() <= REL_TOL * want.abs().max(v.abs()) + ABS_TOL;

        let pv_max = self.pv_kwp * limits.pv_peak_kwh_per_kwp * conditions.pv_scale;
        if !at_most(r.pv_kwh, pv_max) {
            return refuse(
                "pv_kwh",
                format!(
                    "{} kWp yield at most {pv_max:.6} kWh in a slot ({} kWh/kWp at the dataset's peak × pv scale {}), got {}",
                    self.pv_kwp, limits.pv_peak_kwh_per_kwp, conditions.pv_scale, r.pv_kwh
                ),
            );
        }
        let load_max = limits.max_household_kw * limits.hours * conditions.load_scale;
        if !at_most(r.load_kwh, load_max) {
            return refuse(
                "load_kwh",
                format!(
                    "a household draws at most {} kW × {} h × load scale {} = {load_max:.6} kWh, got {}",
                    limits.max_household_kw, limits.hours, conditions.load_scale, r.load_kwh
                ),
            );
        }
        let b = &r.battery;
        let Some(spec) = self.battery else {
            for (name, v) in [
                ("battery_charged_kwh", b.charged_kwh),
                ("battery_discharged_kwh", b.discharged_kwh),
                ("battery_losses_kwh", b.losses_kwh),
                ("stored_kwh", r.stored_kwh),
                ("degradation_cost", r.degradation_cost),
                ("ev_shortfall_kwh", r.ev_shortfall_kwh),
            ] {
                if v != 0.0 {
                    return refuse(
                        name,
                        format!(
                            "must be 0: prosumer kind {} has no battery, got {v}",
                            self.kind.name()
                        ),
                    );
                }
            }
            return Ok(());
        };
        let plugged_in = self.ev.is_none_or(|ev| ev.plugged_in(limits.hour));
        if !plugged_in {
            for (name, v) in [
                ("battery_charged_kwh", b.charged_kwh),
                ("battery_discharged_kwh", b.discharged_kwh),
            ] {
                if v != 0.0 {
                    return refuse(
                        name,
                        format!("must be 0: the EV is away at hour {}, got {v}", limits.hour),
                    );
                }
            }
        }
        if b.charged_kwh > 0.0 && b.discharged_kwh > 0.0 {
            return refuse(
                "battery_discharged_kwh",
                format!(
                    "a battery charges or discharges in a slot, not both (charged {})",
                    b.charged_kwh
                ),
            );
        }
        for (name, v, kw) in [
            ("battery_charged_kwh", b.charged_kwh, spec.max_charge_kw),
            ("battery_discharged_kwh", b.discharged_kwh, spec.max_discharge_kw),
        ] {
            let max = kw * limits.hours;
            if !at_most(v, max) {
                return refuse(
                    name,
                    format!("at most {kw} kW × {} h = {max} kWh, got {v}", limits.hours),
                );
            }
        }
        let e = spec.one_way_efficiency();
        let losses = if b.charged_kwh > 0.0 {
            b.charged_kwh - b.charged_kwh * e
        } else {
            b.discharged_kwh / e - b.discharged_kwh
        };
        if !close(b.losses_kwh, losses) {
            return refuse(
                "battery_losses_kwh",
                format!(
                    "must be what round-trip efficiency {} implies, {losses}, got {}",
                    spec.round_trip_efficiency, b.losses_kwh
                ),
            );
        }
        let degradation = spec.degradation_cost_per_kwh * b.throughput_kwh();
        if !close(r.degradation_cost, degradation) {
            return refuse(
                "degradation_cost",
                format!(
                    "must be {} per kWh of throughput = {degradation}, got {}",
                    spec.degradation_cost_per_kwh, r.degradation_cost
                ),
            );
        }
        let (lo, hi) = (spec.min_stored_kwh(), spec.max_stored_kwh());
        if !(r.stored_kwh >= lo * (1.0 - REL_TOL) - ABS_TOL && at_most(r.stored_kwh, hi)) {
            return refuse(
                "stored_kwh",
                format!(
                    "must lie in the battery's SoC window [{lo}, {hi}] kWh, got {}",
                    r.stored_kwh
                ),
            );
        }
        let shortfall_max = match self.ev {
            Some(ev) => spec.capacity_kwh.max(ev.trip_kwh),
            None => 0.0,
        };
        if !at_most(r.ev_shortfall_kwh, shortfall_max) {
            return refuse(
                "ev_shortfall_kwh",
                format!("at most {shortfall_max} kWh (the EV's capacity or trip; 0 without an EV), got {}", r.ev_shortfall_kwh),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::battery::BatteryStep;
    use crate::data::synthetic::synthetic_dataset;
    use crate::household::Household;
    use crate::observation::SlotContext;
    use crate::policy::baselines::RuleBased;
    use crate::prosumer::{generate_range, CommunityConfig};
    use crate::simulation::{slot_context, SimConfig};
    use proptest::prelude::*;

    fn limits() -> SlotLimits {
        SlotLimits { hours: 1.0, hour: 12, pv_peak_kwh_per_kwp: 0.9, max_household_kw: 50.0 }
    }

    fn pv_battery() -> Envelope {
        Envelope {
            kind: ProsumerKind::PvBattery,
            pv_kwp: 5.0,
            battery: Some(BatterySpec::home(10.0)),
            ev: None,
        }
    }

    fn report() -> HouseholdReport {
        HouseholdReport {
            prosumer_id: 0,
            load_kwh: 1.0,
            pv_kwh: 3.0,
            net_kwh: 0.0,
            battery: BatteryStep::default(),
            degradation_cost: 0.0,
            ev_shortfall_kwh: 0.0,
            stored_kwh: 5.0,
            order: None,
        }
    }

    fn refused(env: &Envelope, r: &HouseholdReport, lim: &SlotLimits) -> String {
        match env.check(r, lim, Conditions::default(), &|| "reports[3]".into()) {
            Ok(()) => panic!("accepted {r:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn declarations_must_fit_their_kind() {
        let cases = [
            (Envelope { pv_kwp: 1e9, ..pv_battery() }, "p.pv_kwp"),
            (Envelope { pv_kwp: f64::NAN, ..pv_battery() }, "p.pv_kwp"),
            (Envelope { battery: None, ..pv_battery() }, "p.battery"),
            (Envelope { kind: ProsumerKind::PvOnly, ..pv_battery() }, "p.battery"),
            (Envelope { kind: ProsumerKind::Consumer, battery: None, ..pv_battery() }, "p.pv_kwp"),
            (
                Envelope {
                    battery: Some(BatterySpec { max_charge_kw: 5000.0, ..BatterySpec::home(10.0) }),
                    ..pv_battery()
                },
                "p.battery.max_charge_kw",
            ),
            (
                Envelope { battery: Some(BatterySpec::home(0.0)), ..pv_battery() },
                "p.battery.capacity_kwh",
            ),
            (Envelope { kind: ProsumerKind::Ev, ..pv_battery() }, "p.ev"),
            (
                Envelope {
                    kind: ProsumerKind::Ev,
                    ev: Some(EvWindow { arrive_hour: 30, depart_hour: 7, trip_kwh: 8.0 }),
                    ..pv_battery()
                },
                "p.ev.arrive_hour",
            ),
            (
                Envelope {
                    ev: Some(EvWindow { arrive_hour: 18, depart_hour: 7, trip_kwh: 8.0 }),
                    ..pv_battery()
                },
                "p.ev",
            ),
        ];
        for (env, field) in cases {
            match env.validate("p") {
                Err(CoreError::InvalidField { field: f, .. }) => assert_eq!(f, field, "{env:?}"),
                other => panic!("{env:?}: {other:?}"),
            }
        }
        pv_battery().validate("p").unwrap();
    }

    #[test]
    fn impossible_reports_are_refused_naming_the_field_and_bound() {
        let lim = limits();
        let consumer =
            Envelope { kind: ProsumerKind::Consumer, pv_kwp: 0.0, battery: None, ev: None };
        let e = refused(
            &consumer,
            &HouseholdReport { pv_kwh: 50.0, stored_kwh: 0.0, ..report() },
            &lim,
        );
        assert!(e.contains("reports[3].pv_kwh") && e.contains("0 kWp"), "{e}");
        let e = refused(&pv_battery(), &HouseholdReport { pv_kwh: 900.0, ..report() }, &lim);
        assert!(e.contains("reports[3].pv_kwh") && e.contains("4.5"), "{e}");
        let e = refused(&pv_battery(), &HouseholdReport { load_kwh: 60.0, ..report() }, &lim);
        assert!(e.contains("reports[3].load_kwh") && e.contains("50"), "{e}");
        let pv_only = Envelope { kind: ProsumerKind::PvOnly, battery: None, ..pv_battery() };
        let charged = BatteryStep { charged_kwh: 3.0, ..BatteryStep::default() };
        let e = refused(
            &pv_only,
            &HouseholdReport { battery: charged, stored_kwh: 0.0, ..report() },
            &lim,
        );
        assert!(e.contains("reports[3].battery_charged_kwh") && e.contains("no battery"), "{e}");
        let e = refused(&pv_only, &HouseholdReport { stored_kwh: 10.0, ..report() }, &lim);
        assert!(e.contains("reports[3].stored_kwh"), "{e}");
        let over = BatteryStep {
            charged_kwh: 6.0,
            losses_kwh: 6.0 * (1.0 - 0.9f64.sqrt()),
            ..BatteryStep::default()
        };
        let e = refused(&pv_battery(), &HouseholdReport { battery: over, ..report() }, &lim);
        assert!(e.contains("reports[3].battery_charged_kwh") && e.contains("5 kW"), "{e}");
        let lossless = BatteryStep { charged_kwh: 2.0, ..BatteryStep::default() };
        let e = refused(&pv_battery(), &HouseholdReport { battery: lossless, ..report() }, &lim);
        assert!(e.contains("reports[3].battery_losses_kwh"), "{e}");
        let e = refused(&pv_battery(), &HouseholdReport { stored_kwh: 9.9, ..report() }, &lim);
        assert!(e.contains("reports[3].stored_kwh") && e.contains("9.5"), "{e}");
        let both = BatteryStep { charged_kwh: 1.0, discharged_kwh: 1.0, ..BatteryStep::default() };
        let e = refused(&pv_battery(), &HouseholdReport { battery: both, ..report() }, &lim);
        assert!(e.contains("not both"), "{e}");
        let e =
            refused(&pv_battery(), &HouseholdReport { ev_shortfall_kwh: 1.0, ..report() }, &lim);
        assert!(e.contains("reports[3].ev_shortfall_kwh"), "{e}");
        let ev = Envelope {
            kind: ProsumerKind::Ev,
            ev: Some(EvWindow { arrive_hour: 18, depart_hour: 7, trip_kwh: 8.0 }),
            battery: Some(BatterySpec::home(40.0)),
            ..pv_battery()
        };
        let step = BatteryStep {
            charged_kwh: 1.0,
            losses_kwh: 1.0 - 0.9f64.sqrt(),
            ..BatteryStep::default()
        };
        let r =
            HouseholdReport { battery: step, degradation_cost: 0.01, stored_kwh: 20.0, ..report() };
        let e = refused(&ev, &r, &lim);
        assert!(e.contains("away at hour 12"), "{e}");
        ev.check(&r, &SlotLimits { hour: 20, ..lim }, Conditions::default(), &|| "r".into())
            .unwrap();
        let e = refused(
            &pv_battery(),
            &HouseholdReport { battery: step, degradation_cost: 0.5, ..report() },
            &lim,
        );
        assert!(e.contains("reports[3].degradation_cost"), "{e}");
    }

    #[test]
    fn scenario_multipliers_widen_the_bounds() {
        let r = HouseholdReport { load_kwh: 80.0, pv_kwh: 6.0, ..report() };
        let cond = Conditions { load_scale: 2.0, pv_scale: 1.5 };
        pv_battery().check(&r, &limits(), cond, &|| "r".into()).unwrap();
        assert!(pv_battery().check(&r, &limits(), Conditions::default(), &|| "r".into()).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
        /// Every generated household, played honestly from any slot of the
        /// dataset with any set-points and scenario multipliers, passes.
        #[test]
        fn honest_households_always_pass(
            seed in 0u64..1000,
            start in 0usize..10_000,
            slots in 1usize..60,
            actions in proptest::collection::vec(-1.0f64..=1.0, 60),
            load_scale in 0.0f64..3.0,
            pv_scale in 0.0f64..3.0,
        ) {
            let ds = synthetic_dataset(4, 7, 30, seed);
            let sim = SimConfig::default();
            let specs = generate_range(&ds, &CommunityConfig { seed, n_prosumers: 16, ..CommunityConfig::default() }, 0, 16).unwrap();
            let limits_for = |ctx: &SlotContext| SlotLimits {
                hours: ctx.hours,
                hour: ctx.hour,
                pv_peak_kwh_per_kwp: ds.pv_peak_kwh_per_kwp(),
                max_household_kw: 50.0,
            };
            let cond = Conditions { load_scale, pv_scale };
            for spec in specs {
                let env = Envelope::of(&spec);
                env.validate("p").unwrap();
                let first = slot_context(&ds, &sim, start % ds.n_slots(), None);
                let mut h = Household::new(spec, first.hour);
                for (k, a) in actions.iter().take(slots).enumerate() {
                    let ctx = slot_context(&ds, &sim, (start + k) % ds.n_slots(), None);
                    let mut policy = Scripted(*a, RuleBased);
                    let r = h.play(&ds, &ctx, cond, &mut policy);
                    let checked = env.check(&r, &limits_for(&ctx), cond, &|| format!("slot {k}"));
                    prop_assert!(checked.is_ok(), "{:?}: {:?} for {:?}", checked, r, env);
                }
            }
        }
    }

    /// A rule-based household whose battery set-point is overridden by a
    /// fixed fraction of its feasible range.
    struct Scripted(f64, RuleBased);

    impl crate::policy::Policy for Scripted {
        fn name(&self) -> &str {
            "scripted"
        }

        fn act(
            &mut self,
            id: crate::units::ProsumerId,
            obs: &crate::observation::Observation,
        ) -> crate::policy::Action {
            crate::policy::Action { battery: self.0 as f32, ..self.1.act(id, obs) }
        }
    }
}
