//! Order side and time-of-use band.
//!
//! Proto3 enums arrive as raw `i32`: any value may come over the wire, and
//! `0` (`*_UNSPECIFIED`) is what an unset field reads as. Both are rejected
//! here, naming the field, so a forgotten `side` can never become a default.

use peergrid_core::market::Side;
use peergrid_core::tariff::TouBand;

use crate::error::WireError;
use crate::pb::common::v1 as pb;

/// A wire `Side` (raw enum value) as a domain side.
pub fn side_from_wire(value: i32, path: &str) -> Result<Side, WireError> {
    match pb::Side::try_from(value) {
        Ok(pb::Side::Buy) => Ok(Side::Buy),
        Ok(pb::Side::Sell) => Ok(Side::Sell),
        Ok(pb::Side::Unspecified) => {
            Err(WireError::invalid(path, "must be SIDE_BUY or SIDE_SELL, got SIDE_UNSPECIFIED"))
        }
        Err(_) => Err(WireError::invalid(path, format!("unknown Side value {value}"))),
    }
}

/// A wire `TouBand` (raw enum value) as a domain band.
pub fn tou_band_from_wire(value: i32, path: &str) -> Result<TouBand, WireError> {
    match pb::TouBand::try_from(value) {
        Ok(pb::TouBand::OffPeak) => Ok(TouBand::OffPeak),
        Ok(pb::TouBand::Shoulder) => Ok(TouBand::Shoulder),
        Ok(pb::TouBand::Peak) => Ok(TouBand::Peak),
        Ok(pb::TouBand::Unspecified) => {
            Err(WireError::invalid(path, "must be set, got TOU_BAND_UNSPECIFIED"))
        }
        Err(_) => Err(WireError::invalid(path, format!("unknown TouBand value {value}"))),
    }
}

impl From<Side> for pb::Side {
    fn from(side: Side) -> pb::Side {
        match side {
            Side::Buy => pb::Side::Buy,
            Side::Sell => pb::Side::Sell,
        }
    }
}

impl TryFrom<pb::Side> for Side {
    type Error = WireError;
    fn try_from(side: pb::Side) -> Result<Side, WireError> {
        side_from_wire(side.into(), "side")
    }
}

impl From<TouBand> for pb::TouBand {
    fn from(band: TouBand) -> pb::TouBand {
        match band {
            TouBand::OffPeak => pb::TouBand::OffPeak,
            TouBand::Shoulder => pb::TouBand::Shoulder,
            TouBand::Peak => pb::TouBand::Peak,
        }
    }
}

impl TryFrom<pb::TouBand> for TouBand {
    type Error = WireError;
    fn try_from(band: pb::TouBand) -> Result<TouBand, WireError> {
        tou_band_from_wire(band.into(), "band")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    #[test]
    fn sides_and_bands_round_trip() {
        for side in [Side::Buy, Side::Sell] {
            assert_eq!(Side::try_from(pb::Side::from(side)).unwrap(), side);
        }
        for band in [TouBand::OffPeak, TouBand::Shoulder, TouBand::Peak] {
            assert_eq!(TouBand::try_from(pb::TouBand::from(band)).unwrap(), band);
        }
    }

    #[test]
    fn unspecified_and_unknown_values_are_rejected_by_field() {
        let e = side_from_wire(0, "reports[1].order.side").unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        assert!(e.to_string().starts_with("invalid reports[1].order.side: "), "{e}");
        assert!(side_from_wire(7, "side")
            .unwrap_err()
            .to_string()
            .contains("unknown Side value 7"));
        assert!(Side::try_from(pb::Side::Unspecified).is_err());
        let e = tou_band_from_wire(0, "tariff.band").unwrap_err();
        assert!(e.to_string().contains("tariff.band"), "{e}");
        assert!(tou_band_from_wire(-1, "band").is_err());
    }
}
