//! The gRPC edge: `MarketService` and `ControlService` over the clock.
//!
//! The only file of the market-node that names generated types. Each
//! handler authenticates (`peergrid_runtime::auth`: agent token for
//! Register/Session, either token for Status/Watch, operator token for
//! Control), converts wire → domain with `peergrid_proto::convert` (which
//! validates and names the failing field), asks the clock, and converts the
//! answer back. Every error leaves as a `WireError` → `Status`, counted in
//! the `rejected` metric by reason; the market's own refusals
//! (`MarketError`) become wire errors here, in one `From` impl.
//!
//! A session is a bidi stream: the node's first message is `Join` (with the
//! session's secret), then one `OrderBatch` per slot, preceded by a `Hold`
//! when the node waits for the learner; the market sends `SlotOpen` and
//! `SlotCleared` through the node's bounded queue. A refused batch or hold
//! (late, invalid, ...) is answered in-stream with `BatchRefused` — nothing
//! of it is stored, it is counted by reason, and the session stays open.
//! Only a replaced connection (the clock ends the old stream when the node
//! rejoins) or a stopping market ends the stream.

use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use peergrid_core::household::HouseholdReport;
use peergrid_core::market::PriceBounds;
use peergrid_proto::convert::cleared::slot_cleared_to_wire;
use peergrid_proto::convert::slot::{report_from_wire_at, slot_open_to_wire};
use peergrid_proto::convert::{envelope_from_wire, index, reward_weights_to_json};
use peergrid_proto::pb::control::v1 as control;
use peergrid_proto::pb::market::v1 as market;
use peergrid_proto::WireError;
use peergrid_runtime::{
    authorize, authorize_reader, GrpcListener, RequireToken, Role, ServeOptions, Services,
    SettingNames, Shutdown, Target, Tokens, MAX_MESSAGE_BYTES,
};
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::codec::CompressionEncoding;
use tonic::service::interceptor::InterceptedService;
use tonic::{Request, Response, Status, Streaming};

use control::control_service_server::{ControlService, ControlServiceServer};
use market::market_service_server::{MarketService, MarketServiceServer};

use crate::clock::{
    ClockHandle, ControlCommand, ControlOutcome, MarketEvent, NodeEvent, OwnedRegister, Refused,
    NODE_QUEUE,
};
use crate::config::ClockMode;
use crate::error::MarketError;
use crate::metrics::MarketMetrics;
use crate::scenario::{FeederLimit, ScaleGroup, ScenarioEvent, TakeOffline, TariffOverride};
use crate::state::{check_open_slot, ProsumerInfo, SlotSummary, StatusSnapshot};

mod control_service;
mod market_service;

use control_service::*;
use market_service::*;

// The state machine's property test drives the market with what these decode.
#[cfg(test)]
pub(crate) use control_service::{inject_from_wire, mode_from_wire};
#[cfg(test)]
pub(crate) use market_service::{batch_from_wire, prosumers_from_wire};

/// What both services share.
#[derive(Clone)]
pub(super) struct Edge {
    clock: ClockHandle,
    tokens: Arc<Tokens>,
    metrics: MarketMetrics,
    max_batch: usize,
    node_timeout: Duration,
    shutdown: Shutdown,
    /// Batches and holds refused in-stream (for `Status`).
    refused: Arc<std::sync::atomic::AtomicU64>,
}

/// The one place a market refusal becomes a wire error: same words, and
/// the gRPC code its variant stands for.
impl From<MarketError> for WireError {
    fn from(e: MarketError) -> WireError {
        // The wire's non-argument errors carry one reason; the market's name
        // the field first, as the wire's messages always did.
        let reason = |field: String, reason: String| format!("{field}: {reason}");
        match e {
            MarketError::Invalid { field, reason } => WireError::InvalidArgument { field, reason },
            MarketError::Precondition { field, reason: r } => {
                WireError::FailedPrecondition { reason: reason(field, r) }
            }
            MarketError::Forbidden { field, reason: r } => {
                WireError::PermissionDenied { reason: reason(field, r) }
            }
            MarketError::Exhausted { field, reason: r } => {
                WireError::ResourceExhausted { reason: reason(field, r) }
            }
            MarketError::NotFound { field, reason: r } => {
                WireError::NotFound { what: reason(field, r) }
            }
            MarketError::Internal { reason } => WireError::Internal { reason },
        }
    }
}

impl Edge {
    /// A market that is stopping takes no new node: a node that joined now
    /// would hold a session with a process about to exit (and, learning,
    /// could wait for its trainer on it while the next market waits for
    /// its prosumers). UNAVAILABLE: it reconnects, to the restarted market.
    pub(super) fn refuse_while_stopping(&self) -> Result<(), Status> {
        if self.shutdown.is_shutdown() {
            let reason = "market-node shutting down; reconnect and resume".to_owned();
            return Err(self.fail(WireError::Unavailable { reason }));
        }
        Ok(())
    }

    fn fail(&self, e: impl Into<WireError>) -> Status {
        let e = e.into();
        self.metrics.reject(e.code());
        e.into()
    }

    fn auth(&self, result: Result<Role, Status>) -> Result<Role, Status> {
        result.inspect_err(|s| self.metrics.reject(s.code()))
    }
}

pub(super) type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// Everything the server needs besides the listener.
pub struct ServeParams {
    /// How connections are admitted (cap, handshake deadline, TLS) and how
    /// long open calls get after `stop`.
    pub options: ServeOptions,
    pub clock: ClockHandle,
    pub tokens: Arc<Tokens>,
    pub metrics: MarketMetrics,
    pub max_batch: usize,
    pub node_timeout: Duration,
    pub shutdown: Shutdown,
}

/// Serves both peergrid services plus health and reflection on `listener`
/// (TCP, or in-process for the embedded run) until `stop` resolves, then
/// drains open calls (`peergrid_runtime::serve`).
pub async fn serve(
    listener: GrpcListener,
    params: ServeParams,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let edge = Edge {
        clock: params.clock,
        tokens: params.tokens,
        metrics: params.metrics,
        max_batch: params.max_batch,
        node_timeout: params.node_timeout,
        shutdown: params.shutdown,
        refused: Arc::default(),
    };
    // Accept gzip (the only compression Python clients speak) but answer
    // uncompressed: on a LAN, compressing a 10,000-prosumer SlotCleared costs
    // more CPU time than the bytes it saves. Both services sit behind
    // `RequireToken`: a caller without a valid token is refused on its
    // headers, before its body is read or decompressed; handlers then check
    // the role their method needs.
    let market = MarketServiceServer::new(Market(edge.clone()))
        .accept_compressed(CompressionEncoding::Gzip)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let market = InterceptedService::new(market, RequireToken::new(Arc::clone(&edge.tokens)));
    let control = ControlServiceServer::new(Control(edge.clone()))
        .accept_compressed(CompressionEncoding::Gzip)
        .send_compressed(CompressionEncoding::Gzip)
        .max_decoding_message_size(MAX_MESSAGE_BYTES);
    let control = InterceptedService::new(control, RequireToken::new(Arc::clone(&edge.tokens)));
    let services =
        Services::new(peergrid_proto::FILE_DESCRIPTOR_SET).add_service(market).add_service(control);
    peergrid_runtime::serve(listener, services, stop, params.options).await?;
    Ok(())
}

/// The names the `health` subcommand gives its settings, for errors.
pub const HEALTH_SETTINGS: SettingNames =
    SettingNames { url: "--addr", ca: "--tls-ca", domain: "--tls-domain" };

/// Asks the gRPC health service at `addr` (e.g. `http://127.0.0.1:50051`,
/// `https://…` trusting the PEM CA `ca`, or `local://NAME` in this
/// process) whether the market is serving.
pub async fn check_health(
    addr: &str,
    ca: Option<&Path>,
    domain: Option<&str>,
) -> anyhow::Result<bool> {
    let target = Target { url: addr, ca, domain, names: HEALTH_SETTINGS };
    Ok(target.check_health(peergrid_proto::services::MARKET_SERVICE).await?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use peergrid_core::units::PricePerKwh;
    use tonic::Code;

    #[test]
    fn market_refusals_keep_their_words_and_take_their_code() {
        let cases = [
            (MarketError::invalid("reports[0].pv_kwh", "too much"), Code::InvalidArgument),
            (
                MarketError::precondition("slot", "the open slot is 4, got a batch for slot 3"),
                Code::FailedPrecondition,
            ),
            (
                MarketError::forbidden("resume_secret", "does not match the session"),
                Code::PermissionDenied,
            ),
            (MarketError::exhausted("event", "too many"), Code::ResourceExhausted),
            (MarketError::not_found("session_id", "no such session"), Code::NotFound),
            (
                MarketError::Internal { reason: "the market clock has stopped".into() },
                Code::Internal,
            ),
        ];
        for (e, code) in cases {
            let wire = WireError::from(e.clone());
            assert_eq!((wire.code(), wire.to_string()), (code, e.to_string()));
        }
    }

    #[test]
    fn a_batch_is_counted_before_it_is_decoded_and_must_name_the_open_slot() {
        let bounds = PriceBounds { feed_in: PricePerKwh(50_000), retail: PricePerKwh(300_000) };
        // Reports too broken to decode: the size is refused first.
        let broken =
            market::HouseholdReport { load_kwh: f64::NAN, ..market::HouseholdReport::default() };
        let batch = market::OrderBatch { slot: 3, reports: vec![broken; 3] };
        let e = batch_from_wire(&batch, Some((3, bounds)), 2).unwrap_err();
        assert_eq!(
            (e.code(), e.to_string()),
            (
                Code::ResourceExhausted,
                "resource exhausted: reports: 3 reports exceed the batch limit of 2".into()
            )
        );
        // A late batch is late, whatever its reports.
        let e = batch_from_wire(&batch, Some((4, bounds)), 8).unwrap_err();
        assert_eq!(
            e.to_string(),
            "failed precondition: slot: the open slot is 4, got a batch for slot 3"
        );
        let e = batch_from_wire(&batch, None, 8).unwrap_err();
        assert_eq!(
            e.to_string(),
            "failed precondition: slot: no slot is open, got a batch for slot 3"
        );
        let e = batch_from_wire(&batch, Some((3, bounds)), 8).unwrap_err();
        assert!(e.to_string().contains("reports[0].load_kwh"), "{e}");
        let fine =
            market::OrderBatch { slot: 3, reports: vec![market::HouseholdReport::default(); 2] };
        assert_eq!(batch_from_wire(&fine, Some((3, bounds)), 2).unwrap().len(), 2);
    }
}
