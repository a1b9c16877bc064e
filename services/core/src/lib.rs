//! peergrid's pure domain core.
//!
//! Everything that decides an outcome lives here as plain functions over
//! plain data: battery and PV/load physics, tariffs and grid limits, orders
//! and their clearing, settlement, reward, KPIs, datasets and the community
//! generator, a household's forecast of its own load and PV, the safety
//! filter, baseline policies, the MLP forward pass, and the single-threaded
//! reference [`simulation::Simulation`] that every distributed run must
//! reproduce.
//!
//! This crate must never depend on an async runtime, gRPC or libtorch
//! (checked in CI by `scripts/check-deps.sh`).

// Every public item is documented: the core is the vocabulary the other
// crates speak.
#![warn(missing_docs)]

pub mod battery;
pub mod data;
pub mod error;
pub mod evaluation;
pub mod experience;
pub mod forecast;
pub mod household;
pub mod kpi;
pub mod market;
pub mod node_name;
pub mod observation;
pub mod physics;
pub mod policy;
pub mod prosumer;
pub mod reward;
pub mod rng;
pub mod safety;
pub mod settlement;
pub mod simulation;
pub mod slot_engine;
pub mod tariff;
pub mod units;

pub use error::CoreError;
