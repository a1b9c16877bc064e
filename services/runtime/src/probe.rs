//! The client side of a server binary: its `health` (and the trainer's
//! `status`) subcommands, which ask a running market-node or trainer
//! instead of starting one (container health checks, operators).
//!
//! [`ProbeArgs`] is where the server is (`--addr`, defaulting to the
//! server's own port on loopback) and how to trust it (`--tls-ca`,
//! `--tls-domain`, read from the same variables the agent-node's client of
//! that server reads, [`ProbeEnv`]). [`health_command`] asks gRPC health
//! and says on stderr why the server is not healthy.

use std::marker::PhantomData;
use std::path::PathBuf;

use crate::dial::{SettingNames, Target};
use crate::node_args::{MarketNode, TrainerNode};
use crate::RuntimeError;

/// Where a server's probes look by default, and the variables of the CA
/// and server name its clients trust it with.
pub trait ProbeEnv {
    /// `--addr` when not given.
    const DEFAULT_URL: &'static str;
    /// `--tls-ca`.
    const TLS_CA: &'static str;
    /// `--tls-domain`.
    const TLS_DOMAIN: &'static str;
}

impl ProbeEnv for MarketNode {
    const DEFAULT_URL: &'static str = "http://127.0.0.1:50051";
    const TLS_CA: &'static str = "PEERGRID_TLS_CA";
    const TLS_DOMAIN: &'static str = "PEERGRID_TLS_DOMAIN";
}

impl ProbeEnv for TrainerNode {
    const DEFAULT_URL: &'static str = "http://127.0.0.1:50061";
    const TLS_CA: &'static str = "PEERGRID_LEARNER_TLS_CA";
    const TLS_DOMAIN: &'static str = "PEERGRID_LEARNER_TLS_DOMAIN";
}

/// How the probes name their settings in errors.
const PROBE_SETTINGS: SettingNames =
    SettingNames { url: "--addr", ca: "--tls-ca", domain: "--tls-domain" };

/// Where a probe subcommand finds a running server (`#[command(flatten)]`).
#[derive(Clone, Debug, Default, clap::Args)]
pub struct ProbeArgs<N: ProbeEnv> {
    /// `http://host:port`, or `https://host:port` for a TLS server (with --tls-ca).
    #[arg(long, default_value = N::DEFAULT_URL)]
    pub addr: String,
    /// PEM CA certificate to trust for an `https://` address.
    #[arg(long, env = N::TLS_CA)]
    pub tls_ca: Option<PathBuf>,
    /// Verify the server's certificate for this name instead of the address's host.
    #[arg(long, env = N::TLS_DOMAIN)]
    pub tls_domain: Option<String>,
    /// Which server's defaults these are.
    #[arg(skip)]
    pub node: PhantomData<N>,
}

impl<N: ProbeEnv> ProbeArgs<N> {
    /// The server to dial, its errors naming these flags.
    pub fn target(&self) -> Target<'_> {
        Target {
            url: &self.addr,
            ca: self.tls_ca.as_deref(),
            domain: self.tls_domain.as_deref(),
            names: PROBE_SETTINGS,
        }
    }
}

/// The `health` subcommand of the binary `node`: `Ok` when the server at
/// `target` reports `service` SERVING; otherwise says why on stderr
/// (`NODE at ADDR is not serving`, or the error) and returns the error.
pub async fn health_command(
    node: &str,
    target: Target<'_>,
    service: &str,
) -> Result<(), RuntimeError> {
    let addr = target.url;
    match target.check_health(service).await {
        Ok(true) => Ok(()),
        Ok(false) => {
            eprintln!("{node} at {addr} is not serving");
            Err(RuntimeError::NotServing { url: addr.to_owned() })
        }
        Err(e) => {
            eprintln!("{node} at {addr}: {e}");
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Probe {
        #[command(flatten)]
        market: ProbeArgs<MarketNode>,
    }

    #[test]
    fn a_probe_defaults_to_the_servers_port_and_names_its_flags() {
        let probe = Probe::try_parse_from(["health", "--tls-domain", "market"]).unwrap();
        assert_eq!(probe.market.addr, "http://127.0.0.1:50051");
        assert_eq!(probe.market.target().domain, Some("market"));
        let e = Probe::try_parse_from(["health", "--addr", "https://127.0.0.1:1"])
            .unwrap()
            .market
            .target()
            .check()
            .unwrap_err();
        assert!(e.to_string().contains("--tls-ca"), "{e}");
        assert_eq!(TrainerNode::TLS_CA, "PEERGRID_LEARNER_TLS_CA");
    }

    #[tokio::test]
    async fn nothing_listening_is_an_error_naming_the_address() {
        // A port nobody listens on (bound, then released).
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let url = format!("http://{port}");
        let target = Target { url: &url, ca: None, domain: None, names: PROBE_SETTINGS };
        let e = health_command("market-node", target, "peergrid.market.v1.MarketService")
            .await
            .unwrap_err();
        assert!(e.to_string().contains(&url), "{e}");
    }
}
