//! What the LP of [`super::model`] is built from.
//!
//! An [`LpInput`] is a horizon's prices and, per household, its position
//! before the battery (load − PV) and its battery with the state it starts
//! in. The perfect-foresight optimum fills it from the dataset
//! ([`LpInput::perfect_foresight`]: every value known, batteries at their
//! initial SoC); the MPC baseline (`crate::mpc`) fills it from forecasts and
//! the households' state at the slot it plans from. Nothing here solves.

use peergrid_core::battery::BatterySpec;
use peergrid_core::data::Dataset;
use peergrid_core::prosumer::{EvSpec, ProsumerSpec};
use peergrid_core::simulation::{demand_period, slot_hour, SimConfig};
use peergrid_core::tariff::GridConfig;

/// What the LP is built from: the horizon's prices and each household's
/// position before its battery, battery and starting state. The optimum
/// fills it from the dataset ([`LpInput::perfect_foresight`]); the MPC
/// baseline from its forecasts and the households' current state.
pub(crate) struct LpInput {
    /// Dataset slot of each position of the horizon.
    pub(crate) schedule: Vec<usize>,
    /// Slot length, hours.
    pub(crate) hours: f64,
    /// Hour of day at the start of each slot (EVs' plug-in windows).
    pub(crate) hours_of_day: Vec<u8>,
    /// Retail and feed-in price of each slot, per kWh.
    pub(crate) prices: Vec<(f64, f64)>,
    /// One per prosumer, in id order.
    pub(crate) households: Vec<HouseholdInput>,
    /// The dearest battery wear of the community, per kWh (prices the EV slack).
    pub(crate) max_degradation_per_kwh: f64,
    pub(crate) grid: GridConfig,
    /// The tariff's demand charge, if it has one.
    pub(crate) demand: Option<DemandInput>,
}

/// A demand charge over the horizon.
pub(crate) struct DemandInput {
    pub(crate) per_kw: f64,
    /// The demand-charge period of each slot.
    pub(crate) periods: Vec<u64>,
    /// The net import peak the first slot's period reached before the
    /// horizon, kW (0 for the optimum, which starts with the schedule).
    pub(crate) peak_so_far_kw: f64,
}

impl DemandInput {
    /// The demand charge of `cfg`'s tariff over `schedule`, or `None`.
    pub(crate) fn of(
        ds: &Dataset,
        cfg: &SimConfig,
        schedule: &[usize],
        peak_so_far_kw: f64,
    ) -> Option<DemandInput> {
        let per_kw = cfg.tariff.demand_charge_per_kw;
        (per_kw > 0.0).then(|| DemandInput {
            per_kw,
            periods: schedule.iter().map(|&t| demand_period(ds, cfg, t)).collect(),
            peak_so_far_kw,
        })
    }
}

/// One household's part of an [`LpInput`].
pub(crate) struct HouseholdInput {
    /// Load − PV per slot of the horizon, kWh.
    pub(crate) net_kwh: Vec<f64>,
    /// Its battery (home or EV) with capacity, if any.
    pub(crate) battery: Option<BatteryInput>,
}

/// A battery at the start of the horizon.
pub(crate) struct BatteryInput {
    pub(crate) spec: BatterySpec,
    pub(crate) ev: Option<EvSpec>,
    /// Stored energy at the start, kWh (clamped into the SoC bounds).
    pub(crate) initial_kwh: f64,
    /// Whether an EV counts as plugged in before the first slot (no event
    /// happens at the first slot when this equals its plug-in state then).
    pub(crate) plugged_in_before: bool,
}

impl LpInput {
    /// The optimum's input: every load and PV value of `schedule` known,
    /// batteries at their initial SoC (inputs validated by the caller).
    pub(crate) fn perfect_foresight(
        ds: &Dataset,
        prosumers: &[ProsumerSpec],
        cfg: &SimConfig,
        schedule: &[usize],
    ) -> LpInput {
        let hours_of_day: Vec<u8> = schedule.iter().map(|&t| slot_hour(ds, t)).collect();
        let households = prosumers
            .iter()
            .map(|p| HouseholdInput {
                net_kwh: schedule
                    .iter()
                    .map(|&t| p.trace.load_kwh(ds, t) - p.trace.pv_kwh(ds, t))
                    .collect(),
                battery: p.battery.filter(|b| b.capacity_kwh > 0.0).map(|spec| BatteryInput {
                    spec,
                    ev: p.ev,
                    initial_kwh: (p.initial_soc * spec.capacity_kwh)
                        .clamp(spec.min_stored_kwh(), spec.max_stored_kwh()),
                    plugged_in_before: p.ev.is_none_or(|ev| ev.plugged_in(hours_of_day[0])),
                }),
            })
            .collect();
        LpInput {
            schedule: schedule.to_vec(),
            hours: ds.slot_hours(),
            prices: schedule
                .iter()
                .map(|&t| {
                    let tariff = cfg.tariff_of(ds, t);
                    (tariff.retail.per_kwh(), tariff.feed_in.per_kwh())
                })
                .collect(),
            hours_of_day,
            households,
            max_degradation_per_kwh: max_degradation_per_kwh(prosumers),
            grid: cfg.grid.clone(),
            demand: DemandInput::of(ds, cfg, schedule, 0.0),
        }
    }
}

/// The dearest battery wear among `prosumers`, per kWh (0 without batteries).
pub(crate) fn max_degradation_per_kwh(prosumers: &[ProsumerSpec]) -> f64 {
    prosumers
        .iter()
        .filter_map(|p| p.battery)
        .map(|b| b.degradation_cost_per_kwh)
        .fold(0.0, f64::max)
}
