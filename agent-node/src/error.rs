//! The agent-node's one error type, [`AgentError`], with variants a caller
//! can act on: bad configuration (exit 2, fix the flags:
//! [`AgentError::is_bad_input`]), a market that
//! refused us for good (stop), a connection problem (reconnect with backoff),
//! or a protocol breach by the market (reconnect; the households keep their
//! state). [`AgentError::is_retryable`] is the one place that decides which
//! is which.

use peergrid_core::error::CoreError;
use peergrid_proto::WireError;
use thiserror::Error;
use tonic::Code;

#[derive(Debug, Error)]
pub enum AgentError {
    /// A setting is missing or out of range; `field` names it as in the config.
    #[error("invalid {field}: {reason}")]
    Config { field: String, reason: String },

    /// The dataset, the community or the policy could not be built.
    #[error(transparent)]
    Core(#[from] CoreError),

    /// The market or the trainer could not be reached (refused, reset,
    /// DNS, TLS, no in-process listener of that name...).
    #[error("cannot reach {url}: {reason}")]
    Connect { url: String, reason: String },

    /// A gRPC call or the session stream failed with this status.
    #[error("market call failed: {0}")]
    Rpc(#[from] tonic::Status),

    /// The market sent a message the contract does not allow.
    #[error("market sent invalid data: {0}")]
    Wire(#[from] WireError),

    /// The market broke the session protocol (wrong order of messages,
    /// foreign prosumer ids, a changed id range on resume...).
    #[error("protocol error: {0}")]
    Protocol(String),

    /// The market's run does not match this node (another dataset or slot
    /// length, or a resumed session came back with a different id range
    /// while the households already hold state). Retrying cannot fix it.
    #[error("the market's run does not match this node: {0}")]
    Incompatible(String),

    /// An actor's mailbox is gone: the actor system stopped or an actor
    /// panicked. The node cannot continue without its households.
    #[error("prosumer actors stopped: {0}")]
    Actors(String),
}

/// Runtime errors come from settings (tokens, TLS files, URLs: named as
/// the runtime names them) or from dialling (worth a retry).
impl From<peergrid_runtime::RuntimeError> for AgentError {
    fn from(e: peergrid_runtime::RuntimeError) -> AgentError {
        use peergrid_runtime::RuntimeError;
        match e {
            RuntimeError::Config { name, reason } => AgentError::Config { field: name, reason },
            RuntimeError::Io { name, path, source } => {
                AgentError::config(name, format!("cannot read {path}: {source}"))
            }
            RuntimeError::Connect { url, reason } => AgentError::Connect { url, reason },
            other => AgentError::config("runtime", other.to_string()),
        }
    }
}

impl AgentError {
    pub fn config(field: impl Into<String>, reason: impl Into<String>) -> AgentError {
        AgentError::Config { field: field.into(), reason: reason.into() }
    }

    pub fn protocol(reason: impl Into<String>) -> AgentError {
        AgentError::Protocol(reason.into())
    }

    /// Whether the user's settings are at fault (the process exits 2,
    /// through `peergrid_runtime::exit_code`).
    pub fn is_bad_input(&self) -> bool {
        matches!(self, AgentError::Config { .. })
    }

    /// Whether reconnecting may help. Authentication, invalid arguments,
    /// configuration and actor failures do not get better by retrying.
    pub fn is_retryable(&self) -> bool {
        match self {
            AgentError::Connect { .. } | AgentError::Wire(_) | AgentError::Protocol(_) => true,
            AgentError::Rpc(status) => !matches!(
                status.code(),
                Code::Unauthenticated
                    | Code::PermissionDenied
                    | Code::InvalidArgument
                    | Code::FailedPrecondition
                    | Code::Unimplemented
                    | Code::NotFound
            ),
            AgentError::Config { .. }
            | AgentError::Core(_)
            | AgentError::Incompatible(_)
            | AgentError::Actors(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_only_what_can_heal() {
        assert!(AgentError::Rpc(tonic::Status::unavailable("down")).is_retryable());
        assert!(
            AgentError::Connect { url: "http://x".into(), reason: "refused".into() }.is_retryable()
        );
        assert!(AgentError::protocol("cleared before open").is_retryable());
        assert!(!AgentError::Rpc(tonic::Status::unauthenticated("bad token")).is_retryable());
        assert!(!AgentError::Rpc(tonic::Status::invalid_argument("prosumer_count")).is_retryable());
        assert!(!AgentError::config("prosumers", "must be ≥ 1").is_retryable());
        assert!(!AgentError::Actors("mailbox closed".into()).is_retryable());
        assert!(!AgentError::Incompatible("dataset".into()).is_retryable());
    }
}
