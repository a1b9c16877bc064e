//! Evaluation of peergrid policies: the perfect-foresight optimum and the
//! held-out days policies are compared on.
//!
//! - [`days`]: numbering the held-out days and the `--days` selection syntax.
//! - [`optimum`]: the perfect-foresight linear program over a whole
//!   evaluation horizon, settled into the same KPIs as a simulated policy.
//!
//! Like the core, this crate is pure: no async runtime, no gRPC, no
//! libtorch (checked by `scripts/check-deps.sh`). It never reads a clock
//! except to time what it runs.

pub mod days;
pub mod error;
pub mod optimum;

pub use error::EvalError;
