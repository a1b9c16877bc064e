//! In-process "sockets": named in-memory listeners that gRPC servers and
//! channels in the same process reach through `local://NAME` URLs.
//!
//! `peergrid run --transport local` starts the market-node, the trainer and
//! the agent-nodes as tasks of one process. Over loopback TCP every message
//! still goes through the kernel; here a connection is a
//! [`tokio::io::DuplexStream`] pair, so bytes are copied between two
//! in-memory buffers and nothing else changes: the same tonic servers and
//! channels, the same HTTP/2 framing and protobuf encoding, the same auth
//! interceptors. That is what lets both transports give identical results.
//!
//! The registry is process-global: [`listen`] claims a name (an error if it
//! is taken) and returns the server's [`Incoming`] stream of accepted
//! connections; [`dial`] opens a connection to a name; dropping the
//! `Incoming` (the server stopped) frees the name, after which dialling it
//! fails with "no in-process listener named …". [`connect`] builds a tonic
//! [`Channel`] that dials through the registry (and redials after a lost
//! connection, as a TCP channel reconnects).
//!
//! It never touches the network and knows nothing of peergrid's services.

use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::task::{Context, Poll};

use hyper_util::rt::TokioIo;
use tokio::io::DuplexStream;
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tonic::transport::{Channel, Endpoint, Uri};

/// URL scheme of an in-process listener: `local://NAME`.
pub const SCHEME: &str = "local://";

/// Bytes buffered in each direction of a connection. Large enough that a
/// slot's `OrderBatch` or a policy update rarely waits for the reader; the
/// HTTP/2 flow-control windows still bound what is in flight.
pub const BUFFER_BYTES: usize = 4 << 20;

/// Longest listener name (names are chosen by the embedding program).
pub const MAX_NAME_LEN: usize = 64;

/// A live listener: its registration number (so a drop removes only its
/// own entry) and where dialled connections go.
struct Entry {
    id: u64,
    tx: mpsc::UnboundedSender<DuplexStream>,
}

type Registry = Mutex<HashMap<String, Entry>>;

fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(Registry::default)
}

/// The registry stays usable even if a thread panicked while holding it:
/// every operation on the map is a single insert, remove or lookup.
fn lock() -> std::sync::MutexGuard<'static, HashMap<String, Entry>> {
    registry().lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The listener name of a `local://NAME` URL, or `None` for any other URL
/// (the name is not checked here: [`check_name`] does).
pub fn local_name(url: &str) -> Option<&str> {
    url.strip_prefix(SCHEME)
}

/// Checks a listener name: 1..=64 characters of `[A-Za-z0-9._-]`.
pub fn check_name(name: &str) -> io::Result<()> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("in-process listener name must be 1..={MAX_NAME_LEN} characters of [A-Za-z0-9._-], got {name:?}"),
        ))
    }
}

/// Claims `name` and returns the stream of connections dialled to it.
/// Fails if the name is malformed or another live listener holds it.
pub fn listen(name: &str) -> io::Result<Incoming> {
    check_name(name)?;
    let mut listeners = lock();
    if listeners.contains_key(name) {
        return Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!("an in-process listener named {name:?} already exists"),
        ));
    }
    static NEXT_ID: AtomicU64 = AtomicU64::new(0);
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let (tx, rx) = mpsc::unbounded_channel();
    listeners.insert(name.to_owned(), Entry { id, tx });
    Ok(Incoming { name: name.to_owned(), id, rx })
}

/// Opens a connection to the listener `name`: the client's end of a fresh
/// duplex pipe whose other end the listener's [`Incoming`] yields.
pub fn dial(name: &str) -> io::Result<DuplexStream> {
    check_name(name)?;
    let listeners = lock();
    let not_found = || {
        io::Error::new(
            io::ErrorKind::ConnectionRefused,
            format!("no in-process listener named {name:?}"),
        )
    };
    let entry = listeners.get(name).ok_or_else(not_found)?;
    let (client, server) = tokio::io::duplex(BUFFER_BYTES);
    entry.tx.send(server).map_err(|_| not_found())?;
    Ok(client)
}

/// A tonic channel to the listener `name`, configured by `endpoint` (its
/// URI is only a placeholder; timeouts, windows and keep-alive apply as for
/// TCP). Fails like a refused TCP connect when nothing listens there.
pub async fn connect(endpoint: Endpoint, name: &str) -> Result<Channel, tonic::transport::Error> {
    let name = name.to_owned();
    endpoint
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let dialled = dial(&name).map(TokioIo::new);
            std::future::ready(dialled)
        }))
        .await
}

/// A placeholder endpoint for [`connect`]: the host is never resolved.
pub fn endpoint() -> Endpoint {
    Endpoint::from_static("http://inproc.local")
}

/// The server side of a listener: a stream of accepted connections, for
/// tonic's `serve_with_incoming*` (tonic implements its `Connected` for
/// `DuplexStream`, with no connect info, so no wrapper type is needed).
/// Never ends on its own (a listener outlives its clients); dropping it
/// frees the name, and connections dialled but not yet accepted then see
/// end-of-file.
#[derive(Debug)]
pub struct Incoming {
    name: String,
    id: u64,
    rx: mpsc::UnboundedReceiver<DuplexStream>,
}

impl Incoming {
    /// The name clients dial.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The URL clients connect to: `local://NAME`.
    pub fn url(&self) -> String {
        format!("{SCHEME}{}", self.name)
    }
}

impl Stream for Incoming {
    type Item = io::Result<DuplexStream>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx).map(|conn| conn.map(Ok))
    }
}

impl Drop for Incoming {
    fn drop(&mut self) {
        let mut listeners = lock();
        // Only our own registration: the name cannot have been re-claimed
        // while we held it, but checking costs nothing.
        if listeners.get(&self.name).is_some_and(|entry| entry.id == self.id) {
            listeners.remove(&self.name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_stream::StreamExt;

    #[tokio::test]
    async fn a_dialled_connection_carries_bytes_both_ways() {
        let mut incoming = listen("inproc-bytes").unwrap();
        assert_eq!(
            (incoming.name(), incoming.url()),
            ("inproc-bytes", "local://inproc-bytes".to_owned())
        );
        let mut client = dial("inproc-bytes").unwrap();
        let mut server = incoming.next().await.expect("a connection").unwrap();
        client.write_all(b"order batch").await.unwrap();
        let mut buf = [0u8; 11];
        server.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"order batch");
        server.write_all(b"cleared").await.unwrap();
        drop(server);
        let mut back = Vec::new();
        client.read_to_end(&mut back).await.unwrap();
        assert_eq!(back, b"cleared", "the client reads to EOF once the server end is gone");
    }

    #[test]
    fn a_name_is_held_until_its_listener_is_dropped() {
        let first = listen("inproc-held").unwrap();
        let e = listen("inproc-held").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AddrInUse);
        assert!(e.to_string().contains("\"inproc-held\" already exists"), "{e}");
        drop(first);
        let e = dial("inproc-held").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused);
        assert!(e.to_string().contains("no in-process listener named \"inproc-held\""), "{e}");
        let _again = listen("inproc-held").expect("free again");
        dial("inproc-held").expect("and dialable");
    }

    #[test]
    fn malformed_names_are_refused_with_the_rule() {
        for bad in ["", "a b", "x/y", "ünïcode", &"n".repeat(65)] {
            for e in [listen(bad).unwrap_err(), dial(bad).unwrap_err()] {
                assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{bad:?}");
                assert!(e.to_string().contains("[A-Za-z0-9._-]"), "{e}");
            }
        }
        assert_eq!(local_name("local://market"), Some("market"));
        assert_eq!(local_name("http://127.0.0.1:1"), None);
    }

    #[tokio::test]
    async fn a_tonic_channel_reaches_a_tonic_server_and_reports_a_missing_one() {
        use tonic_health::pb::health_check_response::ServingStatus;
        use tonic_health::pb::health_client::HealthClient;
        use tonic_health::pb::HealthCheckRequest;

        let (reporter, service) = tonic_health::server::health_reporter();
        reporter.set_service_status("probe", tonic_health::ServingStatus::Serving).await;
        let incoming = listen("inproc-tonic").unwrap();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(
            tonic::transport::Server::builder().add_service(service).serve_with_incoming_shutdown(
                incoming,
                async {
                    let _ = stop_rx.await;
                },
            ),
        );
        let channel = connect(endpoint(), "inproc-tonic").await.unwrap();
        let reply = HealthClient::new(channel)
            .check(HealthCheckRequest { service: "probe".into() })
            .await
            .unwrap();
        assert_eq!(reply.into_inner().status, ServingStatus::Serving as i32);
        stop_tx.send(()).unwrap();
        server.await.unwrap().unwrap();

        let e = connect(endpoint(), "inproc-tonic").await.unwrap_err();
        let mut text = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(inner) = source {
            text.push_str(&format!(": {inner}"));
            source = inner.source();
        }
        assert!(text.contains("no in-process listener named \"inproc-tonic\""), "{text}");
    }
}
