//! What an admitted connection carries: its addresses and call count, the
//! idle timer, and the `track_calls` layer that counts calls.

use super::*;

/// The addresses of an admitted connection (tonic's connect info for it,
/// in every request's extensions) and its call count.
#[derive(Clone, Debug)]
pub struct ConnInfo {
    pub local: Option<SocketAddr>,
    pub peer: SocketAddr,
    pub(super) activity: Option<Arc<Activity>>,
}

/// How many calls a connection carries, and since when it carries none.
#[derive(Debug)]
pub(super) struct Activity {
    born: Instant,
    calls: AtomicUsize,
    /// When the last call ended (or the connection was admitted), in ms after `born`.
    idle_since_ms: AtomicU64,
}

impl Activity {
    pub(super) fn new() -> Activity {
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
pub(super) struct CallGuard(Arc<Activity>);

impl Drop for CallGuard {
    fn drop(&mut self) {
        self.0.idle_since_ms.store(self.0.born.elapsed().as_millis() as u64, Ordering::SeqCst);
        self.0.calls.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The idle deadline of one served connection.
pub(super) struct IdleTimer {
    pub(super) timeout: Duration,
    pub(super) sleep: Pin<Box<tokio::time::Sleep>>,
    pub(super) activity: Arc<Activity>,
    pub(super) closed: Counter,
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

pub(super) type Response = tonic::codegen::http::Response<tonic::body::Body>;

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
pub(super) struct TrackedBody {
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
    pub(super) transport: Transport,
    pub(super) replayed: usize,
    pub(super) info: ConnInfo,
    pub(super) idle: IdleTimer,
    pub(super) _slot: Slot,
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
