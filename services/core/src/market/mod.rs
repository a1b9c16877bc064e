//! The local P2P market: order books and their clearing.
//!
//! `clear` dispatches to the uniform-price call auction (`uniform.rs`) or
//! pay-as-bid (`pay_as_bid.rs`). Both are pure functions of the book: no
//! clock, no I/O, deterministic and independent of input order.

mod order;

pub use order::*;
