//! The trainer's error type: every variant names what was wrong.

use std::path::PathBuf;

use peergrid_core::CoreError;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum TrainerError {
    /// A configuration value is outside its domain.
    #[error("invalid {field}: {reason}")]
    Config { field: String, reason: String },

    #[error(transparent)]
    Core(#[from] CoreError),

    /// A checkpoint could not be written or read back.
    #[error("checkpoint: {0}")]
    Checkpoint(String),

    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error(transparent)]
    Runtime(#[from] peergrid_runtime::RuntimeError),

    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),

    #[error("gRPC server: {0}")]
    Serve(String),
}

impl TrainerError {
    pub fn config(field: impl Into<String>, reason: impl Into<String>) -> TrainerError {
        TrainerError::Config { field: field.into(), reason: reason.into() }
    }

    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> TrainerError {
        TrainerError::Io { path: path.into(), source }
    }
}
