//! peergrid's pure domain core.
//!
//! Everything that decides an outcome lives here as plain functions over
//! plain data: battery and PV/load physics, tariffs and grid limits, orders
//! and their clearing, settlement, reward, KPIs, datasets and the community
//! generator, the safety filter, baseline policies, the MLP forward pass,
//! and the single-threaded reference [`simulation::Simulation`] that every
//! distributed run must reproduce.
//!
//! This crate must never depend on an async runtime, gRPC or libtorch
//! (checked in CI by `scripts/check-deps.sh`).

pub mod error;
pub mod market;
pub mod data;
pub mod rng;
pub mod units;

pub use error::CoreError;
