//! Validated conversions between wire (generated prost) and domain
//! (`peergrid_core`) types: the one place wire input is checked.
//!
//! Wire → domain conversions can fail and return [`WireError::InvalidArgument`]
//! naming the field by its path in the request (`reports[3].order.quantity_wh`)
//! and the bound it broke. Callers pass the path of the message they convert
//! (`""` for a top-level message); [`field`] and [`index`] build paths.
//! Domain → wire conversions are plain `From` impls: domain values are valid
//! by construction.
//!
//! One concept per file: [`enums`] (side, time-of-use band), [`tariff`],
//! [`order`], [`kpis`], [`reward`], [`slot`] (SlotOpen, HouseholdReport),
//! [`cleared`] (SlotCleared, ProsumerSettlement), [`prosumer`] (a
//! prosumer's equipment), [`experience`] (the learner's messages),
//! [`policy`] (an external policy's requests and answers).

pub mod cleared;
pub mod enums;
pub mod experience;
pub mod kpis;
pub mod order;
pub mod policy;
pub mod prosumer;
pub mod reward;
pub mod slot;
pub mod tariff;

pub use enums::{side_from_wire, tou_band_from_wire};
pub use order::{order_from_wire, MAX_ORDER_WH};
pub use prosumer::{envelope_from_wire, envelope_to_wire};
pub use reward::{reward_weights_from_json, reward_weights_to_json, MAX_REWARD_WEIGHTS_JSON_BYTES};
pub use tariff::{slot_tariff_from_wire, MAX_CO2_KG_PER_KWH, MAX_PRICE_MICROS};

use crate::error::WireError;

/// The path of field `name` inside the message at `path` (`""` = top level).
pub fn field(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_owned()
    } else {
        format!("{path}.{name}")
    }
}

/// The path of element `i` of the repeated field at `path`.
pub fn index(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}

/// A sub-message proto3 makes optional but the contract requires.
pub fn required<'a, T>(value: Option<&'a T>, path: &str) -> Result<&'a T, WireError> {
    value.ok_or_else(|| WireError::invalid(path, "is required"))
}

/// A finite `f64` in `[min, max]`; NaN and infinities are rejected by name.
pub fn finite_in(value: f64, min: f64, max: f64, path: &str) -> Result<f64, WireError> {
    if !value.is_finite() {
        return Err(WireError::invalid(path, format!("must be finite, got {value}")));
    }
    if !(min..=max).contains(&value) {
        return Err(WireError::invalid(path, format!("must lie in [{min}, {max}], got {value}")));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_compose() {
        assert_eq!(field("", "slot"), "slot");
        let order = field(&index("reports", 3), "order");
        assert_eq!(field(&order, "quantity_wh"), "reports[3].order.quantity_wh");
    }

    #[test]
    fn required_and_finite_name_the_field() {
        let missing: Option<&u8> = None;
        assert_eq!(
            required(missing, "tariff").unwrap_err(),
            WireError::invalid("tariff", "is required")
        );
        assert_eq!(required(Some(&1u8), "tariff").unwrap(), &1);
        let e = finite_in(f64::NAN, 0.0, 1.0, "reports[0].load_kwh").unwrap_err();
        assert!(
            e.to_string().contains("reports[0].load_kwh") && e.to_string().contains("finite"),
            "{e}"
        );
        let e = finite_in(2.0, 0.0, 1.0, "x").unwrap_err();
        assert!(e.to_string().contains("[0, 1]"), "{e}");
        assert_eq!(finite_in(0.5, 0.0, 1.0, "x").unwrap(), 0.5);
    }
}
