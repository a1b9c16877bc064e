//! Battery physics: SoC bounds, power limits, one-way efficiency √η, and
//! degradation cost per kWh of throughput.
//!
//! The sign convention everywhere: a positive set-point charges, a negative
//! one discharges. `charged_kwh` is energy drawn **from the household bus**,
//! `discharged_kwh` is energy delivered **to the bus**; the stored energy
//! changes by exactly `charged·√η − discharged/√η`, the difference being the
//! conversion losses. This module never lets SoC leave its bounds and rejects
//! non-finite input instead of propagating it.

use serde::{Deserialize, Serialize};

use crate::error::CoreError;

/// Static parameters of a battery (home battery or EV).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct BatterySpec {
    /// Usable capacity, kWh.
    pub capacity_kwh: f64,
    /// Largest charging power, kW (drawn from the bus).
    pub max_charge_kw: f64,
    /// Largest discharging power, kW (delivered to the bus).
    pub max_discharge_kw: f64,
    /// Round-trip efficiency η ∈ (0, 1]; each direction applies √η.
    pub round_trip_efficiency: f64,
    /// Lower SoC bound as a fraction of capacity.
    pub soc_min: f64,
    /// Upper SoC bound as a fraction of capacity.
    pub soc_max: f64,
    /// Cost per kWh of throughput (charged + discharged at the bus), currency/kWh.
    pub degradation_cost_per_kwh: f64,
}

impl BatterySpec {
    /// A typical home battery of `capacity_kwh` with a 0.5 C power rating.
    pub fn home(capacity_kwh: f64) -> BatterySpec {
        BatterySpec {
            capacity_kwh,
            max_charge_kw: capacity_kwh * 0.5,
            max_discharge_kw: capacity_kwh * 0.5,
            round_trip_efficiency: 0.9,
            soc_min: 0.1,
            soc_max: 0.95,
            degradation_cost_per_kwh: 0.01,
        }
    }

    /// Checks every parameter is finite and in range; errors name `field`.
    pub fn validate(&self, field: &str) -> Result<(), CoreError> {
        let check = |name: &str, v: f64, lo: f64, hi: f64| {
            if !v.is_finite() || v < lo || v > hi {
                Err(CoreError::invalid(
                    format!("{field}.{name}"),
                    format!("must lie in [{lo}, {hi}], got {v}"),
                ))
            } else {
                Ok(())
            }
        };
        check("capacity_kwh", self.capacity_kwh, 0.0, 1.0e6)?;
        check("max_charge_kw", self.max_charge_kw, 0.0, 1.0e6)?;
        check("max_discharge_kw", self.max_discharge_kw, 0.0, 1.0e6)?;
        check("round_trip_efficiency", self.round_trip_efficiency, 0.01, 1.0)?;
        check("soc_min", self.soc_min, 0.0, 1.0)?;
        check("soc_max", self.soc_max, self.soc_min, 1.0)?;
        check("degradation_cost_per_kwh", self.degradation_cost_per_kwh, 0.0, 100.0)
    }

    /// Efficiency of one direction: `√η`.
    #[inline]
    pub fn one_way_efficiency(&self) -> f64 {
        self.round_trip_efficiency.sqrt()
    }

    /// Least energy the battery may hold, kWh.
    pub fn min_stored_kwh(&self) -> f64 {
        self.soc_min * self.capacity_kwh
    }

    /// Most energy the battery may hold, kWh.
    pub fn max_stored_kwh(&self) -> f64 {
        self.soc_max * self.capacity_kwh
    }

    /// The feasible set-point range `[−discharge, +charge]` in kW for `hours`
    /// from `stored_kwh`, honouring power and SoC limits. Zero when unavailable.
    pub fn setpoint_range_kw(&self, stored_kwh: f64, hours: f64, available: bool) -> (f64, f64) {
        if !available || self.capacity_kwh <= 0.0 || hours <= 0.0 {
            return (0.0, 0.0);
        }
        let e = self.one_way_efficiency();
        let headroom = (self.max_stored_kwh() - stored_kwh).max(0.0);
        let reserve = (stored_kwh - self.min_stored_kwh()).max(0.0);
        let charge_kw = self.max_charge_kw.min(headroom / e / hours);
        let discharge_kw = self.max_discharge_kw.min(reserve * e / hours);
        (-discharge_kw, charge_kw)
    }
}

/// The mutable part of a battery.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct BatteryState {
    /// Energy stored now, kWh.
    pub stored_kwh: f64,
}

/// What one battery step did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BatteryStep {
    /// Energy drawn from the bus to charge, kWh (≥ 0).
    pub charged_kwh: f64,
    /// Energy delivered to the bus by discharging, kWh (≥ 0).
    pub discharged_kwh: f64,
    /// Conversion losses, kWh (≥ 0).
    pub losses_kwh: f64,
    /// Change of stored energy, kWh: `charged·√η − discharged/√η`.
    pub stored_delta_kwh: f64,
}

impl BatteryStep {
    /// Net energy drawn from the bus (negative when discharging).
    pub fn bus_kwh(&self) -> f64 {
        self.charged_kwh - self.discharged_kwh
    }

    /// Energy through the bus either way, kWh: what degradation is charged on.
    pub fn throughput_kwh(&self) -> f64 {
        self.charged_kwh + self.discharged_kwh
    }
}

impl BatteryState {
    /// State of charge as a fraction of capacity (0 for a zero-capacity battery).
    pub fn soc(&self, spec: &BatterySpec) -> f64 {
        if spec.capacity_kwh > 0.0 {
            self.stored_kwh / spec.capacity_kwh
        } else {
            0.0
        }
    }

    /// Applies a set-point (kW, + charges) for `hours`, clamped to the power,
    /// SoC and availability limits. Returns what was actually done.
    /// Non-finite set-points or durations are rejected and change nothing.
    pub fn apply_setpoint(
        &mut self,
        spec: &BatterySpec,
        setpoint_kw: f64,
        hours: f64,
        available: bool,
    ) -> Result<BatteryStep, CoreError> {
        if !setpoint_kw.is_finite() {
            return Err(CoreError::invalid(
                "battery.setpoint_kw",
                format!("must be finite, got {setpoint_kw}"),
            ));
        }
        if !hours.is_finite() || hours <= 0.0 {
            return Err(CoreError::invalid(
                "battery.hours",
                format!("must be finite and > 0, got {hours}"),
            ));
        }
        let (lo, hi) = spec.setpoint_range_kw(self.stored_kwh, hours, available);
        let p = setpoint_kw.clamp(lo, hi);
        let e = spec.one_way_efficiency();
        let step = if p >= 0.0 {
            let charged = p * hours;
            BatteryStep {
                charged_kwh: charged,
                discharged_kwh: 0.0,
                losses_kwh: charged - charged * e,
                stored_delta_kwh: charged * e,
            }
        } else {
            let discharged = -p * hours;
            let drawn = discharged / e;
            BatteryStep {
                charged_kwh: 0.0,
                discharged_kwh: discharged,
                losses_kwh: drawn - discharged,
                stored_delta_kwh: -drawn,
            }
        };
        // The range above keeps us in bounds up to one rounding; the clamp only
        // removes that last ulp so SoC provably never leaves [min, max].
        self.stored_kwh = (self.stored_kwh + step.stored_delta_kwh)
            .clamp(spec.min_stored_kwh(), spec.max_stored_kwh());
        Ok(step)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn spec() -> BatterySpec {
        BatterySpec { round_trip_efficiency: 0.81, ..BatterySpec::home(10.0) }
    }

    #[test]
    fn charge_and_discharge_apply_one_way_efficiency() {
        let s = spec();
        let mut b = BatteryState { stored_kwh: 5.0 };
        let step = b.apply_setpoint(&s, 2.0, 1.0, true).unwrap();
        assert_eq!(step.charged_kwh, 2.0);
        assert!((step.stored_delta_kwh - 1.8).abs() < 1e-12);
        assert!((b.stored_kwh - 6.8).abs() < 1e-12);
        let step = b.apply_setpoint(&s, -0.9, 1.0, true).unwrap();
        assert!((step.discharged_kwh - 0.9).abs() < 1e-12);
        assert!((step.stored_delta_kwh + 1.0).abs() < 1e-12);
        assert!((step.losses_kwh - 0.1).abs() < 1e-12);
    }

    #[test]
    fn limits_clamp_power_soc_and_availability() {
        let s = spec();
        let mut b = BatteryState { stored_kwh: 9.0 };
        // Headroom 0.5 kWh stored ⇒ at most 0.5/0.9 kWh from the bus.
        let step = b.apply_setpoint(&s, 100.0, 1.0, true).unwrap();
        assert!((step.charged_kwh - 0.5 / 0.9).abs() < 1e-12);
        assert!((b.stored_kwh - 9.5).abs() < 1e-12);
        let mut b = BatteryState { stored_kwh: 9.0 };
        let step = b.apply_setpoint(&s, -100.0, 1.0, true).unwrap();
        assert_eq!(step.discharged_kwh, 5.0); // power limit 5 kW
        let mut b = BatteryState { stored_kwh: 5.0 };
        let step = b.apply_setpoint(&s, -100.0, 1.0, true).unwrap();
        assert!((step.discharged_kwh - 3.6).abs() < 1e-12); // (5 − 1 reserve) · √η
        let mut b = BatteryState { stored_kwh: 5.0 };
        let step = b.apply_setpoint(&s, 3.0, 1.0, false).unwrap();
        assert_eq!(step, BatteryStep::default());
        assert_eq!(b.stored_kwh, 5.0);
    }

    #[test]
    fn non_finite_input_is_rejected_and_changes_nothing() {
        let s = spec();
        let mut b = BatteryState { stored_kwh: 5.0 };
        for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            let e = b.apply_setpoint(&s, bad, 1.0, true).unwrap_err().to_string();
            assert!(e.contains("battery.setpoint_kw"), "{e}");
            assert!(b.apply_setpoint(&s, 1.0, bad, true).is_err());
        }
        assert_eq!(b.stored_kwh, 5.0);
        let bad = BatterySpec { soc_max: 0.05, ..spec() };
        assert!(bad.validate("battery").unwrap_err().to_string().contains("battery.soc_max"));
    }

    proptest! {
        #[test]
        fn energy_is_conserved_and_soc_stays_in_bounds(
            cap in 0.5f64..100.0,
            eta in 0.5f64..1.0,
            soc0 in 0.0f64..1.0,
            setpoints in proptest::collection::vec(prop_oneof![-1e9f64..1e9, -20.0f64..20.0, Just(0.0)], 1..50),
            hours in prop_oneof![Just(0.5), Just(1.0), 0.01f64..3.0],
            available in proptest::bool::ANY,
        ) {
            let s = BatterySpec { round_trip_efficiency: eta, ..BatterySpec::home(cap) };
            let mut b = BatteryState { stored_kwh: s.min_stored_kwh() + soc0 * (s.max_stored_kwh() - s.min_stored_kwh()) };
            for p in setpoints {
                let before = b.stored_kwh;
                let step = b.apply_setpoint(&s, p, hours, available).unwrap();
                let e = s.one_way_efficiency();
                let expected = step.charged_kwh * e - step.discharged_kwh / e;
                prop_assert!((b.stored_kwh - before - expected).abs() <= 1e-12 * cap.max(1.0));
                prop_assert!((step.stored_delta_kwh - expected).abs() <= 1e-12 * cap.max(1.0));
                prop_assert!(b.stored_kwh >= s.min_stored_kwh() && b.stored_kwh <= s.max_stored_kwh());
                prop_assert!(step.charged_kwh >= 0.0 && step.discharged_kwh >= 0.0 && step.losses_kwh >= -1e-12);
                prop_assert!(step.charged_kwh <= s.max_charge_kw * hours * (1.0 + 1e-12));
                prop_assert!(step.discharged_kwh <= s.max_discharge_kw * hours * (1.0 + 1e-12));
                prop_assert!(step.charged_kwh == 0.0 || step.discharged_kwh == 0.0);
                if !available { prop_assert_eq!(step, BatteryStep::default()); }
            }
        }
    }
}
