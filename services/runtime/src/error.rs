//! The one error type of the runtime crate: start-up problems a node reports
//! and exits on (bad token configuration, unreadable token files). Request-time
//! auth failures are `tonic::Status` values, not this type.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum RuntimeError {
    /// A setting (environment variable, flag) is missing, ambiguous or out of range.
    #[error("invalid {name}: {reason}")]
    Config { name: String, reason: String },

    /// A file named by a setting could not be read.
    #[error("{name}: cannot read {path}: {source}")]
    Io {
        name: String,
        path: String,
        #[source]
        source: std::io::Error,
    },
}

impl RuntimeError {
    pub fn config(name: impl Into<String>, reason: impl Into<String>) -> RuntimeError {
        RuntimeError::Config { name: name.into(), reason: reason.into() }
    }
}
