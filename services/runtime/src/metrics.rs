//! Prometheus metrics: a registry every component registers its counters,
//! gauges and histograms in at start-up, and a minimal HTTP server that
//! answers `GET /metrics` with the text exposition format.
//!
//! The server is deliberately a few dozen lines on a tokio `TcpListener`
//! (read one request head, write one response, close) rather than a web
//! framework: a scrape endpoint needs nothing more. Anything other than
//! `GET /metrics` gets a 404 (405 for other methods on `/metrics`); request
//! heads larger than 8 KiB or slower than 5 s are dropped.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::shutdown::Shutdown;

const MAX_REQUEST_HEAD_BYTES: usize = 8 * 1024;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The metrics of one process; every name gets the `peergrid_` prefix.
/// Register everything first, then share it (`Arc<Metrics>`) with the server:
/// the metric handles themselves are atomics, cheap to clone into tasks.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        Metrics { registry: Registry::with_prefix("peergrid") }
    }

    /// A counter; the exposition adds the `_total` suffix.
    pub fn counter(&mut self, name: &str, help: &str) -> Counter {
        let counter = Counter::default();
        self.registry.register(name, help, counter.clone());
        counter
    }

    pub fn gauge(&mut self, name: &str, help: &str) -> Gauge {
        let gauge = Gauge::default();
        self.registry.register(name, help, gauge.clone());
        gauge
    }

    /// A histogram with the given upper bucket bounds (e.g. latency in seconds).
    pub fn histogram(
        &mut self,
        name: &str,
        help: &str,
        buckets: impl IntoIterator<Item = f64>,
    ) -> Histogram {
        let histogram = Histogram::new(buckets);
        self.registry.register(name, help, histogram.clone());
        histogram
    }

    /// For metric types without a helper here (families with labels, ...).
    pub fn registry_mut(&mut self) -> &mut Registry {
        &mut self.registry
    }

    /// The current values in the Prometheus/OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut body = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut body, &self.registry);
        body
    }
}

/// [`serve_metrics`] when `addr` is configured: the bound address and the
/// task, or `(None, None)` when metrics are off. The error names the address.
pub async fn serve_metrics_if_configured(
    addr: Option<SocketAddr>,
    metrics: Arc<Metrics>,
    shutdown: Shutdown,
) -> std::io::Result<(Option<SocketAddr>, Option<JoinHandle<()>>)> {
    let Some(addr) = addr else { return Ok((None, None)) };
    let (bound, task) = serve_metrics(addr, metrics, shutdown).await.map_err(|e| {
        std::io::Error::new(e.kind(), format!("binding metrics listener {addr}: {e}"))
    })?;
    Ok((Some(bound), Some(task)))
}

/// Binds `addr` (port 0 picks a free port) and serves `GET /metrics` until
/// `shutdown` fires. Returns the bound address and the server task, which
/// ends after shutdown (connections in flight are dropped: a scrape is
/// simply retried).
pub async fn serve_metrics(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    mut shutdown: Shutdown,
) -> std::io::Result<(SocketAddr, JoinHandle<()>)> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let task = tokio::spawn(async move {
        let mut warned: Option<std::time::Instant> = None;
        loop {
            tokio::select! {
                _ = shutdown.recv() => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        let metrics = Arc::clone(&metrics);
                        tokio::spawn(async move {
                            if let Err(e) = tokio::time::timeout(REQUEST_TIMEOUT, respond(stream, &metrics)).await {
                                tracing::debug!(error = %e, "metrics request timed out");
                            }
                        });
                    }
                    Err(e) => {
                        // E.g. out of file descriptors: back off briefly instead of
                        // spinning, and warn at most every 10 s.
                        if warned.is_none_or(|at| at.elapsed() >= Duration::from_secs(10)) {
                            warned = Some(std::time::Instant::now());
                            tracing::warn!(error = %e, "metrics accept failed (pausing 100 ms per failure; next warning in 10 s at the earliest)");
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
            }
        }
    });
    Ok((local, task))
}

async fn respond(mut stream: TcpStream, metrics: &Metrics) {
    let Some(request_line) = read_request_line(&mut stream).await else { return };
    let mut parts = request_line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let response = match (method, path.split('?').next().unwrap_or("")) {
        ("GET", "/metrics") => http_response("200 OK", CONTENT_TYPE, &metrics.encode()),
        (_, "/metrics") => http_response("405 Method Not Allowed", "text/plain", "only GET\n"),
        _ => http_response("404 Not Found", "text/plain", "see /metrics\n"),
    };
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// Reads up to the end of the request head and returns its first line, or
/// `None` if the client sent garbage, too much, or closed early.
async fn read_request_line(stream: &mut TcpStream) -> Option<String> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await.ok()?;
        if n == 0 || head.len() + n > MAX_REQUEST_HEAD_BYTES {
            return None;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line_end = head.iter().position(|&b| b == b'\r')?;
    String::from_utf8(head[..line_end].to_vec()).ok()
}

fn http_response(status: &str, content_type: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shutdown::ShutdownController;

    async fn get(addr: SocketAddr, request: &str) -> String {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        response
    }

    #[tokio::test]
    async fn scrape_shows_registered_metrics_and_server_stops_on_shutdown() {
        let mut metrics = Metrics::new();
        let slots = metrics.counter("slots_cleared", "Slots cleared since start");
        let lag = metrics.gauge("policy_lag", "Policy versions behind the trainer");
        let latency = metrics.histogram("clearing_seconds", "Clearing latency", [0.001, 0.01, 0.1]);
        slots.inc_by(3);
        lag.set(2);
        latency.observe(0.005);

        let controller = ShutdownController::new();
        let (addr, task) = serve_metrics(
            "127.0.0.1:0".parse().unwrap(),
            Arc::new(metrics),
            controller.subscribe(),
        )
        .await
        .unwrap();
        assert_ne!(addr.port(), 0, "port 0 resolves to a real port");

        let response = get(addr, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
        assert!(response.contains("# TYPE peergrid_slots_cleared counter"), "{response}");
        assert!(response.contains("peergrid_slots_cleared_total 3"), "{response}");
        assert!(response.contains("peergrid_policy_lag 2"), "{response}");
        assert!(response.contains("peergrid_clearing_seconds_bucket{le=\"0.01\"} 1"), "{response}");
        assert!(response.trim_end().ends_with("# EOF"), "{response}");

        assert!(get(addr, "GET / HTTP/1.1\r\n\r\n").await.starts_with("HTTP/1.1 404"));
        assert!(get(addr, "POST /metrics HTTP/1.1\r\n\r\n").await.starts_with("HTTP/1.1 405"));

        controller.trigger();
        tokio::time::timeout(Duration::from_secs(5), task).await.expect("server stops").unwrap();
        assert!(TcpStream::connect(addr).await.is_err(), "listener closed");
    }
}
