//! Where a node's gRPC server accepts connections: a TCP port or an
//! in-process name ([`crate::inproc`]).
//!
//! The market-node and the trainer bind a [`GrpcListener`] at start-up
//! (so a taken port or name is a start-up error), report its [`url`] to
//! whoever starts their clients, and hand it to their `serve`, which runs
//! the same tonic router over either kind of connection (TCP connections
//! through [`crate::connections::Acceptor`]).
//!
//! [`url`]: GrpcListener::url

use std::io;
use std::net::SocketAddr;

use tokio::net::TcpListener;

use crate::inproc;

/// A bound gRPC listener.
#[derive(Debug)]
pub enum GrpcListener {
    /// A TCP listener and the address it bound.
    Tcp(TcpListener, SocketAddr),
    Local(inproc::Incoming),
}

impl GrpcListener {
    /// Claims the in-process name `local_name` when given, else binds the
    /// TCP address `addr` (port 0 picks a free port). The error says which.
    pub async fn bind(addr: SocketAddr, local_name: Option<&str>) -> io::Result<GrpcListener> {
        match local_name {
            Some(name) => inproc::listen(name)
                .map(GrpcListener::Local)
                .map_err(|e| io::Error::new(e.kind(), format!("listening on local://{name}: {e}"))),
            None => {
                let tcp = async {
                    let listener = TcpListener::bind(addr).await?;
                    let bound = listener.local_addr()?;
                    Ok(GrpcListener::Tcp(listener, bound))
                };
                tcp.await.map_err(|e: io::Error| {
                    io::Error::new(e.kind(), format!("binding gRPC listener {addr}: {e}"))
                })
            }
        }
    }

    /// The bound TCP address; `None` for an in-process listener.
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        match self {
            GrpcListener::Tcp(_, addr) => Some(*addr),
            GrpcListener::Local(_) => None,
        }
    }

    /// The URL clients connect to: `http://ADDR` (`https://` with `tls`) or `local://NAME`.
    pub fn url(&self, tls: bool) -> String {
        match self {
            GrpcListener::Local(incoming) => incoming.url(),
            GrpcListener::Tcp(_, addr) => {
                format!("{}://{addr}", if tls { "https" } else { "http" })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn urls_name_the_transport() {
        let tcp = GrpcListener::bind("127.0.0.1:0".parse().unwrap(), None).await.unwrap();
        let addr = tcp.tcp_addr().expect("a TCP port");
        assert_eq!(tcp.url(false), format!("http://{addr}"));
        assert_eq!(tcp.url(true), format!("https://{addr}"));
        let local = GrpcListener::bind("127.0.0.1:0".parse().unwrap(), Some("listener-url-test"))
            .await
            .unwrap();
        assert_eq!(
            (local.tcp_addr(), local.url(false)),
            (None, "local://listener-url-test".to_owned())
        );
    }
}
