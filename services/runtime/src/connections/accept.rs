//! Admission: the accept loop, the cap, the handshake deadline, the
//! descriptor-limit reaction and the transport (plain or TLS) beneath.

use super::*;

/// At most one warning per [`WARN_EVERY`], saying how many events it covers.
#[derive(Debug)]
pub(super) struct Throttle {
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
pub(super) struct Handshake {
    since: Instant,
    slot: Mutex<Option<Slot>>,
    evicted: Notify,
}

/// Connections in their handshake, oldest first.
#[derive(Default)]
pub(super) struct Pending {
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

pub(super) struct Shared {
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

pub(super) fn is_fd_limit(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(code) if code == libc::EMFILE || code == libc::ENFILE)
}

/// Errors that concern one connection only: accept the next one at once.
pub(super) fn is_per_connection(e: &io::Error) -> bool {
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
pub(super) const ACCEPT_BUDGET: usize = 64;

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

pub(super) fn configure(stream: &TcpStream) {
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(error = %e, "cannot set TCP_NODELAY");
    }
    let keepalive = socket2::TcpKeepalive::new().with_time(TCP_KEEPALIVE);
    if let Err(e) = socket2::SockRef::from(stream).set_tcp_keepalive(&keepalive) {
        tracing::debug!(error = %e, "cannot set TCP keep-alive");
    }
}

/// One connection's place under the cap; frees it (and counts it closed) on drop.
pub(super) struct Slot {
    _permit: OwnedSemaphorePermit,
    open: Gauge,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.open.dec();
    }
}

pub(super) enum HandshakeError {
    /// Closed or reset before the preface: nothing to count.
    Gone(io::Error),
    Protocol(String),
}

pub(super) async fn admit(
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

pub(super) enum Transport {
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

#[cfg(test)]
mod tests {
    use super::*;

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
