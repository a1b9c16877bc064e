//! The accept loop every gRPC server runs on a TCP port: a cap on open
//! connections, a handshake deadline, and a bounded reaction to running out
//! of file descriptors, with a log line and a metric for each.
//!
//! tonic serves whatever [`Acceptor::incoming`] yields; this module decides
//! what reaches it:
//!
//! - **Cap.** At most [`ConnectionLimits::max_connections`] connections are
//!   open (in their handshake or served). At the cap, a new connection
//!   takes the place of the oldest one still in its handshake if that one
//!   has waited a quarter of the handshake deadline (so idle connections
//!   that never speak cannot lock clients out); otherwise the new one is
//!   accepted and closed at once, so the kernel backlog does not fill with
//!   connections nobody will serve. Either way `refused{reason="cap"}`
//!   counts the connection closed.
//! - **Handshake deadline.** A connection is handed to tonic only once its
//!   TLS handshake (when TLS is on) and the HTTP/2 client preface have
//!   arrived, within [`ConnectionLimits::handshake_timeout`]; one that
//!   sends nothing or half a preface is closed then
//!   (`handshake_timeouts_total`). Bytes that are not an HTTP/2 preface, or
//!   a failed TLS handshake, close it at once (`refused{reason="protocol"}`).
//! - **Out of descriptors.** When `accept()` fails with EMFILE/ENFILE the
//!   loop closes one waiting connection with a reserved descriptor (the
//!   client hears a close instead of hanging in the backlog), logs a
//!   rate-limited warning, counts `refused{reason="fd_limit"}` and pauses
//!   [`FD_LIMIT_PAUSE`] instead of retrying at once. Open connections are
//!   served all along.
//! - **Sockets.** Accepted sockets get `TCP_NODELAY` (a slot's batch is one
//!   request/response exchange; Nagle + delayed ACKs add ~40 ms) and TCP
//!   keep-alive ([`crate::serve::limits::TCP_KEEPALIVE`]); tonic's own
//!   socket options apply only to listeners it binds itself.
//!
//! - **Idle timeout.** A served connection that carries no call for
//!   [`ConnectionLimits::idle_timeout`] is closed (`idle_closed_total`),
//!   even if it answers every keep-alive ping, so idle clients cannot hold
//!   places under the cap for ever. Calls are counted by [`track_calls`], a
//!   layer every server installs: a call lasts from its request until its
//!   response body ends (a stream's whole life). The close happens only
//!   when no call is open and nothing is waiting to be read; a client whose
//!   new request crosses the close on the wire sees `UNAVAILABLE` for a
//!   call that never ran, safe to retry (hyper's HTTP/2 server cannot send
//!   a GOAWAY for idleness, so there is no gentler way from outside it).
//!
//! HTTP/2 keep-alive, streams per connection, header size and call timeout
//! stay in [`crate::serve::server_builder`]. After the preface, a peer that
//! stops answering pings is dropped by that keep-alive.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Notify, OwnedSemaphorePermit, Semaphore};
use tokio_rustls::rustls;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::metrics::Metrics;
use crate::serve::limits::TCP_KEEPALIVE;

/// What every HTTP/2 client sends first (RFC 9113 §3.4).
pub const HTTP2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Default time a new connection gets for its TLS handshake and HTTP/2 preface.
pub const DEFAULT_HANDSHAKE_TIMEOUT_MS: u64 = 10_000;
/// Bounds of `handshake_timeout_ms`.
pub const HANDSHAKE_TIMEOUT_MS: (u64, u64) = (10, 600_000);
/// Default time a served connection may carry no call before it is closed.
pub const DEFAULT_IDLE_TIMEOUT_MS: u64 = 300_000;
/// Bounds of `idle_timeout_ms`.
pub const IDLE_TIMEOUT_MS: (u64, u64) = (100, 86_400_000);
/// The default connection cap never exceeds this, whatever the descriptor limit.
pub const MAX_CONNECTIONS_CEILING: usize = 4096;
/// Bounds of `max_connections`.
pub const MAX_CONNECTIONS: (usize, usize) = (1, 1_000_000);
/// How long the loop stops accepting after EMFILE/ENFILE.
pub const FD_LIMIT_PAUSE: Duration = Duration::from_millis(100);
/// At most one warning per this long for each kind of refusal.
const WARN_EVERY: Duration = Duration::from_secs(10);
/// Assumed soft descriptor limit where `/proc/self/limits` cannot be read.
const FALLBACK_NOFILE: u64 = 1024;
/// Admitted connections waiting for tonic to pick them up.
const HANDOFF_QUEUE: usize = 64;

/// `--max-connections` / `--handshake-timeout-ms`, shared by every server binary.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct ConnectionArgs {
    /// Most open gRPC connections; more are accepted and closed at once
    /// [default: the soft RLIMIT_NOFILE minus a quarter, at most 4096].
    #[arg(long, env = "PEERGRID_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// A new connection that has not completed its TLS handshake and HTTP/2
    /// preface within this many ms is closed [default: 10000].
    #[arg(long, env = "PEERGRID_HANDSHAKE_TIMEOUT_MS")]
    pub handshake_timeout_ms: Option<u64>,
    /// A served connection that carries no call (request or stream) for
    /// this many ms is closed, even if it answers pings [default: 300000].
    #[arg(long, env = "PEERGRID_IDLE_TIMEOUT_MS")]
    pub idle_timeout_ms: Option<u64>,
}

/// The limits one server's accept loop enforces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionLimits {
    pub max_connections: usize,
    pub handshake_timeout: Duration,
    pub idle_timeout: Duration,
}

/// A connection setting outside its bounds: which one, and the message
/// (naming the setting, its bound and the value).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LimitError {
    pub field: &'static str,
    pub reason: String,
}

impl fmt::Display for LimitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)
    }
}

/// `value` if it lies in `bounds`, else the error naming `field`.
fn within(field: &'static str, value: u64, (lo, hi): (u64, u64)) -> Result<u64, LimitError> {
    if (lo..=hi).contains(&value) {
        Ok(value)
    } else {
        Err(LimitError { field, reason: format!("{field} must lie in {lo}..={hi}, got {value}") })
    }
}

impl ConnectionLimits {
    /// Checks explicit settings against their bounds; `None` takes the
    /// default ([`default_max_connections`], [`DEFAULT_HANDSHAKE_TIMEOUT_MS`],
    /// [`DEFAULT_IDLE_TIMEOUT_MS`]). The error names the setting and its bound.
    pub fn new(
        max_connections: Option<usize>,
        handshake_timeout_ms: Option<u64>,
        idle_timeout_ms: Option<u64>,
    ) -> Result<ConnectionLimits, LimitError> {
        let max_connections = match max_connections {
            None => default_max_connections(),
            Some(n) => {
                within(
                    "max_connections",
                    n as u64,
                    (MAX_CONNECTIONS.0 as u64, MAX_CONNECTIONS.1 as u64),
                )?;
                n
            }
        };
        let ms = within(
            "handshake_timeout_ms",
            handshake_timeout_ms.unwrap_or(DEFAULT_HANDSHAKE_TIMEOUT_MS),
            HANDSHAKE_TIMEOUT_MS,
        )?;
        let idle = within(
            "idle_timeout_ms",
            idle_timeout_ms.unwrap_or(DEFAULT_IDLE_TIMEOUT_MS),
            IDLE_TIMEOUT_MS,
        )?;
        Ok(ConnectionLimits {
            max_connections,
            handshake_timeout: Duration::from_millis(ms),
            idle_timeout: Duration::from_millis(idle),
        })
    }
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            max_connections: default_max_connections(),
            handshake_timeout: Duration::from_millis(DEFAULT_HANDSHAKE_TIMEOUT_MS),
            idle_timeout: Duration::from_millis(DEFAULT_IDLE_TIMEOUT_MS),
        }
    }
}

/// The soft RLIMIT_NOFILE minus a quarter (room for files, listeners and
/// outgoing connections), at most [`MAX_CONNECTIONS_CEILING`], at least 1.
pub fn default_max_connections() -> usize {
    cap_for_nofile(soft_nofile_limit().unwrap_or(FALLBACK_NOFILE))
}

fn cap_for_nofile(soft: u64) -> usize {
    let cap = soft - soft / 4;
    cap.clamp(1, MAX_CONNECTIONS_CEILING as u64) as usize
}

/// The soft limit on open files of this process (`None`: unlimited or unknown).
pub fn soft_nofile_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    parse_soft_nofile(&limits)
}

fn parse_soft_nofile(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..].split_whitespace().next()?.parse().ok()
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusedLabels {
    reason: &'static str,
}

/// Why a connection was closed without being served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Over the connection cap (new, or evicted from its handshake by a newer one).
    Cap,
    /// `accept()` ran out of file descriptors.
    FdLimit,
    /// Not an HTTP/2 client, or a failed TLS handshake.
    Protocol,
    /// Any other `accept()` error.
    Error,
}

impl Refusal {
    pub fn label(self) -> &'static str {
        match self {
            Refusal::Cap => "cap",
            Refusal::FdLimit => "fd_limit",
            Refusal::Protocol => "protocol",
            Refusal::Error => "error",
        }
    }
}

/// `peergrid_connections_*`: refusals by reason, open connections, handshake timeouts.
#[derive(Clone, Debug, Default)]
pub struct ConnectionMetrics {
    refused: Family<RefusedLabels, Counter>,
    open: Gauge,
    handshake_timeouts: Counter,
    idle_closed: Counter,
}

impl ConnectionMetrics {
    /// Registers the metrics in `registry` (call once per process).
    pub fn register(registry: &mut Metrics) -> ConnectionMetrics {
        let metrics = ConnectionMetrics::default();
        registry.registry_mut().register(
            "connections_refused",
            "gRPC connections closed without being served, by reason (cap, fd_limit, protocol, error)",
            metrics.refused.clone(),
        );
        registry.registry_mut().register(
            "connections_open",
            "gRPC connections open (in their handshake or served)",
            metrics.open.clone(),
        );
        registry.registry_mut().register(
            "connections_handshake_timeouts",
            "gRPC connections closed for not completing the TLS handshake and HTTP/2 preface in time",
            metrics.handshake_timeouts.clone(),
        );
        registry.registry_mut().register(
            "connections_idle_closed",
            "gRPC connections closed after carrying no call for the idle timeout",
            metrics.idle_closed.clone(),
        );
        metrics
    }

    pub fn refused(&self, reason: Refusal) -> u64 {
        self.refused.get_or_create(&RefusedLabels { reason: reason.label() }).get()
    }

    pub fn open(&self) -> i64 {
        self.open.get()
    }

    pub fn handshake_timeouts(&self) -> u64 {
        self.handshake_timeouts.get()
    }

    pub fn idle_closed(&self) -> u64 {
        self.idle_closed.get()
    }
}

/// A TLS server configuration for [`Acceptor::new`].
pub type TlsServerConfig = rustls::ServerConfig;

/// Builds the rustls server configuration for a PEM certificate chain and
/// private key (ring provider, ALPN `h2`). The error says which part is unusable.
pub fn tls_server_config(
    cert_pem: &[u8],
    key_pem: &[u8],
) -> Result<Arc<rustls::ServerConfig>, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("the certificate chain does not parse: {e}"))?;
    if certs.is_empty() {
        return Err("the certificate chain holds no certificate".to_owned());
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| format!("the private key does not parse: {e}"))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS protocol versions: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("the certificate and key are not usable together: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// At most one warning per [`WARN_EVERY`], saying how many events it covers.
#[derive(Debug)]
struct Throttle {
    last: Mutex<Option<Instant>>,
    suppressed: AtomicU64,
}

impl Throttle {
    fn new() -> Throttle {
        Throttle { last: Mutex::new(None), suppressed: AtomicU64::new(0) }
    }

    /// `Some(events since the last warning, this one included)` when a warning is due.
    fn due(&self) -> Option<u64> {
        let mut last = self.last.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let now = Instant::now();
        if last.is_some_and(|at| now.duration_since(at) < WARN_EVERY) {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        *last = Some(now);
        Some(self.suppressed.swap(0, Ordering::Relaxed) + 1)
    }
}

/// A connection in its handshake: its place under the cap (taken away when
/// a newer connection gets it) and the signal that closes it then.
struct Handshake {
    since: Instant,
    slot: Mutex<Option<Slot>>,
    evicted: Notify,
}

/// Connections in their handshake, oldest first.
#[derive(Default)]
struct Pending {
    queue: Mutex<VecDeque<Weak<Handshake>>>,
}

impl Pending {
    fn push(&self, handshake: &Arc<Handshake>, cap: usize) {
        let mut queue = self.queue.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        while queue.front().is_some_and(|w| w.strong_count() == 0) {
            queue.pop_front();
        }
        if queue.len() > 2 * cap {
            queue.retain(|w| w.strong_count() > 0);
        }
        queue.push_back(Arc::downgrade(handshake));
    }

    /// Takes the place of the oldest connection still in its handshake if
    /// it has waited at least `min_age`, and tells it to close.
    fn evict_oldest(&self, min_age: Duration) -> Option<Slot> {
        let mut queue = self.queue.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        while let Some(front) = queue.front() {
            let Some(handshake) = front.upgrade() else {
                queue.pop_front();
                continue;
            };
            if handshake.since.elapsed() < min_age {
                return None;
            }
            queue.pop_front();
            let slot =
                handshake.slot.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take();
            if let Some(slot) = slot {
                handshake.evicted.notify_one();
                return Some(slot);
            }
        }
        None
    }
}

struct Shared {
    limits: ConnectionLimits,
    pending: Pending,
    metrics: ConnectionMetrics,
    tls: Option<TlsAcceptor>,
    cap_log: Throttle,
    fd_log: Throttle,
    error_log: Throttle,
    timeout_log: Throttle,
}

impl Shared {
    fn refuse(&self, reason: Refusal) {
        self.metrics.refused.get_or_create(&RefusedLabels { reason: reason.label() }).inc();
    }
}

/// Accepts connections for one gRPC server (see the module docs).
#[derive(Clone)]
pub struct Acceptor {
    shared: Arc<Shared>,
}

impl fmt::Debug for Acceptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Acceptor")
            .field("limits", &self.shared.limits)
            .field("tls", &self.shared.tls.is_some())
            .finish()
    }
}

impl Acceptor {
    /// Plain HTTP/2 (`tls: None`) or TLS with `tls` from [`tls_server_config`].
    pub fn new(
        limits: ConnectionLimits,
        metrics: ConnectionMetrics,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> Acceptor {
        let shared = Shared {
            limits,
            pending: Pending::default(),
            metrics,
            tls: tls.map(TlsAcceptor::from),
            cap_log: Throttle::new(),
            fd_log: Throttle::new(),
            error_log: Throttle::new(),
            timeout_log: Throttle::new(),
        };
        Acceptor { shared: Arc::new(shared) }
    }

    pub fn limits(&self) -> ConnectionLimits {
        self.shared.limits
    }

    pub fn tls(&self) -> bool {
        self.shared.tls.is_some()
    }

    /// The admitted connections of `listener`, for tonic's
    /// `serve_with_incoming*`. Accepting happens as tonic polls the stream;
    /// dropping it (when the server stops accepting) closes the listener at
    /// once. Connections already handed over are tonic's to finish.
    pub fn incoming(&self, listener: TcpListener) -> Incoming {
        let (admitted_tx, admitted) = mpsc::channel(HANDOFF_QUEUE);
        Incoming {
            local: listener.local_addr().ok(),
            listener,
            shared: Arc::clone(&self.shared),
            slots: Arc::new(Semaphore::new(self.shared.limits.max_connections)),
            reserve: std::fs::File::open("/dev/null").ok(),
            paused: None,
            admitted_tx,
            admitted,
        }
    }
}

fn is_fd_limit(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(code) if code == libc::EMFILE || code == libc::ENFILE)
}

/// Errors that concern one connection only: accept the next one at once.
fn is_per_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
    )
}

/// The stream of admitted connections (see [`Acceptor::incoming`]).
pub struct Incoming {
    listener: TcpListener,
    local: Option<SocketAddr>,
    shared: Arc<Shared>,
    slots: Arc<Semaphore>,
    /// One descriptor held back, released to close a waiting connection
    /// when the process has none left.
    reserve: Option<std::fs::File>,
    /// Set after EMFILE (or another accept error): no accepting until it fires.
    paused: Option<Pin<Box<tokio::time::Sleep>>>,
    admitted_tx: mpsc::Sender<Admitted>,
    admitted: mpsc::Receiver<Admitted>,
}

impl fmt::Debug for Incoming {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Incoming")
            .field("local", &self.local)
            .field("paused", &self.paused.is_some())
            .finish()
    }
}

/// Connections accepted in one poll before yielding to other tasks.
const ACCEPT_BUDGET: usize = 64;

impl tokio_stream::Stream for Incoming {
    type Item = io::Result<Admitted>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        for _ in 0..ACCEPT_BUDGET {
            // The sender half lives in `this`: the channel never ends.
            if let Poll::Ready(Some(admitted)) = this.admitted.poll_recv(cx) {
                return Poll::Ready(Some(Ok(admitted)));
            }
            if let Some(pause) = &mut this.paused {
                if pause.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                this.paused = None;
            }
            match this.listener.poll_accept(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok((stream, peer))) => this.accepted(stream, peer),
                Poll::Ready(Err(e)) => this.failed(e, cx),
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

impl Incoming {
    fn accepted(&mut self, stream: TcpStream, peer: SocketAddr) {
        let shared = &self.shared;
        let slot = match Arc::clone(&self.slots).try_acquire_owned() {
            Ok(permit) => {
                shared.metrics.open.inc();
                Some(Slot { _permit: permit, open: shared.metrics.open.clone() })
            }
            // Take the place of the oldest idle handshake, if it is old enough.
            Err(_) => shared.pending.evict_oldest(shared.limits.handshake_timeout / 4),
        };
        let Some(slot) = slot else {
            drop(stream);
            shared.refuse(Refusal::Cap);
            if let Some(n) = shared.cap_log.due() {
                tracing::warn!(
                    max_connections = shared.limits.max_connections,
                    refused = n,
                    %peer,
                    "connection cap reached: closing new connections (open ones are served)"
                );
            }
            return;
        };
        configure(&stream);
        let handshake = Arc::new(Handshake {
            since: Instant::now(),
            slot: Mutex::new(Some(slot)),
            evicted: Notify::new(),
        });
        shared.pending.push(&handshake, shared.limits.max_connections);
        let info = ConnInfo { local: self.local, peer, activity: None };
        tokio::spawn(admit(stream, info, handshake, Arc::clone(shared), self.admitted_tx.clone()));
    }

    fn failed(&mut self, e: io::Error, cx: &mut Context<'_>) {
        let shared = &self.shared;
        if is_fd_limit(&e) {
            shared.refuse(Refusal::FdLimit);
            if let Some(n) = shared.fd_log.due() {
                tracing::warn!(
                    error = %e,
                    events = n,
                    open = shared.metrics.open.get(),
                    nofile = ?soft_nofile_limit(),
                    "out of file descriptors (file-descriptor limit): refusing new connections, serving open ones"
                );
            }
            if let Some(spare) = self.reserve.take() {
                // The released descriptor takes one waiting connection, closed at once.
                drop(spare);
                if let Poll::Ready(Ok((stream, _))) = self.listener.poll_accept(cx) {
                    drop(stream);
                }
            }
            self.reserve = std::fs::File::open("/dev/null").ok();
        } else {
            shared.refuse(Refusal::Error);
            if is_per_connection(&e) {
                tracing::debug!(error = %e, "accept failed for one connection");
                return;
            }
            if let Some(n) = shared.error_log.due() {
                tracing::warn!(error = %e, events = n, "accept failed: pausing");
            }
        }
        self.paused = Some(Box::pin(tokio::time::sleep(FD_LIMIT_PAUSE)));
    }
}

fn configure(stream: &TcpStream) {
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(error = %e, "cannot set TCP_NODELAY");
    }
    let keepalive = socket2::TcpKeepalive::new().with_time(TCP_KEEPALIVE);
    if let Err(e) = socket2::SockRef::from(stream).set_tcp_keepalive(&keepalive) {
        tracing::debug!(error = %e, "cannot set TCP keep-alive");
    }
}

/// One connection's place under the cap; frees it (and counts it closed) on drop.
struct Slot {
    _permit: OwnedSemaphorePermit,
    open: Gauge,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.open.dec();
    }
}

enum HandshakeError {
    /// Closed or reset before the preface: nothing to count.
    Gone(io::Error),
    Protocol(String),
}

async fn admit(
    stream: TcpStream,
    info: ConnInfo,
    handshake: Arc<Handshake>,
    shared: Arc<Shared>,
    tx: mpsc::Sender<Admitted>,
) {
    let peer = info.peer;
    let handshaking = async {
        let mut transport = match &shared.tls {
            None => Transport::Plain(stream),
            Some(acceptor) => {
                let tls = acceptor
                    .accept(stream)
                    .await
                    .map_err(|e| HandshakeError::Protocol(format!("TLS handshake: {e}")))?;
                Transport::Tls(Box::new(tls))
            }
        };
        let mut preface = [0u8; HTTP2_PREFACE.len()];
        transport.read_exact(&mut preface).await.map_err(HandshakeError::Gone)?;
        if &preface != HTTP2_PREFACE {
            return Err(HandshakeError::Protocol("not an HTTP/2 client preface".to_owned()));
        }
        Ok::<Transport, HandshakeError>(transport)
    };
    let outcome = tokio::select! {
        outcome = tokio::time::timeout(shared.limits.handshake_timeout, handshaking) => outcome,
        () = handshake.evicted.notified() => Ok(Err(HandshakeError::Gone(io::ErrorKind::ConnectionAborted.into()))),
    };
    // Whoever evicted this connection has its place (and counted it).
    let Some(slot) = handshake.slot.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take()
    else {
        shared.refuse(Refusal::Cap);
        tracing::debug!(%peer, "closed a connection still in its handshake to make room for a newer one");
        return;
    };
    match outcome {
        Ok(Ok(transport)) => {
            let activity = Arc::new(Activity::new());
            let idle = IdleTimer {
                timeout: shared.limits.idle_timeout,
                sleep: Box::pin(tokio::time::sleep(shared.limits.idle_timeout)),
                activity: Arc::clone(&activity),
                closed: shared.metrics.idle_closed.clone(),
            };
            let info = ConnInfo { activity: Some(activity), ..info };
            let admitted = Admitted { transport, replayed: 0, info, idle, _slot: slot };
            // An error means the server stopped accepting: the connection closes.
            let _ = tx.send(admitted).await;
        }
        Ok(Err(HandshakeError::Gone(e))) => {
            tracing::debug!(%peer, error = %e, "connection closed before its HTTP/2 preface")
        }
        Ok(Err(HandshakeError::Protocol(reason))) => {
            shared.refuse(Refusal::Protocol);
            tracing::debug!(%peer, %reason, "closing a connection that does not speak gRPC");
        }
        Err(_) => {
            shared.metrics.handshake_timeouts.inc();
            if let Some(n) = shared.timeout_log.due() {
                tracing::warn!(
                    %peer,
                    timeout_ms = shared.limits.handshake_timeout.as_millis() as u64,
                    closed = n,
                    "closing connections that did not complete their handshake in time"
                );
            }
        }
    }
}

enum Transport {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Transport {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Transport {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Transport::Plain(s) => s.is_write_vectored(),
            Transport::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_flush(cx),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// The addresses of an admitted connection (tonic's connect info for it,
/// in every request's extensions) and its call count.
#[derive(Clone, Debug)]
pub struct ConnInfo {
    pub local: Option<SocketAddr>,
    pub peer: SocketAddr,
    activity: Option<Arc<Activity>>,
}

/// How many calls a connection carries, and since when it carries none.
#[derive(Debug)]
struct Activity {
    born: Instant,
    calls: AtomicUsize,
    /// When the last call ended (or the connection was admitted), in ms after `born`.
    idle_since_ms: AtomicU64,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            born: Instant::now(),
            calls: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(0),
        }
    }

    fn begin(self: &Arc<Self>) -> CallGuard {
        self.calls.fetch_add(1, Ordering::SeqCst);
        CallGuard(Arc::clone(self))
    }

    /// When the connection became idle, if it carries no call now.
    fn idle_since(&self) -> Option<Instant> {
        (self.calls.load(Ordering::SeqCst) == 0)
            .then(|| self.born + Duration::from_millis(self.idle_since_ms.load(Ordering::SeqCst)))
    }
}

/// One open call; ends it when dropped (with the response body).
struct CallGuard(Arc<Activity>);

impl Drop for CallGuard {
    fn drop(&mut self) {
        self.0.idle_since_ms.store(self.0.born.elapsed().as_millis() as u64, Ordering::SeqCst);
        self.0.calls.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The idle deadline of one served connection.
struct IdleTimer {
    timeout: Duration,
    sleep: Pin<Box<tokio::time::Sleep>>,
    activity: Arc<Activity>,
    closed: Counter,
}

impl IdleTimer {
    /// Whether the connection has carried no call for the timeout; if not,
    /// the timer is armed for the earliest moment it could have.
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        loop {
            if self.sleep.as_mut().poll(cx).is_pending() {
                return false;
            }
            let now = tokio::time::Instant::now();
            let due = match self.activity.idle_since() {
                Some(since) => tokio::time::Instant::from_std(since + self.timeout),
                None => now + self.timeout,
            };
            if due <= now {
                return true;
            }
            self.sleep.as_mut().reset(due);
        }
    }
}

/// A tower layer counting each connection's open calls for its idle
/// timeout; every server built on [`Acceptor`] installs it with
/// `Server::layer`. Requests from other transports pass untouched.
#[derive(Clone, Copy, Debug, Default)]
pub struct TrackCallsLayer;

/// The [`TrackCallsLayer`] for `Server::layer`.
pub fn track_calls() -> TrackCallsLayer {
    TrackCallsLayer
}

impl<S> tower::Layer<S> for TrackCallsLayer {
    type Service = TrackCalls<S>;

    fn layer(&self, inner: S) -> TrackCalls<S> {
        TrackCalls { inner }
    }
}

/// See [`TrackCallsLayer`].
#[derive(Clone, Debug)]
pub struct TrackCalls<S> {
    inner: S,
}

type Response = tonic::codegen::http::Response<tonic::body::Body>;

impl<S, B> tower::Service<tonic::codegen::http::Request<B>> for TrackCalls<S>
where
    S: tower::Service<tonic::codegen::http::Request<B>, Response = Response>,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: tonic::codegen::http::Request<B>) -> Self::Future {
        let guard = request
            .extensions()
            .get::<ConnInfo>()
            .and_then(|info| info.activity.as_ref())
            .map(Activity::begin);
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await?;
            Ok(match guard {
                Some(guard) => response
                    .map(|body| tonic::body::Body::new(TrackedBody { inner: body, _guard: guard })),
                None => response,
            })
        })
    }
}

/// A response body that ends its call when it is dropped.
struct TrackedBody {
    inner: tonic::body::Body,
    _guard: CallGuard,
}

impl http_body::Body for TrackedBody {
    type Data = <tonic::body::Body as http_body::Body>::Data;
    type Error = <tonic::body::Body as http_body::Body>::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// A connection that completed its handshake: the preface it sent is
/// replayed to the HTTP/2 server, then bytes pass through. Dropping it
/// frees its place under the cap.
pub struct Admitted {
    transport: Transport,
    replayed: usize,
    info: ConnInfo,
    idle: IdleTimer,
    _slot: Slot,
}

impl fmt::Debug for Admitted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Admitted").field("info", &self.info).finish()
    }
}

impl tonic::transport::server::Connected for Admitted {
    type ConnectInfo = ConnInfo;

    fn connect_info(&self) -> ConnInfo {
        self.info.clone()
    }
}

impl AsyncRead for Admitted {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.replayed < HTTP2_PREFACE.len() {
            let rest = &HTTP2_PREFACE[this.replayed..];
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            this.replayed += n;
            return Poll::Ready(Ok(()));
        }
        let read = Pin::new(&mut this.transport).poll_read(cx, buf);
        // Nothing to read and no call for the idle timeout: end of stream,
        // which makes the HTTP/2 server close the connection.
        if read.is_pending() && this.idle.expired(cx) {
            this.idle.closed.inc();
            tracing::debug!(peer = %this.info.peer, idle_ms = this.idle.timeout.as_millis() as u64, "closing an idle connection");
            return Poll::Ready(Ok(()));
        }
        read
    }
}

impl AsyncWrite for Admitted {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().transport).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().transport).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.transport.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().transport).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().transport).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_cap_leaves_a_quarter_of_the_descriptors() {
        assert_eq!(cap_for_nofile(128), 96);
        assert_eq!(cap_for_nofile(1024), 768);
        assert_eq!(cap_for_nofile(1 << 20), MAX_CONNECTIONS_CEILING);
        assert_eq!(cap_for_nofile(1), 1);
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max cpu time              unlimited            unlimited            seconds   \n\
                      Max open files            128                  4096                 files     \n";
        assert_eq!(parse_soft_nofile(limits), Some(128));
        assert_eq!(
            parse_soft_nofile(
                "Max open files            unlimited            unlimited            files"
            ),
            None
        );
    }

    #[test]
    fn settings_outside_their_bounds_are_named() {
        let e = ConnectionLimits::new(Some(0), None, None).unwrap_err();
        assert!(e.field == "max_connections" && e.reason.contains("max_connections"), "{e}");
        let e = ConnectionLimits::new(None, Some(0), None).unwrap_err();
        assert!(
            e.field == "handshake_timeout_ms" && e.reason.contains("handshake_timeout_ms"),
            "{e}"
        );
        let e = ConnectionLimits::new(None, None, Some(99)).unwrap_err();
        assert!(
            e.field == "idle_timeout_ms"
                && e.reason.starts_with("idle_timeout_ms must lie in 100..="),
            "{e}"
        );
        let ok = ConnectionLimits::new(Some(64), Some(500), Some(1_000)).unwrap();
        assert_eq!(
            ok,
            ConnectionLimits {
                max_connections: 64,
                handshake_timeout: Duration::from_millis(500),
                idle_timeout: Duration::from_secs(1)
            }
        );
        let defaults = ConnectionLimits::new(None, None, None).unwrap();
        assert_eq!(defaults, ConnectionLimits::default());
    }

    #[test]
    fn warnings_are_throttled_and_count_what_they_cover() {
        let throttle = Throttle::new();
        assert_eq!(throttle.due(), Some(1));
        assert_eq!(throttle.due(), None);
        assert_eq!(throttle.due(), None);
        *throttle.last.lock().unwrap() = Some(Instant::now() - WARN_EVERY);
        assert_eq!(throttle.due(), Some(3));
    }
}
