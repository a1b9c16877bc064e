//! The market's own error: why the market state refused a request.
//!
//! [`MarketError`] is what [`crate::state`], [`crate::scenario`] and the
//! clock answer with. It names the field of the request that was wrong (its
//! path, `reports[3].prosumer_id`) and the bound or rule it broke; it never
//! names a gRPC code. The gRPC edge maps it to the wire's error in one place
//! (`impl From<MarketError> for WireError` in [`crate::grpc`]), and the text
//! a client reads is this error's `Display`, unchanged: each variant prints
//! the same words as the wire error it becomes.
//!
//! Messages are sent to clients verbatim: they must never contain a secret.

use peergrid_core::CoreError;
use thiserror::Error;

#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum MarketError {
    /// A field is malformed or out of its bound; the client must fix it.
    #[error("invalid {field}: {reason}")]
    Invalid { field: String, reason: String },

    /// Well-formed but not valid now: not the open slot, a batch already
    /// sent, a connection that was replaced, an offline prosumer, ids
    /// another node holds. The client re-syncs or waits.
    #[error("failed precondition: {field}: {reason}")]
    Precondition { field: String, reason: String },

    /// The caller does not own what it names: a wrong session secret, a
    /// prosumer hosted by another node.
    #[error("permission denied: {field}: {reason}")]
    Forbidden { field: String, reason: String },

    /// A limit of the market was reached: prosumers hosted, scenario
    /// events in force, a scenario's size.
    #[error("resource exhausted: {field}: {reason}")]
    Exhausted { field: String, reason: String },

    /// What the request refers to does not exist (a session the market
    /// does not know).
    #[error("not found: {field}: {reason}")]
    NotFound { field: String, reason: String },

    /// The market cannot answer (its clock stopped); not the client's fault.
    #[error("internal error: {reason}")]
    Internal { reason: String },
}

impl MarketError {
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> MarketError {
        MarketError::Invalid { field: field.into(), reason: reason.into() }
    }

    pub fn precondition(field: impl Into<String>, reason: impl Into<String>) -> MarketError {
        MarketError::Precondition { field: field.into(), reason: reason.into() }
    }

    pub fn forbidden(field: impl Into<String>, reason: impl Into<String>) -> MarketError {
        MarketError::Forbidden { field: field.into(), reason: reason.into() }
    }

    pub fn exhausted(field: impl Into<String>, reason: impl Into<String>) -> MarketError {
        MarketError::Exhausted { field: field.into(), reason: reason.into() }
    }

    pub fn not_found(field: impl Into<String>, reason: impl Into<String>) -> MarketError {
        MarketError::NotFound { field: field.into(), reason: reason.into() }
    }
}

/// The core validates what the state hands it (envelopes, reports, orders):
/// its refusals are the request's fault, named by field path exactly as the
/// wire names them (`orders[2].limit_price`). A failed file read cannot come
/// from a request; it would be the server's problem.
impl From<CoreError> for MarketError {
    fn from(e: CoreError) -> MarketError {
        match e {
            CoreError::InvalidField { field, reason } => MarketError::Invalid { field, reason },
            CoreError::InvalidOrder { index, id, field, reason } => MarketError::invalid(
                format!("orders[{index}].{field}"),
                format!("(order id {id}) {reason}"),
            ),
            CoreError::DuplicateOrderId { index, id } => {
                MarketError::invalid(format!("orders[{index}].id"), format!("duplicate id {id}"))
            }
            CoreError::Data { file, line, column, reason } => MarketError::invalid(
                column.clone(),
                format!("{file}:{line}: column {column}: {reason}"),
            ),
            e @ CoreError::Io { .. } => MarketError::Internal { reason: e.to_string() },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_field_and_the_bound() {
        let e = MarketError::invalid("reports[3].pv_kwh", "must lie in [0, 5], got 9");
        assert_eq!(e.to_string(), "invalid reports[3].pv_kwh: must lie in [0, 5], got 9");
        let e = MarketError::precondition("slot", "the open slot is 4, got a batch for slot 3");
        assert_eq!(
            e.to_string(),
            "failed precondition: slot: the open slot is 4, got a batch for slot 3"
        );
        let e = MarketError::not_found("session_id", "no such session");
        assert_eq!(e.to_string(), "not found: session_id: no such session");
    }

    #[test]
    fn core_refusals_keep_their_field_path() {
        let e = MarketError::from(CoreError::InvalidOrder {
            index: 2,
            id: 7,
            field: "limit_price",
            reason: "too high".into(),
        });
        assert_eq!(e, MarketError::invalid("orders[2].limit_price", "(order id 7) too high"));
        let e = MarketError::from(CoreError::invalid("prosumers[0].pv_kwp", "must be ≥ 0"));
        assert_eq!(e.to_string(), "invalid prosumers[0].pv_kwp: must be ≥ 0");
    }
}
