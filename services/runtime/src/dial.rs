//! Dialling a peergrid server, the one way every client does it (the
//! agent-node towards the market and the trainer, `peergrid ctl`, the
//! `health`/`status` subcommands): a [`Target`] is a URL —
//! `http://host:port`, `https://host:port` or `local://NAME` (a server in
//! this process) — plus the CA to trust for `https`.
//!
//! [`Target::check`] validates the combination without touching a file
//! (for start-up validation); [`Target::connect`] reads the CA on every
//! call (a rotated CA file is picked up on reconnect) and dials. Errors
//! name the caller's own settings ([`SettingNames`]): a bad URL or CA is
//! [`RuntimeError::Config`]/[`RuntimeError::Io`] (fix the configuration),
//! a server that does not answer or fails the TLS handshake is
//! [`RuntimeError::Connect`] (retry).

use std::path::Path;
use std::time::Duration;

use tonic::transport::{Channel, Endpoint, Uri};

use crate::error::RuntimeError;
use crate::inproc;

/// What a client calls its URL, CA and server-name settings, so that
/// errors speak the caller's language (`market`/`tls_ca`/`tls_domain` for
/// the agent-node's market, `learner`/`learner_tls_ca`/… for its trainer).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SettingNames {
    pub url: &'static str,
    pub ca: &'static str,
    pub domain: &'static str,
}

/// A server to dial and how to trust it.
#[derive(Clone, Copy, Debug)]
pub struct Target<'a> {
    pub url: &'a str,
    /// PEM CA certificate(s) to trust; required for, and only for, `https://`.
    pub ca: Option<&'a Path>,
    /// The name to verify in the server's certificate instead of the URL's host.
    pub domain: Option<&'a str>,
    pub names: SettingNames,
}

/// The URL's scheme, as far as dialling cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scheme<'a> {
    Http,
    Https,
    Local(&'a str),
}

impl<'a> Target<'a> {
    /// Checks the URL and that the TLS settings fit it: `https` needs a CA
    /// (this build has no system root store), `http` and `local` take none,
    /// a server name only comes with a CA. Reads no file.
    pub fn check(&self) -> Result<(), RuntimeError> {
        let names = self.names;
        let scheme = self.scheme()?;
        match (scheme, self.ca) {
            (Scheme::Https, None) => {
                return Err(RuntimeError::config(
                    names.ca,
                    format!(
                        "is required for an https:// {}: name the CA to trust (this build has no system root store)",
                        names.url
                    ),
                ))
            }
            (Scheme::Http, Some(_)) => {
                return Err(RuntimeError::config(
                    names.ca,
                    format!("is only used with an https:// {}, got '{}'", names.url, self.url),
                ))
            }
            (Scheme::Local(_), Some(_)) => {
                return Err(RuntimeError::config(names.ca, format!("TLS is for TCP; {} is in this process", self.url)))
            }
            _ => {}
        }
        if let Some(domain) = self.domain {
            if scheme != Scheme::Https || domain.is_empty() {
                return Err(RuntimeError::config(
                    names.domain,
                    format!("must be a non-empty name, used only with an https:// {}", names.url),
                ));
            }
        }
        Ok(())
    }

    /// Whether the server is dialled over TLS.
    pub fn is_tls(&self) -> bool {
        self.url.starts_with("https://")
    }

    /// [`check`](Self::check)s, reads the CA, and connects with the
    /// endpoint settings `tune` applies (timeouts, windows, keep-alive;
    /// they apply to in-process pipes too).
    pub async fn connect(
        &self,
        tune: impl FnOnce(Endpoint) -> Endpoint,
    ) -> Result<Channel, RuntimeError> {
        self.check()?;
        let connected = match self.scheme()? {
            Scheme::Local(name) => inproc::connect(tune(inproc::endpoint()), name).await,
            Scheme::Http | Scheme::Https => {
                let mut endpoint = Endpoint::from_shared(self.url.to_owned())
                    .map_err(|e| RuntimeError::config(self.names.url, chain(&e)))?;
                if let Some(ca) = self.ca {
                    let tls = crate::tls::client_tls(ca, self.domain, self.names.ca)?;
                    endpoint = endpoint
                        .tls_config(tls)
                        .map_err(|e| RuntimeError::config(self.names.ca, chain(&e)))?;
                }
                tune(endpoint).connect().await
            }
        };
        connected.map_err(|e| RuntimeError::Connect { url: self.url.to_owned(), reason: chain(&e) })
    }

    /// Whether the server reports `service` SERVING on gRPC health: the
    /// probe of the servers' `health` subcommands (container health
    /// checks). Dialling gets 3 s, the call 5 s; an error when the server
    /// cannot be asked (a bad setting, no answer, a refused call).
    pub async fn check_health(&self, service: &str) -> Result<bool, RuntimeError> {
        use tonic_health::pb::health_check_response::ServingStatus;
        use tonic_health::pb::health_client::HealthClient;
        use tonic_health::pb::HealthCheckRequest;
        let channel = self
            .connect(|e| e.connect_timeout(Duration::from_secs(3)).timeout(Duration::from_secs(5)))
            .await?;
        let request = HealthCheckRequest { service: service.to_owned() };
        let response = HealthClient::new(channel).check(request).await.map_err(|status| {
            RuntimeError::Connect { url: self.url.to_owned(), reason: format!("health: {status}") }
        })?;
        Ok(response.into_inner().status == ServingStatus::Serving as i32)
    }

    fn scheme(&self) -> Result<Scheme<'a>, RuntimeError> {
        let url = self.url;
        if let Some(name) = inproc::local_name(url) {
            inproc::check_name(name)
                .map_err(|e| RuntimeError::config(self.names.url, e.to_string()))?;
            return Ok(Scheme::Local(name));
        }
        let (rest, scheme) = match (url.strip_prefix("http://"), url.strip_prefix("https://")) {
            (Some(rest), _) => (rest, Scheme::Http),
            (_, Some(rest)) => (rest, Scheme::Https),
            _ => {
                return Err(RuntimeError::config(
                    self.names.url,
                    format!("must be an http://, https:// or local:// URL, got '{url}'"),
                ))
            }
        };
        if rest.is_empty() || rest.starts_with('/') || url.parse::<Uri>().is_err() {
            return Err(RuntimeError::config(
                self.names.url,
                format!("is not a valid URL: '{url}'"),
            ));
        }
        Ok(scheme)
    }
}

/// Renders an error with its sources (tonic's transport errors say little
/// at the top: the TLS or TCP reason is underneath).
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAMES: SettingNames =
        SettingNames { url: "learner", ca: "learner_tls_ca", domain: "learner_tls_domain" };

    fn check(url: &str, ca: Option<&str>, domain: Option<&str>) -> Result<(), String> {
        let target = Target { url, ca: ca.map(Path::new), domain, names: NAMES };
        target.check().map_err(|e| match e {
            RuntimeError::Config { name, .. } => name,
            other => panic!("not a config error: {other}"),
        })
    }

    #[test]
    fn tls_settings_must_fit_the_url() {
        assert_eq!(check("http://127.0.0.1:50061", None, None), Ok(()));
        assert_eq!(check("https://trainer:50061", Some("ca.pem"), None), Ok(()));
        assert_eq!(check("https://10.0.0.5:50061", Some("ca.pem"), Some("trainer")), Ok(()));
        assert_eq!(check("local://trainer-1", None, None), Ok(()));
        let bad = [
            ("https://trainer:50061", None, None, "learner_tls_ca"),
            ("http://trainer:50061", Some("ca.pem"), None, "learner_tls_ca"),
            ("local://trainer-1", Some("ca.pem"), None, "learner_tls_ca"),
            ("https://trainer:50061", Some("ca.pem"), Some(""), "learner_tls_domain"),
            ("http://trainer:50061", None, Some("trainer"), "learner_tls_domain"),
            ("ftp://trainer:1", None, None, "learner"),
            ("trainer:50061", None, None, "learner"),
            ("http://", None, None, "learner"),
            ("https:///path", Some("ca.pem"), None, "learner"),
            ("local://two words", None, None, "learner"),
        ];
        for (url, ca, domain, field) in bad {
            assert_eq!(check(url, ca, domain), Err(field.to_owned()), "{url} {ca:?} {domain:?}");
        }
    }

    #[tokio::test]
    async fn connect_reports_a_missing_ca_as_configuration_and_a_silent_server_as_connect() {
        let missing = Target {
            url: "https://127.0.0.1:1",
            ca: Some(Path::new("/nonexistent/ca.pem")),
            domain: None,
            names: NAMES,
        };
        let e = missing.connect(|e| e).await.unwrap_err();
        assert!(matches!(&e, RuntimeError::Io { name, .. } if name == "learner_tls_ca"), "{e}");
        // Port 1 on loopback: nothing listens, the connect is refused.
        let silent = Target { url: "http://127.0.0.1:1", ca: None, domain: None, names: NAMES };
        let e = silent.connect(|e| e.connect_timeout(Duration::from_secs(2))).await.unwrap_err();
        assert!(
            matches!(&e, RuntimeError::Connect { url, .. } if url == "http://127.0.0.1:1"),
            "{e}"
        );
        let nobody =
            Target { url: "local://nobody-listens-here", ca: None, domain: None, names: NAMES };
        assert!(matches!(nobody.connect(|e| e).await.unwrap_err(), RuntimeError::Connect { .. }));
    }
}
