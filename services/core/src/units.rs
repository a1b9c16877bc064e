//! Units and identifiers of the domain.
//!
//! The market works in **fixed point** so that its balances are exact, not
//! "equal up to rounding": quantities are whole watt-hours ([`Wh`]), limit
//! prices are micro-currency per kWh ([`PricePerKwh`]), and money is
//! nano-currency ([`Money`]), which is exactly `Wh × µ/kWh`, so
//! `quantity × price` never rounds. Physics (battery, PV, load) works in `f64`
//! kWh; the conversion happens where an order is formed and where a fill is
//! applied, nowhere else.

use serde::{Deserialize, Serialize};
use std::fmt;

use crate::error::CoreError;

/// Identifies a prosumer within a community (dense, 0-based in the reference simulator).
pub type ProsumerId = u32;

/// Energy in whole watt-hours: the market's quantity unit.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Wh(pub i64);

impl Wh {
    /// No energy.
    pub const ZERO: Wh = Wh(0);

    /// Converts kWh to whole Wh, rounding to nearest. Non-finite input is an error
    /// naming `field`.
    pub fn from_kwh(kwh: f64, field: &str) -> Result<Wh, CoreError> {
        if !kwh.is_finite() {
            return Err(CoreError::invalid(field, format!("must be finite, got {kwh}")));
        }
        let wh = (kwh * 1000.0).round();
        if wh.abs() > 1e15 {
            return Err(CoreError::invalid(
                field,
                format!("{kwh} kWh is out of range (|x| ≤ 1e12 kWh)"),
            ));
        }
        Ok(Wh(wh as i64))
    }

    /// Converts kWh to whole Wh rounding **down** (towards −∞): used where an
    /// order must never exceed what is physically available.
    pub fn floor_from_kwh(kwh: f64) -> Wh {
        if kwh.is_finite() {
            Wh((kwh * 1000.0 + 1e-9).floor().clamp(-1e15, 1e15) as i64)
        } else {
            Wh::ZERO
        }
    }

    /// The quantity in kWh.
    pub fn kwh(self) -> f64 {
        self.0 as f64 / 1000.0
    }
}

impl fmt::Display for Wh {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} kWh", self.kwh())
    }
}

/// Price in micro-currency per kWh (1 currency/kWh = 1,000,000).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct PricePerKwh(pub i64);

impl PricePerKwh {
    /// Fixed-point units per currency unit.
    pub const MICROS_PER_UNIT: f64 = 1_000_000.0;

    /// Converts a currency/kWh price to fixed point, rounding to the nearest µ.
    pub fn from_per_kwh(price: f64, field: &str) -> Result<PricePerKwh, CoreError> {
        if !price.is_finite() {
            return Err(CoreError::invalid(field, format!("must be finite, got {price}")));
        }
        if price.abs() > 1e6 {
            return Err(CoreError::invalid(
                field,
                format!("{price} per kWh is out of range (|x| ≤ 1e6)"),
            ));
        }
        Ok(PricePerKwh((price * Self::MICROS_PER_UNIT).round() as i64))
    }

    /// The price in currency/kWh.
    pub fn per_kwh(self) -> f64 {
        self.0 as f64 / Self::MICROS_PER_UNIT
    }
}

impl fmt::Display for PricePerKwh {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/kWh", self.per_kwh())
    }
}

/// Money in nano-currency: exactly `Wh × (µ/kWh)`. `i128` so that sums over a
/// million large orders cannot overflow.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Money(pub i128);

impl Money {
    /// No money.
    pub const ZERO: Money = Money(0);
    /// Fixed-point units per currency unit.
    pub const NANOS_PER_UNIT: f64 = 1_000_000_000.0;

    /// The exact value of `quantity` at `price`.
    pub fn of(quantity: Wh, price: PricePerKwh) -> Money {
        Money(quantity.0 as i128 * price.0 as i128)
    }

    /// The amount in currency units.
    pub fn amount(self) -> f64 {
        self.0 as f64 / Self::NANOS_PER_UNIT
    }
}

impl std::ops::Add for Money {
    type Output = Money;
    fn add(self, rhs: Money) -> Money {
        Money(self.0 + rhs.0)
    }
}

impl std::ops::AddAssign for Money {
    fn add_assign(&mut self, rhs: Money) {
        self.0 += rhs.0;
    }
}

impl std::iter::Sum for Money {
    fn sum<I: Iterator<Item = Money>>(iter: I) -> Money {
        Money(iter.map(|m| m.0).sum())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions_round_trip() {
        assert_eq!(Wh::from_kwh(2.0, "q").unwrap(), Wh(2000));
        assert_eq!(Wh::from_kwh(0.0004, "q").unwrap(), Wh(0));
        assert_eq!(PricePerKwh::from_per_kwh(0.145, "p").unwrap(), PricePerKwh(145_000));
        assert_eq!(Money::of(Wh(3000), PricePerKwh(145_000)).amount(), 0.435);
        assert_eq!(Wh::floor_from_kwh(1.2349), Wh(1234));
        assert_eq!(Wh::floor_from_kwh(f64::NAN), Wh(0));
    }

    #[test]
    fn non_finite_is_rejected_with_field_name() {
        let e = Wh::from_kwh(f64::NAN, "orders[3].kwh").unwrap_err().to_string();
        assert!(e.contains("orders[3].kwh"), "{e}");
        assert!(PricePerKwh::from_per_kwh(f64::INFINITY, "p").is_err());
    }
}
