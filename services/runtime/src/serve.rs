//! The gRPC server kit: the one place the market-node and the trainer get
//! their server settings, size limits, status normalisation, side services
//! and bounded shutdown from, so the two servers cannot drift apart.
//!
//! - [`serve`]: the whole server of a node — its [`Services`] plus gRPC
//!   health and reflection, behind the layers below, on a TCP or
//!   in-process [`GrpcListener`] — until a stop signal, then a bounded
//!   drain ([`ServeOptions`]). A node builds its services (compression and
//!   per-service size limits are methods of each generated server, so they
//!   stay there) and hands them over; nothing else about serving is its own.
//! - [`server_builder`]: HTTP/2 keep-alive (a peer that stops answering
//!   pings is dropped), a cap on concurrent streams per connection and on
//!   header size, a timeout for each call's handler
//!   future (a half-sent unary request cannot pin a task forever), and the
//!   flow-control windows a slot's batch needs.
//! - [`MAX_MESSAGE_BYTES`]: the decoded (and decompressed: tonic stops
//!   inflating at the same limit) size of any message, both ways.
//! - [`StatusLayer`]: every size limit answers `RESOURCE_EXHAUSTED`, and a
//!   body that does not decode (invalid UTF-8 in a string, a broken varint)
//!   `INVALID_ARGUMENT` — tonic says `OUT_OF_RANGE` and `INTERNAL`.
//! - `serve_until`: stops accepting when `stop` resolves, lets open calls
//!   finish for at most the drain timeout, then returns whatever clients
//!   still hold open (idle connections, watch streams, half-sent requests).
//!
//! Which connections reach the server at all (cap, handshake deadline, TCP
//! keep-alive and nodelay, TLS) is [`crate::connections`]' job.
//!
//! Authentication runs before any of this reads a body: each node wraps its
//! services in [`crate::auth::RequireToken`], an interceptor that sees only
//! the headers.

use std::convert::Infallible;
use std::future::Future;
use std::time::Duration;

use tonic::codegen::http;
use tonic::server::NamedService;
use tonic::service::{Routes, RoutesBuilder};
use tonic::transport::Server;
use tonic::{Code, Status};
use tonic_health::ServingStatus;

use crate::connections::{track_calls, Acceptor, ConnectionLimits, ConnectionMetrics};
use crate::{GrpcListener, RuntimeError};

/// Largest message a server decodes or encodes, after decompression (an
/// `OrderBatch` of 100,000 reports is ~10 MB; a rollout of 1,000
/// prosumers × 168 slots ~15 MB, while a 10,000-prosumer × 96-slot one,
/// ≈90 MB, is refused with `RESOURCE_EXHAUSTED`: nodes that large need
/// shorter rollouts). The one definition: the agent-node's clients use the
/// same limit, so what a server must refuse fails before it is sent.
pub const MAX_MESSAGE_BYTES: usize = 64 << 20;

/// The connection settings both servers share (see the README's limits table).
pub mod limits {
    use std::time::Duration;

    /// A ping every this long on a connection…
    pub const HTTP2_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(20);
    /// …that must be answered within this long, or the connection is closed.
    pub const HTTP2_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
    /// TCP keep-alive probes on idle sockets (dead peers behind NAT), set on
    /// every accepted socket by [`crate::connections::Acceptor`].
    pub const TCP_KEEPALIVE: Duration = Duration::from_secs(60);
    /// Concurrent calls on one connection (a node needs three or four).
    pub const MAX_CONCURRENT_STREAMS: u32 = 128;
    /// Largest header block a client may send.
    pub const MAX_HEADER_LIST_BYTES: u32 = 16 << 10;
    /// How long a call's handler may take to produce its response head
    /// (unary calls: the whole call, including reading the request body).
    /// Streams answer at once and then live as long as the client wants.
    pub const CALL_TIMEOUT: Duration = Duration::from_secs(60);
    /// HTTP/2 flow-control window of one stream: room for a whole slot's
    /// batch in flight (servers and the agent-node's channels alike).
    pub const HTTP2_STREAM_WINDOW_BYTES: u32 = 8 << 20;
    /// HTTP/2 flow-control window of a whole connection (all its streams).
    pub const HTTP2_CONNECTION_WINDOW_BYTES: u32 = 16 << 20;
    /// Default time open calls get to finish after SIGTERM.
    pub const SHUTDOWN_TIMEOUT_MS: u64 = 10_000;
}

/// A server builder with the shared connection hygiene.
pub fn server_builder() -> Server {
    Server::builder()
        .http2_keepalive_interval(Some(limits::HTTP2_KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(limits::HTTP2_KEEPALIVE_TIMEOUT))
        .max_concurrent_streams(Some(limits::MAX_CONCURRENT_STREAMS))
        .http2_max_header_list_size(Some(limits::MAX_HEADER_LIST_BYTES))
        .timeout(limits::CALL_TIMEOUT)
        .initial_stream_window_size(Some(limits::HTTP2_STREAM_WINDOW_BYTES))
        .initial_connection_window_size(Some(limits::HTTP2_CONNECTION_WINDOW_BYTES))
}

/// Maps a status tonic produced while *receiving* a message to the code
/// the client can act on: a size limit to `RESOURCE_EXHAUSTED`, a message
/// that does not decode to `INVALID_ARGUMENT`. Every other status is
/// returned unchanged.
pub fn normalise_status(status: Status) -> Status {
    let message = status.message();
    match status.code() {
        Code::OutOfRange if message.contains("message length too large") => {
            Status::resource_exhausted(message.to_owned())
        }
        Code::Internal if message.starts_with("failed to decode Protobuf message") => {
            Status::invalid_argument(format!("the message does not decode: {message}"))
        }
        _ => status,
    }
}

/// A tower layer applying [`normalise_status`] to every response whose
/// status travels in its headers (every refused unary or client-streaming
/// call, and every stream refused before its first message). Errors in the
/// middle of a server stream are the handler's to send (and to normalise).
pub type StatusLayer = tower::util::MapResponseLayer<
    fn(http::Response<tonic::body::Body>) -> http::Response<tonic::body::Body>,
>;

/// The [`StatusLayer`] for `Server::layer`.
pub fn status_layer() -> StatusLayer {
    tower::util::MapResponseLayer::new(normalise_response)
}

fn normalise_response(
    mut response: http::Response<tonic::body::Body>,
) -> http::Response<tonic::body::Body> {
    let Some(status) = Status::from_header_map(response.headers()) else { return response };
    let code = status.code();
    let status = normalise_status(status);
    if status.code() != code {
        let headers = response.headers_mut();
        for name in ["grpc-status", "grpc-message", "grpc-status-details-bin"] {
            headers.remove(name);
        }
        if status.add_header(headers).is_err() {
            tracing::warn!(code = ?status.code(), "cannot encode a normalised status");
        }
    }
    response
}

/// A node's own gRPC services, and the names gRPC health reports them
/// under (`SERVING` while [`serve`] accepts calls, `NOT_SERVING` from the
/// stop signal on).
pub struct Services {
    routes: RoutesBuilder,
    names: Vec<&'static str>,
    descriptor_set: &'static [u8],
}

impl Services {
    /// No service yet; reflection will describe the encoded
    /// `FileDescriptorSet` `descriptor_set` (the node's protos).
    pub fn new(descriptor_set: &'static [u8]) -> Services {
        Services { routes: RoutesBuilder::default(), names: Vec::new(), descriptor_set }
    }

    /// Adds a service (a generated server, usually wrapped in
    /// [`crate::RequireToken`]); health knows it by its gRPC name.
    pub fn add_service<S>(mut self, service: S) -> Services
    where
        S: tower::Service<http::Request<tonic::body::Body>, Error = Infallible>
            + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Response: axum::response::IntoResponse,
        S::Future: Send + 'static,
    {
        self.routes.add_service(service);
        self.names.push(S::NAME);
        self
    }

    /// The node's services plus health and the v1 and v1alpha reflection
    /// services (`grpcurl` and Kubernetes probes work without proto files),
    /// with health's reporter and the names it reports on.
    async fn with_side_services(
        self,
    ) -> Result<(Routes, tonic_health::server::HealthReporter, Vec<&'static str>), RuntimeError>
    {
        let Services { mut routes, names, descriptor_set } = self;
        // The overall status (service "") is SERVING from the start.
        let (health, health_service) = tonic_health::server::health_reporter();
        for name in &names {
            health.set_service_status(name, ServingStatus::Serving).await;
        }
        let reflection = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(descriptor_set)
        };
        let reflection_v1 = reflection().build_v1().map_err(RuntimeError::Reflection)?;
        let reflection_v1alpha = reflection().build_v1alpha().map_err(RuntimeError::Reflection)?;
        routes
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha);
        Ok((routes.routes(), health, names))
    }
}

/// How [`serve`] accepts connections and how long it drains.
#[derive(Debug)]
pub struct ServeOptions {
    /// Admits TCP connections: cap, handshake deadline, socket options, TLS
    /// (in-process connections need none of it).
    pub acceptor: Acceptor,
    /// After the stop signal, how long open calls get to finish before
    /// they are abandoned.
    pub drain: Duration,
}

impl ServeOptions {
    /// Plain HTTP/2 (no TLS) with the default connection limits, counted in
    /// metrics nobody scrapes, and `drain`: for a server that is not a
    /// node, such as a test's stand-in for an external service.
    pub fn plain(drain: Duration) -> ServeOptions {
        let metrics = ConnectionMetrics::register(&mut crate::Metrics::new());
        ServeOptions { acceptor: Acceptor::new(ConnectionLimits::default(), metrics, None), drain }
    }
}

/// Serves `services` with health and reflection on `listener` (TCP
/// through the options' acceptor, or in-process) with the shared
/// connection settings ([`server_builder`]), status normalisation
/// ([`status_layer`]) and per-connection call tracking, until `stop`
/// resolves; then health turns `NOT_SERVING`, no new connection is
/// accepted, and open calls get `options.drain` to finish (see
/// `serve_until`). Errors if reflection cannot read the descriptor set or
/// the server fails.
pub async fn serve(
    listener: GrpcListener,
    services: Services,
    stop: impl Future<Output = ()> + Send + 'static,
    options: ServeOptions,
) -> Result<(), RuntimeError> {
    let (routes, health, names) = services.with_side_services().await?;
    let stop = async move {
        stop.await;
        for name in names {
            health.set_service_status(name, ServingStatus::NotServing).await;
        }
    };
    let router = server_builder().layer(status_layer()).layer(track_calls()).add_routes(routes);
    let ServeOptions { acceptor, drain } = options;
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
    serve_until(serve, stop, drain).await.map_err(RuntimeError::Serve)
}

/// Runs `serve(signal)` (a tonic `serve_with_incoming_shutdown`), where
/// `signal` resolves when `stop` does. After `stop`, open calls get
/// `drain` to finish; then this returns `Ok` and the calls still open are
/// abandoned (they end when the process does), so a client holding a
/// connection, a stream or half a request can never keep a node from
/// exiting.
async fn serve_until<F, E>(
    serve: impl FnOnce(std::pin::Pin<Box<dyn Future<Output = ()> + Send>>) -> F,
    stop: impl Future<Output = ()> + Send + 'static,
    drain: Duration,
) -> Result<(), E>
where
    F: Future<Output = Result<(), E>>,
{
    let (fired_tx, fired_rx) = tokio::sync::oneshot::channel::<()>();
    let signal = Box::pin(async move {
        stop.await;
        let _ = fired_tx.send(());
    });
    let serving = serve(signal);
    tokio::pin!(serving);
    let deadline = async move {
        match fired_rx.await {
            Ok(()) => tokio::time::sleep(drain).await,
            // The server ended on its own (its signal future was dropped).
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        result = &mut serving => result,
        () = deadline => {
            tracing::warn!(drain_ms = drain.as_millis() as u64, "calls still open after the shutdown timeout: abandoning them");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_limits_and_decode_errors_get_actionable_codes() {
        let too_big = Status::out_of_range(
            "Error, decoded message length too large: found 99 bytes, the limit is: 9 bytes",
        );
        let s = normalise_status(too_big);
        assert_eq!(s.code(), Code::ResourceExhausted);
        assert!(s.message().contains("the limit is: 9 bytes"), "{}", s.message());
        let utf8 = Status::internal(
            "failed to decode Protobuf message: Join.node_name: invalid string value: data is not UTF-8 encoded",
        );
        let s = normalise_status(utf8);
        assert_eq!(s.code(), Code::InvalidArgument);
        assert!(s.message().contains("not UTF-8"), "{}", s.message());
        // Anything else is left alone.
        for other in [Status::internal("a bug"), Status::out_of_range("slot 9 is in the future")] {
            let code = other.code();
            assert_eq!(normalise_status(other).code(), code);
        }
    }

    #[test]
    fn the_layer_rewrites_trailers_only_responses() {
        let response: http::Response<tonic::body::Body> =
            Status::internal("failed to decode Protobuf message: bad").into_http();
        let response = normalise_response(response);
        let status = Status::from_header_map(response.headers()).expect("a status");
        assert_eq!(status.code(), Code::InvalidArgument);
        let ok = normalise_response(http::Response::new(tonic::body::Body::empty()));
        assert!(Status::from_header_map(ok.headers()).is_none());
    }

    #[tokio::test]
    async fn a_server_that_never_drains_is_abandoned_after_the_timeout() {
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let stop = async move {
            let _ = stop_rx.await;
        };
        // A "server" whose connections never close: it ignores its signal.
        let stuck = |signal: std::pin::Pin<Box<dyn Future<Output = ()> + Send>>| async move {
            signal.await;
            std::future::pending::<Result<(), ()>>().await
        };
        let serving = tokio::spawn(serve_until(stuck, stop, Duration::from_millis(50)));
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!serving.is_finished(), "runs until stopped");
        stop_tx.send(()).unwrap();
        let result = tokio::time::timeout(Duration::from_secs(10), serving)
            .await
            .expect("returns after the drain timeout");
        assert_eq!(result.unwrap(), Ok(()));
    }
}
