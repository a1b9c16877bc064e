//! The one error type of the runtime crate: start-up problems a node reports
//! and exits on (bad token or TLS configuration, unreadable token, key or
//! CA files), a server a client could not reach ([`RuntimeError::Connect`],
//! worth retrying), a gRPC server that failed ([`crate::serve()`]), and the
//! failures of TensorBoard event files ([`crate::tfevents`]). Request-time
//! auth failures are `tonic::Status` values, not this type.

use std::path::PathBuf;

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

    /// A client could not reach the server at `url` (refused, timed out, TLS
    /// handshake failed); `reason` is the whole error chain.
    #[error("cannot connect to {url}: {reason}")]
    Connect { url: String, reason: String },

    /// The server at `url` answered its health check with NOT_SERVING.
    #[error("{url} is not serving")]
    NotServing { url: String },

    /// The reflection service cannot read the node's descriptor set.
    #[error("gRPC reflection: {0}")]
    Reflection(#[source] tonic_reflection::server::Error),

    /// The gRPC server failed (its listener, a connection it could not serve).
    #[error("gRPC server: {0}")]
    Serve(#[source] tonic::transport::Error),

    /// A TensorBoard event file (or its log directory) could not be created,
    /// written, flushed or read.
    #[error("event file {}: {source}", path.display())]
    EventFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// An event file holds bytes that are not a valid record: a CRC mismatch,
    /// a truncated record or an undecodable event. `offset` is where the bad
    /// record starts.
    #[error("event file {}: corrupt record at byte {offset}: {reason}", path.display())]
    CorruptEventFile { path: PathBuf, offset: u64, reason: String },
}

impl RuntimeError {
    pub fn config(name: impl Into<String>, reason: impl Into<String>) -> RuntimeError {
        RuntimeError::Config { name: name.into(), reason: reason.into() }
    }
}
