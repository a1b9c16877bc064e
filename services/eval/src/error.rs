//! The one error type of the evaluation crate.
//!
//! Every variant names what was wrong (the field and its bound, the file, the
//! solver's verdict) so the CLI can print it verbatim; [`EvalError::is_bad_input`]
//! tells a caller whether the user's input was at fault (exit code 2).

use std::path::PathBuf;

use peergrid_core::CoreError;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum EvalError {
    /// A domain error from the core: a bad configuration, community or schedule.
    #[error(transparent)]
    Core(#[from] CoreError),

    /// A parameter given by the caller is outside its domain.
    #[error("invalid {field}: {reason}")]
    Invalid { field: String, reason: String },

    /// The LP solver did not reach an optimum (infeasible, numerical trouble).
    #[error("perfect-foresight optimum: {0}")]
    Solver(String),

    /// A report file could not be written.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A plot could not be drawn or encoded.
    #[error("plot {file}: {reason}")]
    Plot { file: String, reason: String },
}

impl EvalError {
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> EvalError {
        EvalError::Invalid { field: field.into(), reason: reason.into() }
    }

    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> EvalError {
        EvalError::Io { path: path.into(), source }
    }

    /// Whether the caller's input is at fault (rather than the solver or the disk).
    pub fn is_bad_input(&self) -> bool {
        matches!(self, EvalError::Core(_) | EvalError::Invalid { .. })
    }
}
