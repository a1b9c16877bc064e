//! Tariffs and grid signals per slot: time-of-use retail price, feed-in
//! price, CO2 intensity, and the feeder's limits and P2P losses.
//!
//! A [`TariffConfig`] is validated once; [`TariffConfig::slot`] then turns an
//! hour of day (and an optional measured CO2 value) into the fixed-point
//! [`SlotTariff`] that bounds the slot's limit prices. Nothing here knows about
//! prosumers or orders.

use serde::{Deserialize, Serialize};

use crate::error::CoreError;
use crate::market::PriceBounds;
use crate::units::PricePerKwh;

/// Time-of-use band of an hour.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TouBand {
    /// Hours in neither the peak nor the shoulder ranges.
    OffPeak,
    /// Hours in `shoulder_hours`.
    Shoulder,
    /// Hours in `peak_hours`.
    Peak,
}

/// How often the demand charge's peak starts again.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DemandPeriod {
    /// Every day of the dataset (midnight to midnight).
    #[default]
    Daily,
    /// Every 30 days from the dataset's first day (a dataset carries no
    /// calendar date, so a "month" is 30 days).
    Monthly,
}

impl DemandPeriod {
    /// Days in one period.
    pub fn days(self) -> usize {
        match self {
            DemandPeriod::Daily => 1,
            DemandPeriod::Monthly => 30,
        }
    }

    fn is_daily(&self) -> bool {
        *self == DemandPeriod::Daily
    }
}

fn is_zero(v: &f64) -> bool {
    *v == 0.0
}

/// Highest demand charge a tariff may set, per kW.
pub const MAX_DEMAND_CHARGE_PER_KW: f64 = 1000.0;

/// Retail import (time-of-use) and export (flat feed-in) prices, the CO2
/// profile used when a dataset has none, and an optional demand charge.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TariffConfig {
    /// Retail price of an off-peak kWh.
    pub off_peak_per_kwh: f64,
    /// Retail price of a shoulder kWh.
    pub shoulder_per_kwh: f64,
    /// Retail price of a peak kWh.
    pub peak_per_kwh: f64,
    /// Price paid for an exported kWh (flat, every hour).
    pub feed_in_per_kwh: f64,
    /// Half-open hour ranges `[start, end)` of the peak band, e.g. `[[16, 21]]`.
    pub peak_hours: Vec<[u8; 2]>,
    /// Half-open hour ranges of the shoulder band; all other hours are off-peak.
    pub shoulder_hours: Vec<[u8; 2]>,
    /// Grid CO2 intensity per hour of day (24 values, kg/kWh), used when the
    /// dataset carries no measured intensity.
    pub co2_kg_per_kwh_by_hour: Vec<f64>,
    /// Charge per kW of the community's peak net import in each
    /// [`DemandPeriod`] (what `Kpis::peak_import_kw` measures, per period);
    /// 0 (the default) = none. Left out of serialised configs when 0.
    #[serde(skip_serializing_if = "is_zero")]
    pub demand_charge_per_kw: f64,
    /// The period whose peak the demand charge prices.
    #[serde(skip_serializing_if = "DemandPeriod::is_daily")]
    pub demand_charge_period: DemandPeriod,
}

impl Default for TariffConfig {
    fn default() -> Self {
        // A typical residential TOU shape (Californian / Australian style).
        TariffConfig {
            off_peak_per_kwh: 0.18,
            shoulder_per_kwh: 0.28,
            peak_per_kwh: 0.45,
            feed_in_per_kwh: 0.05,
            peak_hours: vec![[16, 21]],
            shoulder_hours: vec![[7, 16], [21, 23]],
            co2_kg_per_kwh_by_hour: vec![
                0.30, 0.29, 0.28, 0.28, 0.28, 0.29, 0.31, 0.30, 0.26, 0.22, 0.19, 0.17, //
                0.16, 0.16, 0.17, 0.20, 0.26, 0.34, 0.38, 0.38, 0.36, 0.34, 0.32, 0.31,
            ],
            demand_charge_per_kw: 0.0,
            demand_charge_period: DemandPeriod::Daily,
        }
    }
}

/// Everything price-related about one slot, in fixed point.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SlotTariff {
    /// The slot's time-of-use band.
    pub band: TouBand,
    /// Retail (import) price.
    pub retail: PricePerKwh,
    /// Feed-in (export) price.
    pub feed_in: PricePerKwh,
    /// Grid CO2 intensity, kg/kWh.
    pub co2_kg_per_kwh: f64,
}

impl SlotTariff {
    /// The price range orders must lie in: feed-in to retail.
    pub fn bounds(&self) -> PriceBounds {
        PriceBounds { feed_in: self.feed_in, retail: self.retail }
    }

    /// The midpoint of feed-in and retail: the rule-based baseline's price.
    pub fn midpoint(&self) -> PricePerKwh {
        PricePerKwh((self.feed_in.0 + self.retail.0) / 2)
    }
}

impl TariffConfig {
    /// Checks prices, hour ranges and the CO2 profile; errors name `tariff.<field>`.
    pub fn validate(&self) -> Result<(), CoreError> {
        let prices = [
            ("tariff.off_peak_per_kwh", self.off_peak_per_kwh),
            ("tariff.shoulder_per_kwh", self.shoulder_per_kwh),
            ("tariff.peak_per_kwh", self.peak_per_kwh),
            ("tariff.feed_in_per_kwh", self.feed_in_per_kwh),
        ];
        for (field, p) in prices {
            if !p.is_finite() || !(0.0..=100.0).contains(&p) {
                return Err(CoreError::invalid(
                    field,
                    format!("must be a finite price in [0, 100], got {p}"),
                ));
            }
        }
        let lowest_retail = self.off_peak_per_kwh.min(self.shoulder_per_kwh).min(self.peak_per_kwh);
        if self.feed_in_per_kwh > lowest_retail {
            return Err(CoreError::invalid(
                "tariff.feed_in_per_kwh",
                format!(
                    "must be ≤ every retail price (lowest is {lowest_retail}), got {}",
                    self.feed_in_per_kwh
                ),
            ));
        }
        for (field, ranges) in [
            ("tariff.peak_hours", &self.peak_hours),
            ("tariff.shoulder_hours", &self.shoulder_hours),
        ] {
            for r in ranges {
                if r[0] >= r[1] || r[1] > 24 {
                    return Err(CoreError::invalid(
                        field,
                        format!("range {r:?} must satisfy start < end ≤ 24"),
                    ));
                }
            }
        }
        let d = self.demand_charge_per_kw;
        if !d.is_finite() || !(0.0..=MAX_DEMAND_CHARGE_PER_KW).contains(&d) {
            return Err(CoreError::invalid(
                "tariff.demand_charge_per_kw",
                format!("must lie in [0, {MAX_DEMAND_CHARGE_PER_KW}] per kW, got {d}"),
            ));
        }
        if self.co2_kg_per_kwh_by_hour.len() != 24 {
            return Err(CoreError::invalid(
                "tariff.co2_kg_per_kwh_by_hour",
                format!("needs 24 values, got {}", self.co2_kg_per_kwh_by_hour.len()),
            ));
        }
        if let Some(v) =
            self.co2_kg_per_kwh_by_hour.iter().find(|v| !v.is_finite() || **v < 0.0 || **v > 5.0)
        {
            return Err(CoreError::invalid(
                "tariff.co2_kg_per_kwh_by_hour",
                format!("values must lie in [0, 5], got {v}"),
            ));
        }
        Ok(())
    }

    /// The band of `hour` (peak wins over shoulder where ranges overlap).
    pub fn band(&self, hour: u8) -> TouBand {
        let within = |ranges: &[[u8; 2]]| ranges.iter().any(|r| hour >= r[0] && hour < r[1]);
        if within(&self.peak_hours) {
            TouBand::Peak
        } else if within(&self.shoulder_hours) {
            TouBand::Shoulder
        } else {
            TouBand::OffPeak
        }
    }

    /// The retail price of `band`, per kWh.
    pub fn retail_per_kwh(&self, band: TouBand) -> f64 {
        match band {
            TouBand::OffPeak => self.off_peak_per_kwh,
            TouBand::Shoulder => self.shoulder_per_kwh,
            TouBand::Peak => self.peak_per_kwh,
        }
    }

    /// The tariff of a slot starting at `hour` (0..24). `measured_co2` replaces
    /// the configured profile when the dataset carries measured intensity.
    /// Call [`validate`](Self::validate) first; prices are then in range.
    pub fn slot(&self, hour: u8, measured_co2: Option<f64>) -> SlotTariff {
        let band = self.band(hour % 24);
        let to_fixed = |p: f64| PricePerKwh((p * PricePerKwh::MICROS_PER_UNIT).round() as i64);
        SlotTariff {
            band,
            retail: to_fixed(self.retail_per_kwh(band)),
            feed_in: to_fixed(self.feed_in_per_kwh),
            co2_kg_per_kwh: measured_co2
                .unwrap_or(self.co2_kg_per_kwh_by_hour[(hour % 24) as usize]),
        }
    }
}

/// The community's connection to the upstream grid.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GridConfig {
    /// Feeder import limit for the community's net import, kW (per prosumer
    /// count is applied by the scenario; this is the absolute value).
    pub feeder_import_limit_kw: f64,
    /// Feeder export limit for the community's net export, kW.
    pub feeder_export_limit_kw: f64,
    /// Penalty per kWh of net flow beyond a feeder limit, shared among the
    /// prosumers flowing in the overloading direction pro rata to their flow.
    pub overload_penalty_per_kwh: f64,
    /// Fraction of P2P energy lost in distribution: a buyer receives
    /// `(1 − loss) ×` what it paid for.
    pub p2p_loss_fraction: f64,
}

impl Default for GridConfig {
    fn default() -> Self {
        GridConfig {
            feeder_import_limit_kw: f64::INFINITY,
            feeder_export_limit_kw: f64::INFINITY,
            overload_penalty_per_kwh: 1.0,
            p2p_loss_fraction: 0.02,
        }
    }
}

impl GridConfig {
    /// Checks the limits, the penalty and the loss fraction; errors name `grid.<field>`.
    pub fn validate(&self) -> Result<(), CoreError> {
        for (field, v) in [
            ("grid.feeder_import_limit_kw", self.feeder_import_limit_kw),
            ("grid.feeder_export_limit_kw", self.feeder_export_limit_kw),
        ] {
            if v.is_nan() || v < 0.0 {
                return Err(CoreError::invalid(
                    field,
                    format!("must be ≥ 0 (or infinite for no limit), got {v}"),
                ));
            }
        }
        if !self.overload_penalty_per_kwh.is_finite() || self.overload_penalty_per_kwh < 0.0 {
            return Err(CoreError::invalid(
                "grid.overload_penalty_per_kwh",
                format!("must be finite and ≥ 0, got {}", self.overload_penalty_per_kwh),
            ));
        }
        if !(0.0..0.5).contains(&self.p2p_loss_fraction) {
            return Err(CoreError::invalid(
                "grid.p2p_loss_fraction",
                format!("must lie in [0, 0.5), got {}", self.p2p_loss_fraction),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bands_follow_configured_hours() {
        let t = TariffConfig::default();
        assert_eq!(t.band(3), TouBand::OffPeak);
        assert_eq!(t.band(7), TouBand::Shoulder);
        assert_eq!(t.band(16), TouBand::Peak);
        assert_eq!(t.band(20), TouBand::Peak);
        assert_eq!(t.band(21), TouBand::Shoulder);
        assert_eq!(t.band(23), TouBand::OffPeak);
        let s = t.slot(18, None);
        assert_eq!(s.retail, PricePerKwh(450_000));
        assert_eq!(s.feed_in, PricePerKwh(50_000));
        assert_eq!(s.midpoint(), PricePerKwh(250_000));
        assert_eq!(s.co2_kg_per_kwh, 0.38);
        assert_eq!(t.slot(18, Some(0.1)).co2_kg_per_kwh, 0.1);
    }

    #[test]
    fn validation_names_field_and_bound() {
        let mut t = TariffConfig { feed_in_per_kwh: 0.5, ..TariffConfig::default() };
        let e = t.validate().unwrap_err().to_string();
        assert!(e.contains("tariff.feed_in_per_kwh") && e.contains("0.18"), "{e}");
        t.feed_in_per_kwh = f64::NAN;
        assert!(t.validate().unwrap_err().to_string().contains("finite"));
        let t = TariffConfig { peak_hours: vec![[20, 18]], ..TariffConfig::default() };
        assert!(t.validate().unwrap_err().to_string().contains("tariff.peak_hours"));
        let g = GridConfig { p2p_loss_fraction: 0.7, ..GridConfig::default() };
        assert!(g.validate().unwrap_err().to_string().contains("grid.p2p_loss_fraction"));
        assert!(GridConfig::default().validate().is_ok());
        assert!(TariffConfig::default().validate().is_ok());
        let t = TariffConfig { demand_charge_per_kw: -1.0, ..TariffConfig::default() };
        let e = t.validate().unwrap_err().to_string();
        assert!(e.contains("tariff.demand_charge_per_kw") && e.contains("[0, 1000]"), "{e}");
    }

    #[test]
    fn a_tariff_without_demand_charge_serialises_as_before() {
        let text = serde_json::to_string(&TariffConfig::default()).unwrap();
        assert!(!text.contains("demand"), "{text}");
        let t = TariffConfig {
            demand_charge_per_kw: 12.5,
            demand_charge_period: DemandPeriod::Monthly,
            ..TariffConfig::default()
        };
        let text = serde_json::to_string(&t).unwrap();
        assert!(text.contains(r#""demand_charge_per_kw":12.5,"demand_charge_period":"monthly""#));
        assert_eq!(serde_json::from_str::<TariffConfig>(&text).unwrap(), t);
    }
}
