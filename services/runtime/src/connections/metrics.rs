//! Connection metrics and the TLS server configuration.

use super::*;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct RefusedLabels {
    pub(super) reason: &'static str,
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
    pub(super) refused: Family<RefusedLabels, Counter>,
    pub(super) open: Gauge,
    pub(super) handshake_timeouts: Counter,
    pub(super) idle_closed: Counter,
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
