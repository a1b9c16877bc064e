//! The market side of a slot: clear the households' orders and settle every
//! household with the grid, plus the reward and KPI record of each.
//!
//! [`SlotEngine`] is what the market-node runs on the reports it receives
//! and what the reference simulator runs on its own households' reports:
//! one code path, so a distributed run reproduces the reference exactly.
//! Reports must be in ascending prosumer-id order (the engine checks), which
//! fixes every floating-point summation order. Buffers are reused across
//! slots.

use crate::error::CoreError;
use crate::household::HouseholdReport;
use crate::kpi::HouseholdSlot;
use crate::market::{self, Clearing, ClearingScratch, Fill, Mechanism, Order};
use crate::observation::CommunitySignals;
use crate::reward::{reward, RewardTerms, RewardWeights};
use crate::settlement::{
    apply_feeder_limits, settle_household, DemandCharge, FeederOutcome, Settlement,
};
use crate::tariff::{GridConfig, SlotTariff};
use crate::units::PricePerKwh;

const NO_ORDER: u32 = u32::MAX;

/// Clears and settles slots for a community (see the module docs); its
/// buffers are reused from slot to slot.
#[derive(Debug, Default)]
pub struct SlotEngine {
    grid: GridConfig,
    mechanism: Mechanism,
    orders: Vec<Order>,
    order_of: Vec<u32>,
    clearing: Clearing,
    scratch: ClearingScratch,
    settlements: Vec<Settlement>,
    last_price: Option<PricePerKwh>,
    demand: DemandCharge,
    last_slot: CommunitySignals,
}

impl SlotEngine {
    /// An engine with `grid` limits clearing with `mechanism`.
    pub fn new(grid: GridConfig, mechanism: Mechanism) -> SlotEngine {
        SlotEngine { grid, mechanism, ..SlotEngine::default() }
    }

    /// Charges each rise of a demand period's peak net import at `per_kw`
    /// to the slot's importers ([`DemandCharge`]; 0 = no demand charge).
    pub fn with_demand_charge(mut self, per_kw: f64) -> SlotEngine {
        self.demand = DemandCharge::new(per_kw);
        self
    }

    /// The grid settings in force.
    pub fn grid(&self) -> &GridConfig {
        &self.grid
    }

    /// Replaces the grid settings (e.g. a feeder-limit change) from the next slot on.
    pub fn set_grid(&mut self, grid: GridConfig) -> Result<(), CoreError> {
        grid.validate()?;
        self.grid = grid;
        Ok(())
    }

    /// The last uniform clearing price of any slot, if there was one.
    pub fn last_price(&self) -> Option<PricePerKwh> {
        self.last_price
    }

    /// The community signals of the last slot cleared (zeros before the
    /// first): what the next slot's context announces.
    pub fn last_slot(&self) -> CommunitySignals {
        self.last_slot
    }

    /// Checks that `reports` are in strictly ascending id order and that
    /// their orders are valid for `tariff`: the market-node calls this on
    /// untrusted input before [`clear_and_settle`](Self::clear_and_settle).
    pub fn check_reports(
        reports: &[HouseholdReport],
        tariff: &SlotTariff,
    ) -> Result<(), CoreError> {
        for (i, w) in reports.windows(2).enumerate() {
            if w[0].prosumer_id >= w[1].prosumer_id {
                return Err(CoreError::invalid(
                    format!("reports[{}].prosumer_id", i + 1),
                    format!(
                        "ids must be unique and ascending, got {} after {}",
                        w[1].prosumer_id, w[0].prosumer_id
                    ),
                ));
            }
        }
        let orders: Vec<Order> = reports
            .iter()
            .filter_map(|r| {
                r.order.map(|o| Order {
                    id: r.prosumer_id as u64,
                    side: o.side,
                    quantity: o.quantity,
                    limit_price: o.limit_price,
                })
            })
            .collect();
        market::validate_orders(&orders, Some(tariff.bounds()))
    }

    /// Clears the orders of `reports` and settles every reporting household
    /// of a slot of `hours` in demand-charge period `period`
    /// (`simulation::demand_period`; any number without a demand charge).
    pub fn clear_and_settle(
        &mut self,
        reports: &[HouseholdReport],
        tariff: &SlotTariff,
        hours: f64,
        period: u64,
    ) -> FeederOutcome {
        debug_assert!(
            reports.windows(2).all(|w| w[0].prosumer_id < w[1].prosumer_id),
            "reports must be sorted by id"
        );
        self.orders.clear();
        self.order_of.clear();
        for r in reports {
            match r.order {
                Some(o) => {
                    self.order_of.push(self.orders.len() as u32);
                    self.orders.push(Order {
                        id: r.prosumer_id as u64,
                        side: o.side,
                        quantity: o.quantity,
                        limit_price: o.limit_price,
                    });
                }
                None => self.order_of.push(NO_ORDER),
            }
        }
        match self.mechanism {
            Mechanism::Uniform { k } => market::clear_uniform_price_into(
                &self.orders,
                k,
                &mut self.scratch,
                &mut self.clearing,
            ),
            Mechanism::PayAsBid { pricing } => {
                self.clearing = market::clear_pay_as_bid(&self.orders, pricing)
            }
        }
        if let Some(p) = self.clearing.clearing_price {
            self.last_price = Some(p);
        }
        let households = reports.len().max(1) as f64;
        self.last_slot = CommunitySignals {
            p2p_kwh_per_household: self.clearing.matched.kwh() / households,
            net_kwh_per_household: reports.iter().map(|r| r.net_kwh).sum::<f64>() / households,
        };
        self.settlements.clear();
        for (i, r) in reports.iter().enumerate() {
            let side = r.order.map(|o| o.side);
            self.settlements.push(settle_household(
                r.net_kwh,
                side,
                self.fill(i),
                tariff,
                &self.grid,
            ));
        }
        let feeder = apply_feeder_limits(&mut self.settlements, &self.grid, hours);
        self.demand.apply(&mut self.settlements, &feeder, period);
        feeder
    }

    /// The fill of the `i`-th report of the last slot (zero without an order).
    pub fn fill(&self, i: usize) -> Fill {
        match self.order_of.get(i) {
            Some(&k) if k != NO_ORDER => self.clearing.fills[k as usize],
            _ => Fill::default(),
        }
    }

    /// The clearing of the last slot.
    pub fn clearing(&self) -> &Clearing {
        &self.clearing
    }

    /// Settlements of the last slot, one per report, in report order.
    pub fn settlements(&self) -> &[Settlement] {
        &self.settlements
    }
}

/// The reward and KPI record of a settled household.
pub fn household_slot(
    report: &HouseholdReport,
    settlement: &Settlement,
    tariff: &SlotTariff,
    weights: &RewardWeights,
) -> HouseholdSlot {
    let terms = RewardTerms {
        energy_cost: settlement.energy_cost(),
        degradation_cost: report.degradation_cost,
        co2_kg: settlement.grid_import_kwh * tariff.co2_kg_per_kwh,
        overload_penalty: settlement.overload_penalty,
        demand_charge: settlement.demand_charge,
        ev_shortfall_kwh: report.ev_shortfall_kwh,
    };
    HouseholdSlot {
        load_kwh: report.load_kwh,
        pv_kwh: report.pv_kwh,
        battery: report.battery,
        settlement: *settlement,
        degradation_cost: report.degradation_cost,
        co2_kg: terms.co2_kg,
        ev_shortfall_kwh: report.ev_shortfall_kwh,
        reward: reward(&terms, weights),
    }
}
