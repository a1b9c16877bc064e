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

mod accept;
mod calls;
mod metrics;

use crate::serve::limits::TCP_KEEPALIVE;
#[allow(unused_imports)]
use accept::*;
pub use accept::{Acceptor, Incoming};
#[allow(unused_imports)]
use calls::*;
pub use calls::{track_calls, Admitted, ConnInfo, TrackCalls, TrackCallsLayer};
#[allow(unused_imports)]
use metrics::*;
pub use metrics::{tls_server_config, ConnectionMetrics, Refusal, TlsServerConfig};

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
}
