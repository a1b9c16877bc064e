//! TLS material for every gRPC edge: reads the PEM files a configuration
//! names into tonic's rustls configs (ring provider), failing with an error
//! that names the setting and the file. Servers (market-node, trainer)
//! serve TLS when both `tls_cert` and `tls_key` are set ([`server_tls_pair`];
//! the handshake itself runs in [`crate::connections`]); clients trust one CA file ([`client_tls`], used
//! by [`crate::dial`]). This build carries no system or webpki root store,
//! so a client always names the CA it trusts.
//!
//! It opens no sockets.

use std::path::Path;

use std::sync::Arc;

use tonic::transport::{Certificate, ClientTlsConfig};

use crate::connections::{tls_server_config, TlsServerConfig};

use crate::error::RuntimeError;

/// The settings of a server's certificate and key, as every server names them.
pub const CERT_SETTING: &str = "tls_cert";
pub const KEY_SETTING: &str = "tls_key";

/// Both or neither: a certificate without its key (or the reverse) is a
/// configuration error naming the missing one.
pub fn check_server_pair(cert: Option<&Path>, key: Option<&Path>) -> Result<(), RuntimeError> {
    match (cert, key) {
        (Some(_), None) => Err(RuntimeError::config(
            KEY_SETTING,
            "is required when tls_cert is set (both or neither)",
        )),
        (None, Some(_)) => Err(RuntimeError::config(
            CERT_SETTING,
            "is required when tls_key is set (both or neither)",
        )),
        _ => Ok(()),
    }
}

/// The server side: a certificate chain and its private key, checked to
/// parse and to belong together, for the accept loop
/// ([`crate::connections`]), which runs each handshake under its deadline.
pub fn server_tls(cert: &Path, key: &Path) -> Result<Arc<TlsServerConfig>, RuntimeError> {
    let cert_pem = read_pem(cert, CERT_SETTING, "CERTIFICATE")?;
    let key_pem = read_pem(key, KEY_SETTING, "PRIVATE KEY")?;
    tls_server_config(&cert_pem, &key_pem).map_err(|e| {
        RuntimeError::config(
            "tls_cert/tls_key",
            format!(
                "{} and {} are not a usable certificate and key: {e}",
                cert.display(),
                key.display()
            ),
        )
    })
}

/// A server's TLS from its `tls_cert`/`tls_key` settings: both or neither
/// (checked with [`check_server_pair`]); `None` serves plain HTTP/2. The
/// files are read and parsed here, before anything binds, so a bad file is
/// a start-up error naming it.
pub fn server_tls_pair(
    cert: Option<&Path>,
    key: Option<&Path>,
) -> Result<Option<Arc<TlsServerConfig>>, RuntimeError> {
    check_server_pair(cert, key)?;
    match (cert, key) {
        (Some(cert), Some(key)) => server_tls(cert, key).map(Some),
        _ => Ok(None),
    }
}

/// The client side: trust the CA in `ca` (the setting `setting`), verify the
/// server's name as `domain` (default: the URL's host).
pub fn client_tls(
    ca: &Path,
    domain: Option<&str>,
    setting: &str,
) -> Result<ClientTlsConfig, RuntimeError> {
    let ca_pem = read_pem(ca, setting, "CERTIFICATE")?;
    let config = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca_pem));
    Ok(match domain {
        Some(d) => config.domain_name(d),
        None => config,
    })
}

/// Reads a PEM file and checks it holds a `-----BEGIN …{label}-----` block,
/// so an empty or swapped file is reported here by name rather than as an
/// anonymous handshake failure later.
fn read_pem(path: &Path, setting: &str, label: &str) -> Result<Vec<u8>, RuntimeError> {
    let pem = std::fs::read(path).map_err(|source| RuntimeError::Io {
        name: setting.to_owned(),
        path: path.display().to_string(),
        source,
    })?;
    let text = String::from_utf8_lossy(&pem);
    let has_block = text
        .lines()
        .any(|l| l.starts_with("-----BEGIN ") && l.trim_end().ends_with(&format!("{label}-----")));
    if !has_block {
        return Err(RuntimeError::config(
            setting,
            format!("{} holds no PEM {label} block", path.display()),
        ));
    }
    Ok(pem)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/tls").join(name)
    }

    #[test]
    fn loads_the_fixtures_and_names_bad_files() {
        server_tls(&fixture("server.pem"), &fixture("server.key")).unwrap();
        client_tls(&fixture("ca.pem"), Some("localhost"), "tls_ca").unwrap();
        let e = server_tls(&fixture("server.key"), &fixture("server.key")).unwrap_err().to_string();
        assert!(e.contains("tls_cert") && e.contains("server.key"), "{e}");
        let e = server_tls(&fixture("server.pem"), &fixture("server.pem")).unwrap_err().to_string();
        assert!(e.contains("tls_key") && e.contains("server.pem"), "{e}");
        let e =
            server_tls(&fixture("missing.pem"), &fixture("server.key")).unwrap_err().to_string();
        assert!(e.contains("cannot read") && e.contains("missing.pem"), "{e}");
        let e = client_tls(&fixture("server.key"), None, "learner_tls_ca").unwrap_err().to_string();
        assert!(e.contains("learner_tls_ca") && e.contains("server.key"), "{e}");
    }

    #[test]
    fn a_server_needs_both_files_or_neither() {
        let (cert, key) = (fixture("server.pem"), fixture("server.key"));
        let e = server_tls_pair(Some(&cert), None).unwrap_err();
        assert!(matches!(&e, RuntimeError::Config { name, .. } if name == KEY_SETTING), "{e}");
        let e = server_tls_pair(None, Some(&key)).unwrap_err();
        assert!(matches!(&e, RuntimeError::Config { name, .. } if name == CERT_SETTING), "{e}");
        assert!(server_tls_pair(Some(&cert), Some(&key)).unwrap().is_some());
        assert!(server_tls_pair(None, None).unwrap().is_none());
        // A CA certificate where the key belongs is refused by name.
        let e = server_tls_pair(Some(&cert), Some(&fixture("ca.pem"))).unwrap_err().to_string();
        assert!(e.contains("tls_key") && e.contains("ca.pem"), "{e}");
    }
}
