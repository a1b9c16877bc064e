//! The one error type of the domain crate.
//!
//! Every variant names what was wrong (the field, the bound, the file, line and
//! column) so that a boundary (CLI, gRPC) can pass it on verbatim. Functions
//! that return an error leave their inputs and any state untouched.

use thiserror::Error;

/// Why a core operation refused its input.
#[derive(Debug, Error)]
pub enum CoreError {
    /// A parameter or configuration value is outside its domain.
    #[error("invalid {field}: {reason}")]
    InvalidField {
        /// The setting or field, as its owner calls it (`tariff.peak_hours`).
        field: String,
        /// What is wrong and what is allowed.
        reason: String,
    },

    /// One order of a book is invalid; `index` is its position in the input.
    #[error("order #{index} (id {id}): invalid {field}: {reason}")]
    InvalidOrder {
        /// Position of the order in the input.
        index: usize,
        /// The order's id.
        id: u64,
        /// The order's offending field.
        field: &'static str,
        /// What is wrong and what is allowed.
        reason: String,
    },

    /// Two orders of one book carry the same id.
    #[error("order #{index}: duplicate id {id}")]
    DuplicateOrderId {
        /// Position of the second order with the id.
        index: usize,
        /// The repeated id.
        id: u64,
    },

    /// A data file is malformed; `line` is 1-based and counts the header.
    #[error("{file}:{line}: column {column}: {reason}")]
    Data {
        /// The file, as the caller named it.
        file: String,
        /// 1-based line, counting the header.
        line: u64,
        /// The column's name.
        column: String,
        /// What is wrong with the cell.
        reason: String,
    },

    /// A file could not be read.
    #[error("{file}: {source}")]
    Io {
        /// The file, as the caller named it.
        file: String,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
}

impl CoreError {
    /// A [`CoreError::InvalidField`] naming `field`.
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> CoreError {
        CoreError::InvalidField { field: field.into(), reason: reason.into() }
    }

    /// A [`CoreError::Data`] at `file:line`, column `column`.
    pub fn data(
        file: impl Into<String>,
        line: u64,
        column: impl Into<String>,
        reason: impl Into<String>,
    ) -> CoreError {
        CoreError::Data { file: file.into(), line, column: column.into(), reason: reason.into() }
    }
}
