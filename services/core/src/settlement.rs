//! Settlement: what each household pays or earns in a slot, and the feeder.
//!
//! After clearing, a household's position (load − PV + battery) is covered
//! first by its P2P fill, then by the grid at the slot's tariff: deficits are
//! imported at retail, surpluses exported at feed-in. A buyer receives its
//! P2P energy minus the distribution loss fraction. The community's net grid
//! flow is checked against the feeder limits; the energy beyond a limit is
//! charged as an overload penalty shared by the households flowing in that
//! direction, pro rata to their flow. With a tariff demand charge,
//! [`DemandCharge`] charges each rise of the period's peak net import to the
//! households importing in the slot that set it, pro rata to their import.

use crate::market::{Fill, Side};
use crate::tariff::{GridConfig, SlotTariff};
use crate::units::{PricePerKwh, ProsumerId, Wh};

/// One household's settled slot.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Settlement {
    /// Energy bought from the grid, kWh.
    pub grid_import_kwh: f64,
    /// Energy sold to the grid, kWh.
    pub grid_export_kwh: f64,
    /// P2P energy bought (paid for), kWh.
    pub p2p_bought_kwh: f64,
    /// P2P energy received after distribution losses, kWh.
    pub p2p_received_kwh: f64,
    /// P2P energy sold, kWh.
    pub p2p_sold_kwh: f64,
    /// Paid to P2P sellers.
    pub p2p_paid: f64,
    /// Received from P2P buyers.
    pub p2p_revenue: f64,
    /// Paid to the grid for `grid_import_kwh`.
    pub import_cost: f64,
    /// Received from the grid for `grid_export_kwh`.
    pub export_revenue: f64,
    /// This household's share of the slot's feeder overload penalty.
    pub overload_penalty: f64,
    /// This household's share of the slot's rise of the demand charge
    /// ([`DemandCharge`]; 0 without one).
    pub demand_charge: f64,
}

impl Settlement {
    /// Net money out of the household for energy: grid and P2P (excludes
    /// battery degradation and penalties).
    pub fn energy_cost(&self) -> f64 {
        self.import_cost - self.export_revenue + self.p2p_paid - self.p2p_revenue
    }

    /// The household's shares of community charges: the feeder overload
    /// penalty and the demand charge's rise.
    pub fn shared_charges(&self) -> f64 {
        self.overload_penalty + self.demand_charge
    }
}

/// One household's part of a cleared slot, as the market tells its node:
/// the side of the order it placed (`None`: it placed none), what the order
/// got, and the settlement built from them. Self-describing: a node settles
/// the household from it alone, without the report it sent.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SettledHousehold {
    /// Whose settlement this is.
    pub prosumer_id: ProsumerId,
    /// The side of the order it placed; `None` if it placed none.
    pub side: Option<Side>,
    /// What the order got.
    pub fill: Fill,
    /// The household's settlement.
    pub settlement: Settlement,
}

/// A cleared slot as one node sees it: the market builds it per node
/// after clearing, the proto crate converts it to and from `SlotCleared`
/// (`slot_cleared_to_wire`, `slot_cleared_from_wire`, which validates
/// every field), and the node's households apply their settlements.
#[derive(Clone, Debug, PartialEq)]
pub struct ClearedSlot {
    /// The market slot that cleared.
    pub slot: u64,
    /// The uniform clearing price; `None` if nothing traded or pay-as-bid.
    pub clearing_price: Option<PricePerKwh>,
    /// Energy matched in the whole community.
    pub matched: Wh,
    /// The node's households that reported in time, sorted by id, unique.
    pub settlements: Vec<SettledHousehold>,
    /// The node's households whose report missed the slot.
    pub missing: Vec<ProsumerId>,
}

/// Settles one household whose post-battery position is `net_kwh`
/// (positive = deficit) and whose order (if any) on `side` got `fill`.
pub fn settle_household(
    net_kwh: f64,
    side: Option<Side>,
    fill: Fill,
    tariff: &SlotTariff,
    grid: &GridConfig,
) -> Settlement {
    let mut s = Settlement::default();
    let traded_kwh = fill.quantity.kwh();
    let value = fill.value.amount();
    match side {
        Some(Side::Buy) if traded_kwh > 0.0 => {
            s.p2p_bought_kwh = traded_kwh;
            s.p2p_received_kwh = traded_kwh * (1.0 - grid.p2p_loss_fraction);
            s.p2p_paid = value;
        }
        Some(Side::Sell) if traded_kwh > 0.0 => {
            s.p2p_sold_kwh = traded_kwh;
            s.p2p_revenue = value;
        }
        _ => {}
    }
    // Orders never exceed the position (safety filter), so both residuals are ≥ 0;
    // `max` only guards against the last ulp.
    let residual = net_kwh - s.p2p_received_kwh + s.p2p_sold_kwh;
    s.grid_import_kwh = residual.max(0.0);
    s.grid_export_kwh = (-residual).max(0.0);
    s.import_cost = s.grid_import_kwh * tariff.retail.per_kwh();
    s.export_revenue = s.grid_export_kwh * tariff.feed_in.per_kwh();
    s
}

/// The community's flow through the feeder in one slot.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct FeederOutcome {
    /// Net import power (negative = net export), kW.
    pub net_import_kw: f64,
    /// Σ household grid import, kWh (what [`DemandCharge`] shares by).
    pub import_kwh: f64,
    /// Energy beyond the import or export limit, kWh.
    pub overload_kwh: f64,
    /// Total penalty charged for it.
    pub penalty: f64,
}

/// Checks the community's net flow against the feeder limits and writes each
/// household's share of any penalty into `settlements`.
pub fn apply_feeder_limits(
    settlements: &mut [Settlement],
    grid: &GridConfig,
    hours: f64,
) -> FeederOutcome {
    let import: f64 = settlements.iter().map(|s| s.grid_import_kwh).sum();
    let export: f64 = settlements.iter().map(|s| s.grid_export_kwh).sum();
    let net_kwh = import - export;
    let net_import_kw = net_kwh / hours;
    let (over_kwh, direction_total) = if net_import_kw > grid.feeder_import_limit_kw {
        (net_kwh - grid.feeder_import_limit_kw * hours, import)
    } else if -net_import_kw > grid.feeder_export_limit_kw {
        (-net_kwh - grid.feeder_export_limit_kw * hours, export)
    } else {
        return FeederOutcome {
            net_import_kw,
            import_kwh: import,
            overload_kwh: 0.0,
            penalty: 0.0,
        };
    };
    let penalty = over_kwh * grid.overload_penalty_per_kwh;
    let importing = net_kwh > 0.0;
    for s in settlements.iter_mut() {
        let flow = if importing { s.grid_import_kwh } else { s.grid_export_kwh };
        s.overload_penalty = penalty * flow / direction_total;
    }
    FeederOutcome { net_import_kw, import_kwh: import, overload_kwh: over_kwh, penalty }
}

/// The tariff's demand charge as it accrues slot by slot.
///
/// The charge of a period is `per_kw × peak` of the community's net import
/// power over the period's slots (what `KpiAccumulator::end_slot_in`
/// prices). A slot that raises the period's peak from `p` to `q` adds
/// `per_kw × (q − p)` to it; [`DemandCharge::apply`] charges that rise to the
/// households importing in the slot, pro rata to their grid import. The
/// rises of a period sum to its charge, so the shares of a run sum to the
/// KPIs' `demand_charge`, and a household pays exactly for the peaks it
/// helped to set: what its reward must see for a policy to learn to shave
/// the peak.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct DemandCharge {
    per_kw: f64,
    period: Option<u64>,
    peak_kw: f64,
}

impl DemandCharge {
    /// A charge of `per_kw` per kW of each period's peak (0: none).
    pub fn new(per_kw: f64) -> DemandCharge {
        DemandCharge { per_kw, ..DemandCharge::default() }
    }

    /// Writes each household's share of the rise of the demand charge in a
    /// slot of demand period `period` into `settlements` (settled, in report
    /// order; `feeder` is what [`apply_feeder_limits`] returned for them),
    /// and returns the rise. A new period starts from a peak of 0 (a period
    /// that only exports pays nothing).
    pub fn apply(
        &mut self,
        settlements: &mut [Settlement],
        feeder: &FeederOutcome,
        period: u64,
    ) -> f64 {
        if self.per_kw <= 0.0 {
            return 0.0;
        }
        if self.period != Some(period) {
            self.period = Some(period);
            self.peak_kw = 0.0;
        }
        let (net_kw, import) = (feeder.net_import_kw, feeder.import_kwh);
        if net_kw <= self.peak_kw {
            return 0.0;
        }
        // net > peak ≥ 0, so some household imports: `import > 0`.
        let rise = self.per_kw * (net_kw - self.peak_kw);
        self.peak_kw = net_kw;
        for s in settlements.iter_mut() {
            s.demand_charge = rise * s.grid_import_kwh / import;
        }
        rise
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tariff::TariffConfig;
    use crate::units::{Money, PricePerKwh, Wh};

    #[test]
    fn buyer_and_seller_residuals_go_to_the_grid() {
        let t = TariffConfig::default().slot(18, None); // retail 0.45, feed-in 0.05
        let g = GridConfig { p2p_loss_fraction: 0.1, ..GridConfig::default() };
        let fill = Fill { quantity: Wh(1000), value: Money::of(Wh(1000), PricePerKwh(200_000)) };
        let b = settle_household(3.0, Some(Side::Buy), fill, &t, &g);
        assert!((b.p2p_received_kwh - 0.9).abs() < 1e-12);
        assert!((b.grid_import_kwh - 2.1).abs() < 1e-12);
        assert!((b.energy_cost() - (2.1 * 0.45 + 0.2)).abs() < 1e-12);
        let s = settle_household(-2.0, Some(Side::Sell), fill, &t, &g);
        assert!((s.grid_export_kwh - 1.0).abs() < 1e-12 && s.grid_import_kwh == 0.0);
        assert!((s.energy_cost() - (-0.05 - 0.2)).abs() < 1e-12);
        let none = settle_household(1.5, None, Fill::default(), &t, &g);
        assert_eq!(none.grid_import_kwh, 1.5);
    }

    #[test]
    fn feeder_penalty_is_shared_pro_rata() {
        let g = GridConfig {
            feeder_import_limit_kw: 2.0,
            overload_penalty_per_kwh: 1.0,
            ..GridConfig::default()
        };
        let mut s = [
            Settlement { grid_import_kwh: 3.0, ..Default::default() },
            Settlement { grid_import_kwh: 1.0, ..Default::default() },
            Settlement { grid_export_kwh: 1.0, ..Default::default() },
        ];
        let f = apply_feeder_limits(&mut s, &g, 0.5);
        // net 3 kWh in 0.5 h = 6 kW; limit 2 kW ⇒ 1 kWh allowed, 2 kWh over.
        assert_eq!(f.net_import_kw, 6.0);
        assert_eq!(f.overload_kwh, 2.0);
        assert_eq!(
            (s[0].overload_penalty, s[1].overload_penalty, s[2].overload_penalty),
            (1.5, 0.5, 0.0)
        );
        let mut ok = [Settlement { grid_import_kwh: 0.5, ..Default::default() }];
        assert_eq!(apply_feeder_limits(&mut ok, &g, 0.5).penalty, 0.0);
    }

    fn flows(import: &[f64], export: &[f64]) -> Vec<Settlement> {
        import
            .iter()
            .zip(export)
            .map(|(&i, &e)| Settlement {
                grid_import_kwh: i,
                grid_export_kwh: e,
                ..Default::default()
            })
            .collect()
    }

    /// Settles the feeder (unlimited) over `s`, then charges `d`'s rise.
    fn charge(d: &mut DemandCharge, s: &mut [Settlement], period: u64) -> f64 {
        let feeder = apply_feeder_limits(s, &GridConfig::default(), 0.5);
        d.apply(s, &feeder, period)
    }

    #[test]
    fn the_rise_of_the_peak_is_charged_to_the_importers_pro_rata() {
        let mut d = DemandCharge::new(2.0);
        // 4 kWh net in 0.5 h = 8 kW: from 0, a rise of 8 kW at 2 per kW.
        let mut s = flows(&[3.0, 1.0, 0.0], &[0.0, 0.0, 0.0]);
        assert_eq!(charge(&mut d, &mut s, 0), 16.0);
        assert_eq!((s[0].demand_charge, s[1].demand_charge, s[2].demand_charge), (12.0, 4.0, 0.0));
        // 3 kW: below the peak, nothing.
        let mut s = flows(&[2.0, 0.0, 0.0], &[0.0, 0.0, 0.5]);
        assert_eq!(charge(&mut d, &mut s, 0), 0.0);
        assert!(s.iter().all(|s| s.demand_charge == 0.0));
        // 10 kW: only the 2 kW above the peak; the exporter pays nothing.
        let mut s = flows(&[5.0, 0.0, 0.0], &[0.0, 0.0, 0.0]);
        assert_eq!(charge(&mut d, &mut s, 0), 4.0);
        // A new period starts again from 0.
        let mut s = flows(&[1.0, 0.0, 0.0], &[0.0, 0.0, 0.0]);
        assert_eq!(charge(&mut d, &mut s, 1), 4.0);
        // Net export never sets a peak; without a charge nothing is written.
        let mut s = flows(&[0.0, 0.0, 0.0], &[0.0, 0.0, 3.0]);
        assert_eq!(charge(&mut DemandCharge::new(2.0), &mut s, 0), 0.0);
        let mut s = flows(&[3.0, 1.0, 0.0], &[0.0, 0.0, 0.0]);
        assert_eq!(charge(&mut DemandCharge::new(0.0), &mut s, 0), 0.0);
        assert!(s.iter().all(|s| s.demand_charge == 0.0));
    }
}
