//! The one error type of the wire boundary and its one mapping to gRPC codes.
//!
//! Every service handler returns `Result<_, WireError>` internally and turns
//! it into a [`tonic::Status`] with `?`/`into()` at the very edge, so the
//! choice of status code lives here and nowhere else. Variants are what a
//! client can act on: fix its input (`InvalidArgument`), wait or re-sync
//! (`FailedPrecondition`), authenticate (`Unauthenticated`), use another
//! token (`PermissionDenied`), slow down (`ResourceExhausted`), look
//! elsewhere (`NotFound`), or report a bug (`Internal`).
//!
//! Messages are sent to the client verbatim: they must never contain a
//! secret (tokens are never put into a `WireError`).

use peergrid_core::CoreError;
use thiserror::Error;
use tonic::{Code, Status};

#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum WireError {
    /// A field of a request is malformed or out of range. `field` is the path
    /// within the request, e.g. `reports[3].order.quantity_wh`.
    #[error("invalid {field}: {reason}")]
    InvalidArgument { field: String, reason: String },

    /// The request is well-formed but not valid in the current state (a stale
    /// or future slot, a stream that did not start with `Join`, ...).
    #[error("failed precondition: {reason}")]
    FailedPrecondition { reason: String },

    /// The caller is authenticated but its role may not call this endpoint.
    #[error("permission denied: {reason}")]
    PermissionDenied { reason: String },

    /// No credentials, or credentials that match no configured token.
    #[error("unauthenticated: {reason}")]
    Unauthenticated { reason: String },

    /// A size or rate limit was exceeded (oversized batch, flood).
    #[error("resource exhausted: {reason}")]
    ResourceExhausted { reason: String },

    /// An id (session, prosumer) the request refers to does not exist.
    #[error("not found: {what}")]
    NotFound { what: String },

    /// A bug or a server-side failure; the client cannot fix it.
    #[error("internal error: {reason}")]
    Internal { reason: String },
    /// The server is going away (e.g. shutting down for a restart): retry later.
    #[error("unavailable: {reason}")]
    Unavailable { reason: String },
}

impl WireError {
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> WireError {
        WireError::InvalidArgument { field: field.into(), reason: reason.into() }
    }

    pub fn failed_precondition(reason: impl Into<String>) -> WireError {
        WireError::FailedPrecondition { reason: reason.into() }
    }

    /// A status from elsewhere (tonic's decoder, a failed call) as a wire
    /// error of the same code and message, for handlers that forward it.
    pub fn from_status(status: &Status) -> WireError {
        let reason = status.message().to_owned();
        match status.code() {
            Code::InvalidArgument | Code::OutOfRange => WireError::invalid("message", reason),
            Code::FailedPrecondition => WireError::FailedPrecondition { reason },
            Code::PermissionDenied => WireError::PermissionDenied { reason },
            Code::Unauthenticated => WireError::Unauthenticated { reason },
            Code::ResourceExhausted => WireError::ResourceExhausted { reason },
            Code::NotFound => WireError::NotFound { what: reason },
            Code::Unavailable | Code::Cancelled | Code::DeadlineExceeded => {
                WireError::Unavailable { reason }
            }
            _ => WireError::Internal { reason },
        }
    }

    /// The gRPC status code of this error.
    pub fn code(&self) -> Code {
        match self {
            WireError::InvalidArgument { .. } => Code::InvalidArgument,
            WireError::FailedPrecondition { .. } => Code::FailedPrecondition,
            WireError::PermissionDenied { .. } => Code::PermissionDenied,
            WireError::Unauthenticated { .. } => Code::Unauthenticated,
            WireError::ResourceExhausted { .. } => Code::ResourceExhausted,
            WireError::NotFound { .. } => Code::NotFound,
            WireError::Internal { .. } => Code::Internal,
            WireError::Unavailable { .. } => Code::Unavailable,
        }
    }
}

/// The one place a wire error becomes a gRPC status.
impl From<WireError> for Status {
    fn from(e: WireError) -> Status {
        Status::new(e.code(), e.to_string())
    }
}

/// Domain errors reaching the wire were caused by the request (the core
/// validates its inputs), so they are `InvalidArgument`, with the order's
/// position turned into a field path. The exception is a failed file read,
/// which is the server's problem, not the client's.
impl From<CoreError> for WireError {
    fn from(e: CoreError) -> WireError {
        match e {
            CoreError::InvalidField { field, reason } => {
                WireError::InvalidArgument { field, reason }
            }
            CoreError::InvalidOrder { index, id, field, reason } => WireError::invalid(
                format!("orders[{index}].{field}"),
                format!("(order id {id}) {reason}"),
            ),
            CoreError::DuplicateOrderId { index, id } => {
                WireError::invalid(format!("orders[{index}].id"), format!("duplicate id {id}"))
            }
            CoreError::Data { file, line, column, reason } => WireError::invalid(
                column.clone(),
                format!("{file}:{line}: column {column}: {reason}"),
            ),
            e @ CoreError::Io { .. } => WireError::Internal { reason: e.to_string() },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_variant_maps_to_its_code() {
        let cases = [
            (WireError::invalid("slot", "x"), Code::InvalidArgument),
            (WireError::failed_precondition("x"), Code::FailedPrecondition),
            (WireError::PermissionDenied { reason: "x".into() }, Code::PermissionDenied),
            (WireError::Unauthenticated { reason: "x".into() }, Code::Unauthenticated),
            (WireError::ResourceExhausted { reason: "x".into() }, Code::ResourceExhausted),
            (WireError::NotFound { what: "x".into() }, Code::NotFound),
            (WireError::Internal { reason: "x".into() }, Code::Internal),
        ];
        for (e, code) in cases {
            let status = Status::from(e.clone());
            assert_eq!(status.code(), code, "{e}");
            assert_eq!(status.message(), e.to_string());
        }
    }

    #[test]
    fn invalid_argument_names_field_and_reason() {
        let s =
            Status::from(WireError::invalid("reports[3].order.quantity_wh", "must be > 0, got -5"));
        assert_eq!(s.code(), Code::InvalidArgument);
        assert_eq!(s.message(), "invalid reports[3].order.quantity_wh: must be > 0, got -5");
    }

    #[test]
    fn core_errors_become_invalid_argument_with_a_path() {
        let e = WireError::from(CoreError::invalid("reward.co2", "must lie in [0, 1000], got NaN"));
        assert_eq!(e, WireError::invalid("reward.co2", "must lie in [0, 1000], got NaN"));
        let e = WireError::from(CoreError::InvalidOrder {
            index: 2,
            id: 7,
            field: "kwh",
            reason: "must be > 0".into(),
        });
        assert_eq!(e.code(), Code::InvalidArgument);
        assert!(e.to_string().contains("orders[2].kwh"), "{e}");
        let e = WireError::from(CoreError::DuplicateOrderId { index: 4, id: 9 });
        assert!(e.to_string().contains("orders[4].id"), "{e}");
        let io = CoreError::Io { file: "x.csv".into(), source: std::io::Error::other("gone") };
        assert_eq!(WireError::from(io).code(), Code::Internal);
    }
}
