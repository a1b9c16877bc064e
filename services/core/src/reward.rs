//! The per-prosumer, per-slot reward.
//!
//! ```text
//! reward = − w_cost · (grid import cost − export revenue + P2P payments − P2P revenue)
//!          − w_degradation · degradation cost (throughput kWh × cost per kWh)
//!          − w_co2 · co2_price_per_kg · (grid import kWh × CO2 intensity)
//!          − w_overload · (its share of the feeder overload penalty)
//!          − w_demand · (its share of the rise of the demand charge)
//!          − ev_shortfall_per_kwh · (EV energy missing at departure, kWh)
//! ```
//! All money in currency units; the weights are configurable and default to
//! the household's actual bill plus a modest carbon price. The demand-charge
//! term is 0 without a tariff demand charge; with one, a household pays for
//! the rises of the community's peak net import in the slots it imported in
//! (`settlement::DemandCharge`), so its reward sees the peak.

use serde::{Deserialize, Serialize};

use crate::error::CoreError;

/// How the terms of a household's slot weigh in its reward (all ≥ 0).
/// The reward is minus the weighted sum (see [`reward`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RewardWeights {
    /// Weight of the energy bill.
    pub cost: f64,
    /// Weight of the battery degradation cost.
    pub degradation: f64,
    /// Weight of the CO2 cost (`co2_kg × co2_price_per_kg`).
    pub co2: f64,
    /// Carbon price, currency per kg CO2.
    pub co2_price_per_kg: f64,
    /// Weight of the share of feeder overload penalties.
    pub overload: f64,
    /// Weight of the share of the demand charge's rises.
    pub demand_charge: f64,
    /// Penalty per kWh an EV lacks at departure.
    pub ev_shortfall_per_kwh: f64,
}

impl Default for RewardWeights {
    fn default() -> Self {
        RewardWeights {
            cost: 1.0,
            degradation: 1.0,
            co2: 1.0,
            co2_price_per_kg: 0.05,
            overload: 1.0,
            demand_charge: 1.0,
            ev_shortfall_per_kwh: 0.5,
        }
    }
}

impl RewardWeights {
    /// Checks every weight lies in [0, 1000]; errors name `reward.<field>`.
    pub fn validate(&self) -> Result<(), CoreError> {
        for (field, v) in [
            ("reward.cost", self.cost),
            ("reward.degradation", self.degradation),
            ("reward.co2", self.co2),
            ("reward.co2_price_per_kg", self.co2_price_per_kg),
            ("reward.overload", self.overload),
            ("reward.demand_charge", self.demand_charge),
            ("reward.ev_shortfall_per_kwh", self.ev_shortfall_per_kwh),
        ] {
            if !v.is_finite() || !(0.0..=1000.0).contains(&v) {
                return Err(CoreError::invalid(field, format!("must lie in [0, 1000], got {v}")));
            }
        }
        Ok(())
    }
}

/// The ingredients of one reward.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RewardTerms {
    /// Net energy bill of the slot (grid and P2P).
    pub energy_cost: f64,
    /// Battery degradation cost.
    pub degradation_cost: f64,
    /// CO2 of the slot's grid import, kg.
    pub co2_kg: f64,
    /// The household's share of overload penalties.
    pub overload_penalty: f64,
    /// The household's share of the slot's rise of the demand charge.
    pub demand_charge: f64,
    /// EV energy missing at a departure or for a trip, kWh.
    pub ev_shortfall_kwh: f64,
}

/// The reward of a slot: minus the weighted cost terms.
pub fn reward(terms: &RewardTerms, w: &RewardWeights) -> f64 {
    -(w.cost * terms.energy_cost
        + w.degradation * terms.degradation_cost
        + w.co2 * w.co2_price_per_kg * terms.co2_kg
        + w.overload * terms.overload_penalty
        + w.demand_charge * terms.demand_charge
        + w.ev_shortfall_per_kwh * terms.ev_shortfall_kwh)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reward_is_minus_the_weighted_bill() {
        let t = RewardTerms {
            energy_cost: 1.0,
            degradation_cost: 0.1,
            co2_kg: 2.0,
            overload_penalty: 0.3,
            demand_charge: 0.7,
            ev_shortfall_kwh: 1.0,
        };
        let w = RewardWeights::default();
        assert!((reward(&t, &w) - -(1.0 + 0.1 + 0.1 + 0.3 + 0.7 + 0.5)).abs() < 1e-12);
        let only_cost = RewardWeights {
            degradation: 0.0,
            co2: 0.0,
            overload: 0.0,
            demand_charge: 0.0,
            ev_shortfall_per_kwh: 0.0,
            ..w
        };
        assert_eq!(reward(&t, &only_cost), -1.0);
        assert!(RewardWeights { co2: f64::NAN, ..Default::default() }
            .validate()
            .unwrap_err()
            .to_string()
            .contains("reward.co2"));
    }
}
