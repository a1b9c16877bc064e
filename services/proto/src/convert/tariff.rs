//! The tariff of a slot: wire `SlotTariff` ⇄ `peergrid_core::tariff::SlotTariff`.
//!
//! The tariff bounds every limit price of its slot, so a malformed one would
//! let orders through that the market must reject: prices must be within
//! `[0, MAX_PRICE_MICROS]` with feed-in ≤ retail, the CO2 intensity finite
//! and within `[0, MAX_CO2_KG_PER_KWH]`, the band set.

use peergrid_core::tariff::SlotTariff;
use peergrid_core::units::PricePerKwh;

use super::{field, finite_in, tou_band_from_wire};
use crate::error::WireError;
use crate::pb::common::v1 as pb;

/// Highest retail or feed-in price, µ/kWh: 100 currency/kWh, the bound
/// `TariffConfig::validate` applies to configured prices.
pub const MAX_PRICE_MICROS: i64 = 100_000_000;

/// Highest grid CO2 intensity, kg/kWh (the bound of `TariffConfig`).
pub const MAX_CO2_KG_PER_KWH: f64 = 5.0;

/// Validates a wire tariff found at `path` (e.g. `"tariff"`, `"next_tariff"`).
pub fn slot_tariff_from_wire(wire: &pb::SlotTariff, path: &str) -> Result<SlotTariff, WireError> {
    let price = |value: i64, name: &str| {
        if (0..=MAX_PRICE_MICROS).contains(&value) {
            Ok(PricePerKwh(value))
        } else {
            Err(WireError::invalid(
                field(path, name),
                format!("must lie in [0, {MAX_PRICE_MICROS}] µ/kWh, got {value}"),
            ))
        }
    };
    let retail = price(wire.retail_micros, "retail_micros")?;
    let feed_in = price(wire.feed_in_micros, "feed_in_micros")?;
    if feed_in > retail {
        return Err(WireError::invalid(
            field(path, "feed_in_micros"),
            format!("must be ≤ retail_micros ({}), got {}", retail.0, feed_in.0),
        ));
    }
    let co2_kg_per_kwh =
        finite_in(wire.co2_kg_per_kwh, 0.0, MAX_CO2_KG_PER_KWH, &field(path, "co2_kg_per_kwh"))?;
    let band = tou_band_from_wire(wire.band, &field(path, "band"))?;
    Ok(SlotTariff { band, retail, feed_in, co2_kg_per_kwh })
}

impl TryFrom<&pb::SlotTariff> for SlotTariff {
    type Error = WireError;
    fn try_from(wire: &pb::SlotTariff) -> Result<SlotTariff, WireError> {
        slot_tariff_from_wire(wire, "")
    }
}

impl From<&SlotTariff> for pb::SlotTariff {
    fn from(t: &SlotTariff) -> pb::SlotTariff {
        pb::SlotTariff {
            retail_micros: t.retail.0,
            feed_in_micros: t.feed_in.0,
            co2_kg_per_kwh: t.co2_kg_per_kwh,
            band: pb::TouBand::from(t.band).into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use peergrid_core::tariff::TariffConfig;
    use tonic::Code;

    fn wire() -> pb::SlotTariff {
        pb::SlotTariff::from(&TariffConfig::default().slot(18, None))
    }

    #[test]
    fn round_trips_every_configured_hour() {
        let config = TariffConfig::default();
        for hour in 0..24 {
            let t = config.slot(hour, None);
            assert_eq!(SlotTariff::try_from(&pb::SlotTariff::from(&t)).unwrap(), t, "hour {hour}");
        }
        assert_eq!(wire().retail_micros, 450_000);
        assert_eq!(wire().band, pb::TouBand::Peak as i32);
    }

    #[test]
    fn each_bound_is_named() {
        type Case = (fn(&mut pb::SlotTariff), &'static str, &'static str);
        let cases: [Case; 7] = [
            (|w| w.retail_micros = -1, "next_tariff.retail_micros", "[0, 100000000]"),
            (
                |w| w.retail_micros = MAX_PRICE_MICROS + 1,
                "next_tariff.retail_micros",
                "got 100000001",
            ),
            (|w| w.feed_in_micros = -5, "next_tariff.feed_in_micros", "got -5"),
            (
                |w| w.feed_in_micros = 500_000,
                "next_tariff.feed_in_micros",
                "≤ retail_micros (450000)",
            ),
            (|w| w.co2_kg_per_kwh = f64::NAN, "next_tariff.co2_kg_per_kwh", "finite"),
            (|w| w.co2_kg_per_kwh = 6.0, "next_tariff.co2_kg_per_kwh", "[0, 5]"),
            (|w| w.band = 0, "next_tariff.band", "TOU_BAND_UNSPECIFIED"),
        ];
        for (mutate, path, bound) in cases {
            let mut w = wire();
            mutate(&mut w);
            let e = slot_tariff_from_wire(&w, "next_tariff").unwrap_err();
            assert_eq!(e.code(), Code::InvalidArgument);
            let msg = e.to_string();
            assert!(msg.starts_with(&format!("invalid {path}: ")) && msg.contains(bound), "{msg}");
        }
    }
}
