//! Service plumbing every peergrid node shares, so node crates contain only
//! their own logic:
//!
//! - [`logging`]: `tracing` initialisation (RUST_LOG filter, text or JSON);
//! - [`metrics`]: a Prometheus registry and a tiny `GET /metrics` server;
//! - [`token`]: the [`Secret`] bearer token and [`load_token`], how every
//!   binary reads `X_TOKEN` or `X_TOKEN_FILE`;
//! - [`auth`]: bearer tokens with roles, checked in constant time, and the
//!   client-side interceptor;
//! - [`tls`]: PEM files → rustls server and client configs;
//! - [`node_args`]: the flags every node shares ([`NodeArgs`] with
//!   [`AuthArgs`], and [`ServerArgs`] for gRPC servers), their
//!   `PEERGRID_<NODE>_<FIELD>` variables and the one layered merge
//!   (defaults ← file ← env ← flags);
//! - [`dataset`]: the `--dataset`/`--data-file` flags every node shares;
//! - [`dial`]: the client side of every connection (URL, CA, in-process);
//! - [`probe`]: a server binary's `health`/`status` subcommands
//!   ([`ProbeArgs`], [`health_command`]);
//! - [`shutdown`]: one shutdown signal every task listens to, and the wait
//!   for SIGTERM / Ctrl-C;
//! - [`inproc`] and [`listener`]: where a gRPC server listens, a TCP port
//!   or an in-process name (`local://NAME`, for the embedded run);
//! - [`connections`]: the accept loop of every gRPC TCP server (connection
//!   cap, handshake deadline, file-descriptor exhaustion, TLS);
//! - [`serve`](mod@serve): the gRPC server kit both servers share:
//!   [`serve()`] with health and reflection, connection hygiene, size
//!   limits, status normalisation, bounded shutdown;
//! - [`exit`]: every binary's exit code (0 done, 2 bad input, 1 failed);
//! - [`backoff`]: exponential reconnect delays with optional seeded jitter;
//! - [`tfevents`]: TensorBoard event files (the trainer's scalars).
//!
//! It knows tonic's request metadata and `Status`, but nothing of the
//! generated peergrid code, and it never decides outcomes (that is the core).

pub mod auth;
pub mod backoff;
pub mod connections;
pub mod dataset;
pub mod dial;
pub mod error;
pub mod exit;
pub mod inproc;
pub mod listener;
pub mod logging;
pub mod metrics;
pub mod node_args;
pub mod probe;
pub mod serve;
pub mod shutdown;
pub mod tfevents;
pub mod tls;
pub mod token;

pub use auth::{
    authorize, authorize_reader, BearerInterceptor, ClientAuth, RequireRole, RequireToken, Role,
    Tokens,
};
pub use backoff::Backoff;
pub use connections::{track_calls, Acceptor, ConnectionArgs, ConnectionLimits, ConnectionMetrics};
pub use dataset::{check_renamed_env, DatasetArgs};
pub use dial::{SettingNames, Target};
pub use error::RuntimeError;
pub use exit::{exit_code, no_other_bad_input, BadInput};
pub use listener::GrpcListener;
pub use logging::{init_tracing, LogArgs, LogFormat};
pub use metrics::{serve_metrics, serve_metrics_if_configured, Metrics};
pub use node_args::{
    read_json, replace_if_given, AgentNode, AuthArgs, MarketNode, NodeArgs, NodeEnv, ServerArgs,
    ServerSettings, TrainerNode,
};
pub use probe::{health_command, ProbeArgs, ProbeEnv};
pub use serve::{serve, server_builder, status_layer, ServeOptions, Services, MAX_MESSAGE_BYTES};
pub use shutdown::{wait_for_signal, Shutdown, ShutdownController, Stopping};
pub use tfevents::EventWriter;
pub use token::{load_token, load_token_with, Secret, MIN_TOKEN_LEN};
