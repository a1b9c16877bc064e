//! The one error type of the domain crate.
//!
//! Every variant names what was wrong (the field, the bound, the file, line and
//! column) so that a boundary (CLI, gRPC) can pass it on verbatim. Functions
//! that return an error leave their inputs and any state untouched.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum CoreError {
    /// A parameter or configuration value is outside its domain.
    #[error("invalid {field}: {reason}")]
    InvalidField { field: String, reason: String },

    /// One order of a book is invalid; `index` is its position in the input.
    #[error("order #{index} (id {id}): invalid {field}: {reason}")]
    InvalidOrder { index: usize, id: u64, field: &'static str, reason: String },

    /// Two orders of one book carry the same id.
    #[error("order #{index}: duplicate id {id}")]
    DuplicateOrderId { index: usize, id: u64 },

    /// A data file is malformed; `line` is 1-based and counts the header.
    #[error("{file}:{line}: column {column}: {reason}")]
    Data { file: String, line: u64, column: String, reason: String },

    /// A file could not be read.
    #[error("{file}: {source}")]
    Io {
        file: String,
        #[source]
        source: std::io::Error,
    },
}

impl CoreError {
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> CoreError {
        CoreError::InvalidField { field: field.into(), reason: reason.into() }
    }

    pub fn data(file: impl Into<String>, line: u64, column: impl Into<String>, reason: impl Into<String>) -> CoreError {
        CoreError::Data { file: file.into(), line, column: column.into(), reason: reason.into() }
    }
}

pub type Result<T, E = CoreError> = std::result::Result<T, E>;
