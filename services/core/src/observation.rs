//! What a prosumer sees at the start of a slot, and its feature vector.
//!
//! [`SlotContext`] is what is common to every prosumer in a slot (time,
//! tariffs, the last clearing price); [`OpenSlot`] is a slot as a market
//! opens it for a distributed run (its number, that context, the deadline
//! and the scenario adjustments in force); [`Observation`] adds the
//! household's own state. [`Observation::features`] is the fixed, documented layout the MLP
//! policy consumes — changing it changes the policy's input and must bump
//! [`OBS_DIM`] or the order below in lock-step with the trainer.
//!
//! Nothing here is the true future: the `forecast_*` features are the
//! household's own forecasts from its past
//! ([`OwnForecaster`](crate::forecast::OwnForecaster): the next slot, the next
//! 6 hours, the next 24 hours), and the tariff ahead ([`TariffAhead`]) is the
//! configured schedule, which households know in advance. The community
//! signals ([`CommunitySignals`]) are the last cleared slot's, as the market
//! announces them.

use crate::forecast::OwnForecast;
use crate::household::Adjustment;
use crate::tariff::SlotTariff;
use crate::units::PricePerKwh;

/// Number of features in [`Observation::features`].
pub const OBS_DIM: usize = 22;

/// Names of the features, in order (used in docs, logs and checkpoints).
///
/// Every feature is of order one in its raw units: the forecasts are means
/// in kWh per slot (like `load_kwh`), not sums over their horizon, and the
/// time to the highest price is in days. The first policy a trainer
/// publishes normalises with the identity, and large raw inputs would
/// saturate its tanh layers and move the residual policy away from the rule.
pub const FEATURE_NAMES: [&str; OBS_DIM] = [
    "load_kwh",
    "pv_kwh",
    "soc",
    "battery_capacity_kwh",
    "battery_available",
    "retail_per_kwh",
    "feed_in_per_kwh",
    "time_of_day_sin",
    "time_of_day_cos",
    "last_clearing_price_per_kwh",
    "forecast_next_net_load_kwh",
    "next_retail_per_kwh",
    "weekend",
    "co2_kg_per_kwh",
    "forecast_mean_load_next_6h_kwh",
    "forecast_mean_pv_next_6h_kwh",
    "forecast_mean_net_load_next_24h_kwh",
    "retail_mean_next_24h_per_kwh",
    "retail_max_next_24h_per_kwh",
    "days_until_max_retail",
    "last_p2p_kwh_per_household",
    "last_community_net_kwh_per_household",
];

/// Common facts of one slot.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SlotContext {
    /// Slot index into the dataset (after any offset of the run).
    pub data_slot: usize,
    /// Hour of day (0..24) at the start of the slot.
    pub hour: u8,
    /// Fraction of the day elapsed at the start of the slot, [0, 1).
    pub day_fraction: f64,
    /// Whether the slot falls on a Saturday or Sunday.
    pub weekend: bool,
    /// Slot length in hours.
    pub hours: f64,
    /// This slot's prices.
    pub tariff: SlotTariff,
    /// The next slot's prices (what a battery could wait for).
    pub next_tariff: SlotTariff,
    /// Last uniform clearing price, or the tariff midpoint when there was none.
    pub last_clearing_price_per_kwh: f64,
    /// The tariff schedule of the next [`TARIFF_AHEAD_HOURS`] (known in advance).
    pub tariff_ahead: TariffAhead,
    /// What the community did in the last slot cleared (zeros before the first).
    pub last_slot: CommunitySignals,
}

/// The community's last cleared slot, per reporting household: what the
/// market announces to everyone with the next slot (no household's own data).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct CommunitySignals {
    /// Energy traded P2P, kWh per household (≥ 0).
    pub p2p_kwh_per_household: f64,
    /// Σ position after the batteries (load − PV + battery), kWh per
    /// household: positive when the community as a whole was short.
    pub net_kwh_per_household: f64,
}

/// Hours of tariff schedule a slot announces ahead ([`TariffAhead`]).
pub const TARIFF_AHEAD_HOURS: f64 = 24.0;

/// The retail prices of the slots after this one, up to
/// [`TARIFF_AHEAD_HOURS`] ahead: the configured schedule, which every
/// household knows in advance (what waiting with a charged battery can
/// earn). [`crate::simulation::tariff_ahead`] makes it.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct TariffAhead {
    /// Their mean retail price, rounded to the µ/kWh.
    pub retail_mean: PricePerKwh,
    /// Their highest retail price.
    pub retail_max: PricePerKwh,
    /// Hours from the start of this slot to the start of the first of them
    /// at the highest price (one slot's length at least).
    pub hours_until_max: f64,
}

/// A slot as the market opens it: what the market-node sends every
/// agent-node (`SlotOpen` on the wire) and what each household plays.
///
/// The market builds it once per slot from [`SlotContext`] and the scenario
/// effects in force; the proto crate converts it to and from the wire
/// (`slot_open_to_wire`, `slot_open_from_wire`, which validates every field).
#[derive(Clone, Debug, PartialEq)]
pub struct OpenSlot {
    /// The run's slot number (counts from 0 for each market run).
    pub slot: u64,
    /// The common facts of the slot.
    pub ctx: SlotContext,
    /// When the market stops waiting for batches, Unix ms (fast mode: the
    /// normal deadline, before any hold).
    pub deadline_unix_ms: i64,
    /// Scenario adjustments in force, in the order they started
    /// ([`crate::household::conditions_for`] reads them per prosumer).
    pub adjustments: Vec<Adjustment>,
}

/// One household's view of a slot.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Observation {
    /// The household's load this slot, kWh.
    pub load_kwh: f64,
    /// The household's PV generation this slot, kWh.
    pub pv_kwh: f64,
    /// SoC as a fraction of capacity (0 without battery).
    pub soc: f64,
    /// Battery capacity, kWh (0 without battery).
    pub battery_capacity_kwh: f64,
    /// Whether the battery can be used this slot (false for an EV away from home).
    pub battery_available: bool,
    /// Feasible battery set-point range this slot, kW (`min ≤ 0 ≤ max`),
    /// after the EV departure requirement.
    pub setpoint_min_kw: f64,
    /// Largest feasible charging set-point, kW (≥ 0).
    pub setpoint_max_kw: f64,
    /// The household's forecast of its own load and PV after this slot,
    /// made from its past only.
    pub forecast: OwnForecast,
    /// The common facts of the slot.
    pub ctx: SlotContext,
}

impl Observation {
    /// Writes the feature vector (order: [`FEATURE_NAMES`]).
    pub fn features(&self, out: &mut [f32; OBS_DIM]) {
        let angle = 2.0 * std::f64::consts::PI * self.ctx.day_fraction;
        *out = [
            self.load_kwh as f32,
            self.pv_kwh as f32,
            self.soc as f32,
            self.battery_capacity_kwh as f32,
            self.battery_available as u8 as f32,
            self.ctx.tariff.retail.per_kwh() as f32,
            self.ctx.tariff.feed_in.per_kwh() as f32,
            angle.sin() as f32,
            angle.cos() as f32,
            self.ctx.last_clearing_price_per_kwh as f32,
            self.forecast.next_net_load_kwh as f32,
            self.ctx.next_tariff.retail.per_kwh() as f32,
            self.ctx.weekend as u8 as f32,
            self.ctx.tariff.co2_kg_per_kwh as f32,
            self.forecast.mean_load_near_kwh as f32,
            self.forecast.mean_pv_near_kwh as f32,
            self.forecast.mean_net_load_day_kwh as f32,
            self.ctx.tariff_ahead.retail_mean.per_kwh() as f32,
            self.ctx.tariff_ahead.retail_max.per_kwh() as f32,
            (self.ctx.tariff_ahead.hours_until_max / 24.0) as f32,
            self.ctx.last_slot.p2p_kwh_per_household as f32,
            self.ctx.last_slot.net_kwh_per_household as f32,
        ];
    }

    /// Load − PV before any battery action, kWh (positive = deficit).
    pub fn net_load_kwh(&self) -> f64 {
        self.load_kwh - self.pv_kwh
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Python client names the same features in the same order.
    #[test]
    fn the_python_client_has_the_same_feature_names() {
        let py = include_str!("../../../clients/python/src/peergrid/remote_policy.py");
        let start =
            py.find("FEATURE_NAMES: tuple[str, ...] = (").expect("FEATURE_NAMES in the client");
        let body = &py[start..];
        let body = &body[body.find('(').unwrap() + 1..body.find("\n)").unwrap()];
        let names: Vec<&str> = body
            .lines()
            .map(|l| l.trim().trim_end_matches(',').trim_matches('"'))
            .filter(|l| !l.is_empty())
            .collect();
        assert_eq!(names, FEATURE_NAMES);
    }
}
