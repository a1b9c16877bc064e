//! The LP an MPC step solves: the optimum's model over the window from the
//! current slot, on what a controller knows then.
//!
//! For slot `t` the window is `t, t + 1, …, t + H` (dataset time, cut at
//! the dataset's end). What goes in:
//!
//! - slot `t`: each household's measured load and PV (every policy's
//!   observation carries them);
//! - slots after `t`: the core forecaster's values
//!   ([`peergrid_core::forecast`]), made from each household's own past
//!   only — never the data of those slots;
//! - prices: the tariff schedule, which is known in advance;
//! - batteries: the energy each holds now (after this slot's EV events) and
//!   the EV plug-in windows (a routine, so known);
//! - a demand charge, if the tariff has one: the peak net import the
//!   current period has already reached (only a higher peak costs more).
//!
//! The held-out days are played back to back, so the slot after a held-out
//! week's last is another week's first; the window still continues in
//! dataset time, as a controller's clock would. Only the first slot's
//! decision is applied, so this affects the plan's tail only.

use peergrid_core::data::Dataset;
use peergrid_core::forecast::{HouseholdForecast, SeriesShape};
use peergrid_core::household::Household;
use peergrid_core::simulation::{demand_period, slot_hour, SimConfig, SlotRecord};

use crate::optimum::input::{BatteryInput, DemandInput, HouseholdInput, LpInput};

/// The forecaster's state for every household: its shape and a reusable
/// buffer per household.
pub(super) struct Forecasts {
    pub(super) shape: SeriesShape,
    pub(super) horizon_slots: usize,
    buffers: Vec<HouseholdForecast>,
}

impl Forecasts {
    pub(super) fn new(shape: SeriesShape, horizon_slots: usize, households: usize) -> Forecasts {
        Forecasts {
            shape,
            horizon_slots,
            buffers: vec![HouseholdForecast::with_horizon(horizon_slots); households],
        }
    }
}

/// The LP input of the window from dataset slot `t`, for `households` as
/// they stand after this slot's EV events.
pub(super) fn window_input(
    ds: &Dataset,
    cfg: &SimConfig,
    households: &[Household],
    t: usize,
    forecasts: &mut Forecasts,
    max_degradation_per_kwh: f64,
    peak_so_far_kw: f64,
) -> LpInput {
    let len = (forecasts.horizon_slots + 1).min(ds.n_slots() - t);
    let schedule: Vec<usize> = (t..t + len).collect();
    let hours_of_day: Vec<u8> = schedule.iter().map(|&s| slot_hour(ds, s)).collect();
    let shape = forecasts.shape;
    let inputs = households
        .iter()
        .zip(&mut forecasts.buffers)
        .map(|(h, forecast)| {
            let trace = &h.spec.trace;
            forecast.update(ds, trace, t, &shape);
            let mut net_kwh = Vec::with_capacity(len);
            net_kwh.push(trace.load_kwh(ds, t) - trace.pv_kwh(ds, t));
            net_kwh.extend(
                forecast.load_kwh.iter().zip(&forecast.pv_kwh).take(len - 1).map(|(l, p)| l - p),
            );
            let battery = match (h.spec.battery, h.battery) {
                (Some(spec), Some(state)) if spec.capacity_kwh > 0.0 => Some(BatteryInput {
                    spec,
                    ev: h.spec.ev,
                    initial_kwh: state.stored_kwh,
                    plugged_in_before: h.spec.ev.is_none_or(|ev| ev.plugged_in(hours_of_day[0])),
                }),
                _ => None,
            };
            HouseholdInput { net_kwh, battery }
        })
        .collect();
    LpInput {
        demand: DemandInput::of(ds, cfg, &schedule, peak_so_far_kw),
        prices: schedule
            .iter()
            .map(|&s| {
                let tariff = cfg.tariff_of(ds, s);
                (tariff.retail.per_kwh(), tariff.feed_in.per_kwh())
            })
            .collect(),
        schedule,
        hours: ds.slot_hours(),
        hours_of_day,
        households: inputs,
        max_degradation_per_kwh,
        grid: cfg.grid.clone(),
    }
}

/// The community's peak net import so far in the demand-charge period of
/// dataset slot `t`, kW, from the records of the slots played (0 when the
/// period starts now or there is no demand charge).
pub(super) fn peak_so_far_kw(
    ds: &Dataset,
    cfg: &SimConfig,
    records: &[SlotRecord],
    t: usize,
) -> f64 {
    if cfg.tariff.demand_charge_per_kw <= 0.0 {
        return 0.0;
    }
    let period = demand_period(ds, cfg, t);
    records
        .iter()
        .rev()
        .take_while(|r| demand_period(ds, cfg, r.data_slot) == period)
        .map(|r| (r.grid_import_kwh - r.grid_export_kwh) / ds.slot_hours())
        .fold(0.0, f64::max)
}
