//! TLS material for the gRPC edge: reads the PEM files the configuration
//! names into rustls configs (ring provider), failing with an error that
//! names the file. It opens no sockets: the server side goes to the accept
//! loop (`peergrid_runtime::connections`), which runs the handshake under
//! its deadline. Without `tls_cert`/`tls_key` the market serves plain HTTP/2.

use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use peergrid_runtime::connections::{tls_server_config, TlsServerConfig};
use tonic::transport::{Certificate, ClientTlsConfig};

/// The server side: the market's certificate chain and private key, checked
/// to parse and to belong together.
pub fn server_tls(cert: &Path, key: &Path) -> Result<Arc<TlsServerConfig>> {
    let cert_pem = read_pem(cert, "tls_cert", "CERTIFICATE")?;
    let key_pem = read_pem(key, "tls_key", "PRIVATE KEY")?;
    tls_server_config(&cert_pem, &key_pem)
        .map_err(|e| anyhow::anyhow!("tls_cert/tls_key ({}, {}): {e}", cert.display(), key.display()))
}

/// The client side (the `health` subcommand): trust `ca`, verify the
/// server's name as `domain` (default: the URL's host).
pub fn client_tls(ca: &Path, domain: Option<&str>) -> Result<ClientTlsConfig> {
    let ca_pem = read_pem(ca, "tls_ca", "CERTIFICATE")?;
    let config = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca_pem));
    Ok(match domain {
        Some(d) => config.domain_name(d),
        None => config,
    })
}

/// Reads a PEM file and checks it holds a `-----BEGIN …{label}-----` block,
/// so an empty or swapped file is reported here by name rather than as an
/// anonymous handshake failure later.
fn read_pem(path: &Path, setting: &str, label: &str) -> Result<Vec<u8>> {
    let pem = std::fs::read(path).with_context(|| format!("{setting}: cannot read {}", path.display()))?;
    let text = String::from_utf8_lossy(&pem);
    let has_block = text.lines().any(|l| l.starts_with("-----BEGIN ") && l.trim_end().ends_with(&format!("{label}-----")));
    if !has_block {
        bail!("{setting}: {} holds no PEM {label} block", path.display());
    }
    Ok(pem)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/tls").join(name)
    }

    #[test]
    fn loads_the_fixtures_and_names_bad_files() {
        server_tls(&fixture("server.pem"), &fixture("server.key")).unwrap();
        client_tls(&fixture("ca.pem"), Some("localhost")).unwrap();
        let e = server_tls(&fixture("server.key"), &fixture("server.key")).unwrap_err().to_string();
        assert!(e.contains("tls_cert") && e.contains("server.key"), "{e}");
        let e = server_tls(&fixture("server.pem"), &fixture("server.pem")).unwrap_err().to_string();
        assert!(e.contains("tls_key") && e.contains("server.pem"), "{e}");
        let e = server_tls(&fixture("missing.pem"), &fixture("server.key")).unwrap_err().to_string();
        assert!(e.contains("cannot read") && e.contains("missing.pem"), "{e}");
    }
}
