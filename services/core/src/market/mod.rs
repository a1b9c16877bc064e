//! The local P2P market: order books and their clearing.
//!
//! [`clear`] is the one entry point a caller needs: it validates a book and
//! dispatches to the uniform-price call auction ([`clear_uniform_price`], in
//! `uniform.rs`) or to pay-as-bid ([`clear_pay_as_bid`], in `pay_as_bid.rs`).
//! Both are pure functions of the book: no clock, no I/O, deterministic,
//! independent of input order, and exact (fixed-point units, so energy and
//! money balance to the last Wh and nano-unit). `book_csv.rs` reads a book
//! from CSV and shapes fills for reports. Nothing here may do I/O of its own
//! beyond the reader it is handed.

mod book_csv;
mod order;
mod pay_as_bid;
mod uniform;

#[cfg(test)]
mod fixtures;
#[cfg(test)]
mod tests;

pub use book_csv::{fill_reports, read_order_book, FillReport, OrderBook};
pub use order::*;
pub use pay_as_bid::clear_pay_as_bid;
pub use uniform::{clear_uniform_price, clear_uniform_price_into, ClearingScratch, MAX_ORDERS};

use crate::error::CoreError;

/// Validates `orders` (see [`validate_orders`]) and the mechanism's
/// parameters, then clears the book. On error nothing is cleared.
pub fn clear(
    orders: &[Order],
    mechanism: Mechanism,
    bounds: Option<PriceBounds>,
) -> Result<Clearing, CoreError> {
    validate_mechanism(&mechanism)?;
    if orders.len() > MAX_ORDERS {
        return Err(CoreError::invalid(
            "orders",
            format!("a book holds at most {MAX_ORDERS} orders, got {}", orders.len()),
        ));
    }
    validate_orders(orders, bounds)?;
    Ok(match mechanism {
        Mechanism::Uniform { k } => clear_uniform_price(orders, k),
        Mechanism::PayAsBid { pricing } => clear_pay_as_bid(orders, pricing),
    })
}

fn validate_mechanism(mechanism: &Mechanism) -> Result<(), CoreError> {
    match *mechanism {
        Mechanism::Uniform { k } if !(k.is_finite() && (0.0..=1.0).contains(&k)) => {
            Err(CoreError::invalid("k", format!("must be finite and in [0, 1], got {k}")))
        }
        _ => Ok(()),
    }
}
