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
    authorize, authorize_reader, serve_until, status_layer, track_calls, Acceptor, GrpcListener,
    RequireToken, Role, SettingNames, Shutdown, Target, Tokens, MAX_MESSAGE_BYTES,
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

/// What both services share.
#[derive(Clone)]
struct Edge {
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
    fn fail(&self, e: impl Into<WireError>) -> Status {
        let e = e.into();
        self.metrics.reject(e.code());
        e.into()
    }

    fn auth(&self, result: Result<Role, Status>) -> Result<Role, Status> {
        result.inspect_err(|s| self.metrics.reject(s.code()))
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

struct Market(Edge);

#[tonic::async_trait]
impl MarketService for Market {
    type SessionStream = BoxStream<market::MarketMessage>;
    type WatchStream = BoxStream<market::MarketEvent>;

    async fn register(
        &self,
        request: Request<market::RegisterRequest>,
    ) -> Result<Response<market::RegisterResponse>, Status> {
        let edge = &self.0;
        edge.auth(authorize(request.metadata(), Role::Agent, &edge.tokens))?;
        let r = request.into_inner();
        let request = OwnedRegister {
            name: r.node_name,
            prosumer_count: r.prosumer_count,
            resume_session_id: r.resume_session_id,
            resume_first_id: r.resume_first_prosumer_id,
            resume_secret: r.resume_secret,
        };
        let reg = edge.clock.register(request).await.map_err(|e| edge.fail(e))?;
        Ok(Response::new(market::RegisterResponse {
            resume_secret: reg.secret,
            lease_grace_ms: reg.lease_grace_ms,
            session_id: reg.session_id,
            first_prosumer_id: reg.first_prosumer_id,
            prosumer_count: reg.prosumer_count,
            dataset: reg.dataset,
            slot_minutes: reg.slot_minutes,
            reward_weights_json: reward_weights_to_json(&reg.reward).map_err(|e| edge.fail(e))?,
            next_slot: reg.next_slot,
        }))
    }

    async fn session(
        &self,
        request: Request<Streaming<market::NodeMessage>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        let edge = self.0.clone();
        edge.auth(authorize(request.metadata(), Role::Agent, &edge.tokens))?;
        let mut inbound = request.into_inner();
        let first =
            tokio::time::timeout(edge.node_timeout, inbound.message()).await.map_err(|_| {
                edge.fail(WireError::failed_precondition(
                    "join: no Join message within the node timeout",
                ))
            })??;
        let Some(market::NodeMessage { msg: Some(market::node_message::Msg::Join(join)) }) = first
        else {
            return Err(edge.fail(WireError::failed_precondition(
                "join: the first message of a session must be Join",
            )));
        };
        let prosumers = prosumers_from_wire(&join.prosumers).map_err(|e| edge.fail(e))?;
        let (tx, rx) = mpsc::channel(NODE_QUEUE);
        let key = edge
            .clock
            .join(join.session_id, join.resume_secret, prosumers, tx.clone())
            .await
            .map_err(|e| edge.fail(e))?;
        tokio::spawn(async move {
            let mut shutdown = edge.shutdown.clone();
            loop {
                let message = tokio::select! {
                    _ = shutdown.recv() => {
                        if !edge.clock.is_finished() {
                            // This process stops, the run does not (e.g. a
                            // restart): tell the node to reconnect and resume,
                            // rather than end its stream as a finished run does.
                            let reason = "market-node shutting down; reconnect and resume".to_owned();
                            let _ = tx.send(NodeEvent::Rejected(WireError::Unavailable { reason })).await;
                        }
                        break;
                    }
                    m = inbound.message() => m,
                };
                let refused = match message {
                    Ok(Some(market::NodeMessage {
                        msg: Some(market::node_message::Msg::Batch(batch)),
                    })) => {
                        let slot = batch.slot;
                        accept_batch(&edge, key, batch).await.err().map(|e| (slot, e))
                    }
                    Ok(Some(market::NodeMessage {
                        msg: Some(market::node_message::Msg::Hold(hold)),
                    })) => accept_hold(&edge, key, &hold).await.err().map(|e| (hold.slot, e)),
                    Ok(Some(_)) => Some((
                        0,
                        WireError::failed_precondition(
                            "join: only OrderBatch and Hold messages may follow Join",
                        ),
                    )),
                    Ok(None) => break,
                    // An over-limit or undecodable message: end the stream
                    // with the reason, never with a bare OK.
                    Err(status) => {
                        tracing::debug!(%status, "session stream ended");
                        let error = WireError::from_status(
                            &peergrid_runtime::serve::normalise_status(status),
                        );
                        let _ = tx.send(NodeEvent::Rejected(error)).await;
                        break;
                    }
                };
                if let Some((slot, error)) = refused {
                    let reason = refusal_reason(&edge, slot, &error);
                    tracing::info!(slot, reason, error = %error, "batch refused; the session stays open");
                    edge.metrics.refuse(reason);
                    edge.refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    edge.metrics.reject(error.code());
                    // The refusal rides the node's queue behind what the clock
                    // already sent; a full queue waits (this task only serves this node).
                    if tx.send(NodeEvent::Refused(Refused { slot, error, reason })).await.is_err() {
                        break;
                    }
                }
            }
            edge.clock.disconnect(key).await;
        });
        let out = ReceiverStream::new(rx).map(node_event_to_wire);
        Ok(Response::new(Box::pin(out)))
    }

    async fn watch(
        &self,
        request: Request<market::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let edge = &self.0;
        edge.auth(authorize_reader(request.metadata(), &edge.tokens))?;
        let mut events = edge.clock.subscribe();
        let mut shutdown = edge.shutdown.clone();
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                let event = tokio::select! {
                    _ = shutdown.recv() => break,
                    _ = tx.closed() => break,
                    e = events.recv() => e,
                };
                match event {
                    Ok(e) => {
                        if tx.send(Ok(market_event_to_wire(e))).await.is_err() {
                            break;
                        }
                    }
                    // A slow watcher skips summaries; the clock never waits for it.
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::debug!(skipped = n, "watcher lagging")
                    }
                    Err(broadcast::error::RecvError::Closed) => break,
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn status(
        &self,
        request: Request<market::StatusRequest>,
    ) -> Result<Response<market::StatusResponse>, Status> {
        let edge = &self.0;
        edge.auth(authorize_reader(request.metadata(), &edge.tokens))?;
        let status = edge.clock.status().await.map_err(|e| edge.fail(e))?;
        Ok(Response::new(status_to_wire(
            &status,
            edge.refused.load(std::sync::atomic::Ordering::Relaxed),
        )))
    }
}

/// Decodes a batch and hands the domain reports to the clock, whose state
/// checks what only it knows (session, round, ids, equipment) and stores
/// the batch only if all of it is valid.
async fn accept_batch(
    edge: &Edge,
    key: crate::state::NodeKey,
    batch: market::OrderBatch,
) -> Result<usize, WireError> {
    let reports = batch_from_wire(&batch, edge.clock.open_bounds(), edge.max_batch)?;
    Ok(edge.clock.submit(key, batch.slot, reports).await?)
}

/// A `Join`'s prosumer descriptions as the state takes them: every
/// envelope decoded and validated here, once (the state checks the
/// session, the secret and the id range, and only asserts the envelopes).
pub(crate) fn prosumers_from_wire(
    prosumers: &[market::ProsumerSummary],
) -> Result<Vec<ProsumerInfo>, WireError> {
    prosumers
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let envelope = envelope_from_wire(p, &index("prosumers", i))?;
            Ok(ProsumerInfo { prosumer_id: p.prosumer_id, envelope })
        })
        .collect()
}

/// The edge's checks of a batch, each made here and nowhere else: at most
/// `max_batch` reports (counted before any is decoded), then every report
/// decoded and validated against the tariff of the slot last seen open
/// (`open`). That slot must be the batch's ([`check_open_slot`], the
/// state's rule): a late batch is refused as late rather than judged by
/// another slot's prices. The state checks the slot again, against its
/// round, which may have moved on since.
pub(crate) fn batch_from_wire(
    batch: &market::OrderBatch,
    open: Option<(u64, PriceBounds)>,
    max_batch: usize,
) -> Result<Vec<HouseholdReport>, WireError> {
    if batch.reports.len() > max_batch {
        return Err(WireError::ResourceExhausted {
            reason: format!(
                "reports: {} reports exceed the batch limit of {max_batch}",
                batch.reports.len()
            ),
        });
    }
    check_open_slot(open.map(|(slot, _)| slot), batch.slot, "a batch")?;
    let Some((_, bounds)) = open else {
        unreachable!("check_open_slot refuses a batch when no slot is open")
    };
    batch
        .reports
        .iter()
        .enumerate()
        .map(|(i, w)| report_from_wire_at(w, bounds, &|| index("reports", i)))
        .collect()
}

/// Validates a hold at the edge and asks the clock to hold the open slot.
async fn accept_hold(
    edge: &Edge,
    key: crate::state::NodeKey,
    hold: &market::Hold,
) -> Result<(), WireError> {
    let chars = hold.reason.chars().count();
    if !(1..=32).contains(&chars) || hold.reason.chars().any(char::is_control) {
        return Err(WireError::invalid(
            "hold.reason",
            format!("must be 1..=32 printable characters, got {chars}"),
        ));
    }
    edge.clock.hold(key, hold.slot).await?;
    Ok(())
}

/// The metric label of a refusal: a batch for a slot that is not the open
/// one is late (or early); otherwise by what was wrong.
fn refusal_reason(edge: &Edge, slot: u64, error: &WireError) -> &'static str {
    use tonic::Code;
    match error.code() {
        _ if edge.clock.open_bounds().is_none_or(|(open, _)| open != slot) => "late",
        Code::ResourceExhausted => "too_large",
        Code::PermissionDenied => "foreign",
        Code::FailedPrecondition if error.to_string().contains("already sent") => "duplicate",
        Code::FailedPrecondition if error.to_string().contains("offline") => "offline",
        _ => "invalid",
    }
}

fn node_event_to_wire(event: NodeEvent) -> Result<market::MarketMessage, Status> {
    use market::market_message::Msg;
    let msg = match event {
        NodeEvent::Open(open) => Msg::Open(slot_open_to_wire(&open)),
        NodeEvent::Cleared(c) => Msg::Cleared(slot_cleared_to_wire(&c)),
        NodeEvent::Replaced => {
            let reason = "session: replaced by a newer connection of this node".to_owned();
            return Err(WireError::FailedPrecondition { reason }.into());
        }
        NodeEvent::Refused(r) => Msg::Refused(market::BatchRefused {
            slot: r.slot,
            code: r.error.code() as i32,
            message: r.error.to_string(),
            reason: r.reason.to_owned(),
        }),
        NodeEvent::Rejected(e) => return Err(e.into()),
    };
    Ok(market::MarketMessage { msg: Some(msg) })
}

fn market_event_to_wire(event: MarketEvent) -> market::MarketEvent {
    use market::market_event::Event;
    let event = match event {
        MarketEvent::Slot(s) => Event::Slot(summary_to_wire(&s)),
        MarketEvent::Notice(text) => Event::Notice(text),
    };
    market::MarketEvent { event: Some(event) }
}

fn summary_to_wire(s: &SlotSummary) -> market::SlotSummary {
    market::SlotSummary {
        slot: s.slot,
        data_slot: s.data_slot,
        clearing_price_micros: s.clearing_price.map(|p| p.0),
        matched_kwh: s.matched_kwh,
        grid_import_kwh: s.grid_import_kwh,
        grid_export_kwh: s.grid_export_kwh,
        load_kwh: s.load_kwh,
        pv_kwh: s.pv_kwh,
        reported: s.reported,
        missing: s.missing,
        clearing_latency_ms: s.clearing_latency_ms,
        absent: s.absent,
        held_ms: s.held_ms,
    }
}

fn status_to_wire(s: &StatusSnapshot, batches_refused: u64) -> market::StatusResponse {
    market::StatusResponse {
        slot: s.next_slot,
        // Connected, not merely registered: what an operator scaling the
        // cluster wants to see grow and shrink.
        prosumers: u32::try_from(s.connected_prosumers).unwrap_or(u32::MAX),
        nodes: s.connected_nodes,
        mode: s.mode.name().to_owned(),
        paused: s.paused,
        slot_period_ms: s.slot_period_ms,
        energy_balance_error_kwh: s.energy_balance_error_kwh,
        money_balance_error: s.money_balance_error,
        kpis: Some((&s.kpis).into()),
        missing_reports: s.missing_reports,
        absent_reports: s.absent_reports,
        absent_prosumers: s.absent_prosumers,
        holds: s.holds,
        holds_expired: s.holds_expired,
        batches_refused,
        leases_expired: s.leases_expired,
    }
}

struct Control(Edge);

impl Control {
    async fn run(
        &self,
        metadata: &tonic::metadata::MetadataMap,
        command: ControlCommand,
    ) -> Result<Response<control::ControlReply>, Status> {
        let edge = &self.0;
        edge.auth(authorize(metadata, Role::Operator, &edge.tokens))?;
        let ControlOutcome { message, slot } =
            edge.clock.control(command).await.map_err(|e| edge.fail(e))?;
        Ok(Response::new(control::ControlReply { message, slot }))
    }

    fn command<T>(&self, result: Result<T, WireError>) -> Result<T, Status> {
        result.map_err(|e| self.0.fail(e))
    }
}

pub(crate) fn inject_from_wire(r: control::InjectRequest) -> Result<ScenarioEvent, WireError> {
    use control::inject_request::Event;
    Ok(match r.event.ok_or_else(|| WireError::invalid("event", "is required"))? {
        Event::Scale(s) => ScenarioEvent::Scale(ScaleGroup {
            first_prosumer_id: s.first_prosumer_id,
            last_prosumer_id: s.last_prosumer_id,
            pv_scale: s.pv_scale,
            load_scale: s.load_scale,
            slots: s.slots,
        }),
        Event::Tariff(t) => ScenarioEvent::Tariff(TariffOverride {
            retail_per_kwh: t.retail_per_kwh,
            feed_in_per_kwh: t.feed_in_per_kwh,
            slots: t.slots,
        }),
        Event::Feeder(f) => ScenarioEvent::Feeder(FeederLimit {
            import_limit_kw: f.import_limit_kw,
            export_limit_kw: f.export_limit_kw,
        }),
        Event::Offline(o) => ScenarioEvent::Offline(TakeOffline {
            first_prosumer_id: o.first_prosumer_id,
            last_prosumer_id: o.last_prosumer_id,
            slots: o.slots,
        }),
    })
}

pub(crate) fn mode_from_wire(r: &control::SetModeRequest) -> Result<ControlCommand, WireError> {
    let mode = match control::Mode::try_from(r.mode) {
        Ok(control::Mode::Fast) => ClockMode::Fast,
        Ok(control::Mode::RealTime) => ClockMode::RealTime,
        _ => {
            return Err(WireError::invalid(
                "mode",
                format!("must be MODE_FAST or MODE_REAL_TIME, got {}", r.mode),
            ))
        }
    };
    Ok(ControlCommand::SetMode {
        mode,
        slot_period_ms: r.slot_period_ms,
        deadline_ms: r.deadline_ms,
    })
}

#[tonic::async_trait]
impl ControlService for Control {
    async fn start(
        &self,
        request: Request<control::Empty>,
    ) -> Result<Response<control::ControlReply>, Status> {
        self.run(request.metadata(), ControlCommand::Start).await
    }

    async fn pause(
        &self,
        request: Request<control::Empty>,
    ) -> Result<Response<control::ControlReply>, Status> {
        self.run(request.metadata(), ControlCommand::Pause).await
    }

    async fn resume(
        &self,
        request: Request<control::Empty>,
    ) -> Result<Response<control::ControlReply>, Status> {
        self.run(request.metadata(), ControlCommand::Resume).await
    }

    async fn step(
        &self,
        request: Request<control::StepRequest>,
    ) -> Result<Response<control::ControlReply>, Status> {
        let count = request.get_ref().count;
        self.run(request.metadata(), ControlCommand::Step(count)).await
    }

    async fn set_mode(
        &self,
        request: Request<control::SetModeRequest>,
    ) -> Result<Response<control::ControlReply>, Status> {
        self.0.auth(authorize(request.metadata(), Role::Operator, &self.0.tokens))?;
        let command = self.command(mode_from_wire(request.get_ref()))?;
        self.run(request.metadata(), command).await
    }

    async fn load_scenario(
        &self,
        request: Request<control::LoadScenarioRequest>,
    ) -> Result<Response<control::ControlReply>, Status> {
        let json = request.get_ref().scenario_json.clone();
        self.run(request.metadata(), ControlCommand::LoadScenario(json)).await
    }

    async fn inject(
        &self,
        request: Request<control::InjectRequest>,
    ) -> Result<Response<control::ControlReply>, Status> {
        self.0.auth(authorize(request.metadata(), Role::Operator, &self.0.tokens))?;
        let (metadata, _, inner) = request.into_parts();
        let event = self.command(inject_from_wire(inner))?;
        self.run(&metadata, ControlCommand::Inject(event)).await
    }

    async fn get_status(
        &self,
        request: Request<control::Empty>,
    ) -> Result<Response<market::StatusResponse>, Status> {
        let edge = &self.0;
        edge.auth(authorize(request.metadata(), Role::Operator, &edge.tokens))?;
        let status = edge.clock.status().await.map_err(|e| edge.fail(e))?;
        Ok(Response::new(status_to_wire(
            &status,
            edge.refused.load(std::sync::atomic::Ordering::Relaxed),
        )))
    }
}

/// Everything the server needs besides the listener.
pub struct ServeParams {
    /// Accepts TCP connections: cap, handshake deadline, TLS if configured.
    pub acceptor: Acceptor,
    pub clock: ClockHandle,
    pub tokens: Arc<Tokens>,
    pub metrics: MarketMetrics,
    pub max_batch: usize,
    pub node_timeout: Duration,
    /// After `stop`, how long open calls get before they are abandoned.
    pub shutdown_timeout: Duration,
    pub shutdown: Shutdown,
}

/// Serves both peergrid services plus health and reflection on `listener`
/// (TCP, or in-process for the embedded run) until `stop` resolves, then
/// drains open calls.
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
    let (health, health_service) = peergrid_proto::services::health();
    health.set_serving::<MarketServiceServer<Market>>().await;
    health.set_serving::<ControlServiceServer<Control>>().await;
    let (reflection_v1, reflection_v1alpha) = peergrid_proto::services::reflection()?;
    let health_on_stop = health.clone();
    let stop = async move {
        stop.await;
        health_on_stop.set_not_serving::<MarketServiceServer<Market>>().await;
        health_on_stop.set_not_serving::<ControlServiceServer<Control>>().await;
    };
    // TCP connections come through the acceptor (cap, handshake deadline,
    // TLS, socket options); windows, keep-alive and stream limits come
    // from `server_builder`.
    let acceptor = params.acceptor;
    let router = peergrid_runtime::server_builder()
        .layer(status_layer())
        .layer(track_calls())
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(market)
        .add_service(control);
    let serve = |signal| async move {
        match listener {
            GrpcListener::Tcp(listener, _) => {
                router.serve_with_incoming_shutdown(acceptor.incoming(listener), signal).await
            }
            GrpcListener::Local(incoming) => {
                router.serve_with_incoming_shutdown(incoming, signal).await
            }
        }
    };
    serve_until(serve, stop, params.shutdown_timeout).await?;
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
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::{health_check_response::ServingStatus, HealthCheckRequest};
    let target = Target { url: addr, ca, domain, names: HEALTH_SETTINGS };
    let channel = target
        .connect(|e| e.connect_timeout(Duration::from_secs(3)).timeout(Duration::from_secs(3)))
        .await?;
    let request =
        HealthCheckRequest { service: peergrid_proto::services::MARKET_SERVICE.to_owned() };
    let response = HealthClient::new(channel).check(request).await?;
    Ok(response.into_inner().status == ServingStatus::Serving as i32)
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
