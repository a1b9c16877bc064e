//! The trainer's configuration: defaults ← JSON file (`--config`) ←
//! environment variables and flags, validated before anything starts.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use peergrid_runtime::connections::{self, ConnectionLimits};
use peergrid_runtime::{replace_if_given, NodeArgs, ServerArgs, ServerSettings, TrainerNode};
use serde::{Deserialize, Serialize};

use crate::error::TrainerError;
use crate::learner::{LearnerSettings, Mode};
use crate::ppo::PpoConfig;

/// Where libtorch runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum DeviceChoice {
    #[default]
    Cpu,
    /// The first CUDA device; an error when none is available.
    Cuda,
    /// CUDA when available, else CPU.
    Auto,
}

impl DeviceChoice {
    pub fn resolve(self) -> Result<tch::Device, TrainerError> {
        match self {
            DeviceChoice::Cpu => Ok(tch::Device::Cpu),
            DeviceChoice::Auto => Ok(tch::Device::cuda_if_available()),
            DeviceChoice::Cuda if tch::Cuda::is_available() => Ok(tch::Device::Cuda(0)),
            DeviceChoice::Cuda => Err(TrainerError::config(
                "device",
                "cuda requested but libtorch sees no CUDA device",
            )),
        }
    }
}

/// The JSON config file: both parts optional.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConfigFile {
    pub ppo: PpoConfig,
    pub learner: LearnerSettings,
}

/// The validated configuration of a trainer.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainerConfig {
    pub listen: SocketAddr,
    /// Serve in-process at `local://NAME` instead of on `listen` (for an
    /// embedding program such as `peergrid run --transport local`).
    pub local_name: Option<String>,
    pub metrics_listen: Option<SocketAddr>,
    /// Checkpoints go to `<run_dir>/checkpoints`, TensorBoard files to `<run_dir>/tensorboard`.
    pub run_dir: Option<PathBuf>,
    pub resume: bool,
    pub device: DeviceChoice,
    pub ppo: PpoConfig,
    pub learner: LearnerSettings,
    pub json_logs: bool,
    /// After SIGTERM, how long open calls (streams, idle connections,
    /// half-sent requests) get before the server abandons them.
    pub shutdown_timeout_ms: u64,
    /// Most open gRPC connections (more are accepted and closed at once).
    /// Unset: the soft RLIMIT_NOFILE minus a quarter, at most 4096.
    pub max_connections: Option<usize>,
    /// A new connection must send its HTTP/2 preface within this long.
    pub handshake_timeout_ms: u64,
    /// A served connection that carries no call for this long is closed.
    pub idle_timeout_ms: u64,
    /// Serve gRPC over TLS with this PEM certificate chain (both or neither
    /// with `tls_key`; agent-nodes then dial `https://` with `--learner-tls-ca`).
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    pub tls_key: Option<PathBuf>,
}

impl Default for TrainerConfig {
    fn default() -> Self {
        TrainerConfig {
            listen: "127.0.0.1:50061".parse().expect("a valid address"),
            local_name: None,
            metrics_listen: None,
            run_dir: None,
            resume: false,
            device: DeviceChoice::Cpu,
            ppo: PpoConfig::default(),
            learner: LearnerSettings::default(),
            json_logs: false,
            shutdown_timeout_ms: peergrid_runtime::serve::limits::SHUTDOWN_TIMEOUT_MS,
            max_connections: None,
            handshake_timeout_ms: connections::DEFAULT_HANDSHAKE_TIMEOUT_MS,
            idle_timeout_ms: connections::DEFAULT_IDLE_TIMEOUT_MS,
            tls_cert: None,
            tls_key: None,
        }
    }
}

/// A runtime setting error as a trainer configuration error with the same name.
fn config_error(e: peergrid_runtime::RuntimeError) -> TrainerError {
    match e {
        peergrid_runtime::RuntimeError::Config { name, reason } => {
            TrainerError::Config { field: name, reason }
        }
        other => TrainerError::Runtime(other),
    }
}

impl TrainerConfig {
    pub fn validate(&self) -> Result<(), TrainerError> {
        self.ppo.validate()?;
        self.learner.validate()?;
        if self.resume && self.run_dir.is_none() {
            return Err(TrainerError::config(
                "resume",
                "needs --run-dir (where the checkpoints are)",
            ));
        }
        if self.shutdown_timeout_ms > 600_000 {
            return Err(TrainerError::config("shutdown_timeout_ms", "must be in 0..=600000"));
        }
        self.connection_limits()?;
        peergrid_runtime::tls::check_server_pair(self.tls_cert.as_deref(), self.tls_key.as_deref())
            .map_err(config_error)?;
        if let Some(name) = &self.local_name {
            peergrid_runtime::inproc::check_name(name)
                .map_err(|e| TrainerError::config("local_name", e.to_string()))?;
            if self.tls_cert.is_some() {
                return Err(TrainerError::config(
                    "local_name",
                    "an in-process trainer serves without TLS: unset tls_cert/tls_key",
                ));
            }
        }
        Ok(())
    }

    /// The accept loop's limits; the error names the setting and its bound.
    pub fn connection_limits(&self) -> Result<ConnectionLimits, TrainerError> {
        ConnectionLimits::new(
            self.max_connections,
            Some(self.handshake_timeout_ms),
            Some(self.idle_timeout_ms),
        )
        .map_err(|e| TrainerError::config(e.field, e.reason))
    }

    pub fn checkpoint_dir(&self) -> Option<PathBuf> {
        self.run_dir.as_ref().map(|d| d.join("checkpoints"))
    }

    pub fn tensorboard_dir(&self) -> Option<PathBuf> {
        self.run_dir.as_ref().map(|d| d.join("tensorboard"))
    }
}

#[derive(Debug, Parser)]
#[command(
    name = "trainer",
    version,
    about = "peergrid trainer: the central PPO learner of a distributed run"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Query the gRPC health service of a running trainer; exit 0 if SERVING, 1 otherwise.
    Health {
        #[command(flatten)]
        target: TargetArgs,
    },
    /// Print a running trainer's status (policy version, updates, throughput),
    /// with the operator token (else the agent token) from the environment.
    Status {
        #[command(flatten)]
        target: TargetArgs,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// Where a client subcommand finds the trainer, and how it trusts it (the
/// agent-node's learner settings, same variables).
pub type TargetArgs = peergrid_runtime::ProbeArgs<TrainerNode>;

/// The trainer's flags: the ones every node has, the ones every server
/// has (`peergrid_runtime::node_args`), and its own.
#[derive(Debug, Default, clap::Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub node: NodeArgs<TrainerNode>,
    #[command(flatten)]
    pub server: ServerArgs<TrainerNode>,
    /// Directory for checkpoints and TensorBoard event files (none written when unset).
    #[arg(long, env = "PEERGRID_TRAINER_RUN_DIR")]
    pub run_dir: Option<PathBuf>,
    /// Continue from the latest checkpoint in --run-dir, with its version numbers.
    #[arg(long, env = "PEERGRID_TRAINER_RESUME")]
    pub resume: bool,
    #[arg(long, value_enum, env = "PEERGRID_TRAINER_MODE")]
    pub mode: Option<Mode>,
    /// Sync mode: nodes whose rollouts make an update [default: 1].
    #[arg(long, env = "PEERGRID_TRAINER_MIN_NODES")]
    pub min_nodes: Option<usize>,
    /// libtorch threads [default: 1, the fastest for this MLP on 2 cores].
    #[arg(long, env = "PEERGRID_TRAINER_TORCH_THREADS")]
    pub torch_threads: Option<usize>,
    /// Checkpoint every N updates [default: 10].
    #[arg(long, env = "PEERGRID_TRAINER_CHECKPOINT_EVERY")]
    pub checkpoint_every: Option<u64>,
    /// The run's seed (`PEERGRID_SEED`, as `peergrid run --seed`): here it
    /// seeds the initial weights and minibatch shuffling [default: 1].
    #[arg(long, env = "PEERGRID_SEED")]
    pub seed: Option<u64>,
    #[arg(long, value_enum, env = "PEERGRID_TRAINER_DEVICE")]
    pub device: Option<DeviceChoice>,
}

impl RunArgs {
    /// Defaults ← file (`{"ppo": PpoConfig, "learner": LearnerSettings}`,
    /// both optional) ← flags/environment, validated.
    pub fn resolve(self) -> Result<TrainerConfig, TrainerError> {
        let file: ConfigFile = self.node.read_config().map_err(config_error)?;
        let mut c =
            TrainerConfig { ppo: file.ppo, learner: file.learner, ..TrainerConfig::default() };
        self.node.apply(&mut c.metrics_listen, &mut c.json_logs);
        self.server.apply(ServerSettings {
            listen: &mut c.listen,
            tls_cert: &mut c.tls_cert,
            tls_key: &mut c.tls_key,
            shutdown_timeout_ms: &mut c.shutdown_timeout_ms,
            max_connections: &mut c.max_connections,
            handshake_timeout_ms: &mut c.handshake_timeout_ms,
            idle_timeout_ms: &mut c.idle_timeout_ms,
        });
        c.run_dir = self.run_dir;
        c.resume = self.resume;
        replace_if_given(&mut c.learner.mode, self.mode);
        replace_if_given(&mut c.learner.min_nodes, self.min_nodes);
        replace_if_given(&mut c.learner.torch_threads, self.torch_threads);
        replace_if_given(&mut c.learner.checkpoint_every, self.checkpoint_every);
        replace_if_given(&mut c.ppo.seed, self.seed);
        replace_if_given(&mut c.device, self.device);
        c.validate()?;
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use peergrid_runtime::connections::ConnectionArgs;
    use peergrid_runtime::{LogArgs, LogFormat};

    #[test]
    fn an_in_process_name_is_checked_and_log_format_json_sets_json_logs() {
        let bad =
            TrainerConfig { local_name: Some("no spaces".into()), ..TrainerConfig::default() };
        let e = bad.validate().unwrap_err();
        assert!(matches!(&e, TrainerError::Config { field, .. } if field == "local_name"), "{e}");
        let good =
            TrainerConfig { local_name: Some("trainer-1".into()), ..TrainerConfig::default() };
        good.validate().expect("a valid name");

        let logs = |log_format| RunArgs {
            node: NodeArgs {
                logs: LogArgs { log_format: Some(log_format), json_logs: false },
                ..NodeArgs::default()
            },
            ..RunArgs::default()
        };
        let json = logs(LogFormat::Json);
        assert!(json.resolve().unwrap().json_logs);
        let text = logs(LogFormat::Text);
        assert!(!text.resolve().unwrap().json_logs);
    }

    #[test]
    fn connection_limits_come_from_the_flags_and_are_bounded() {
        let connections = ConnectionArgs {
            max_connections: Some(64),
            handshake_timeout_ms: Some(500),
            idle_timeout_ms: Some(2_000),
        };
        let args = RunArgs {
            server: ServerArgs { connections, ..ServerArgs::default() },
            ..RunArgs::default()
        };
        let limits = args.resolve().unwrap().connection_limits().unwrap();
        assert_eq!(
            (
                limits.max_connections,
                limits.handshake_timeout.as_millis(),
                limits.idle_timeout.as_millis()
            ),
            (64, 500, 2_000)
        );
        for (config, field) in [
            (
                TrainerConfig { max_connections: Some(0), ..TrainerConfig::default() },
                "max_connections",
            ),
            (
                TrainerConfig { handshake_timeout_ms: 0, ..TrainerConfig::default() },
                "handshake_timeout_ms",
            ),
            (TrainerConfig { idle_timeout_ms: 10, ..TrainerConfig::default() }, "idle_timeout_ms"),
        ] {
            let e = config.validate().unwrap_err();
            assert!(matches!(&e, TrainerError::Config { field: f, .. } if f == field), "{e}");
        }
    }

    #[test]
    fn tls_needs_both_files_and_a_tcp_listener() {
        let field = |args: &[&str]| match Cli::try_parse_from([&["trainer"], args].concat())
            .unwrap()
            .run
            .resolve()
        {
            Ok(_) => "ok".to_owned(),
            Err(TrainerError::Config { field, .. }) => field,
            Err(other) => panic!("not a config error: {other}"),
        };
        assert_eq!(field(&["--tls-cert", "server.pem"]), "tls_key");
        assert_eq!(field(&["--tls-key", "server.key"]), "tls_cert");
        assert_eq!(field(&["--tls-cert", "server.pem", "--tls-key", "server.key"]), "ok");
        let local = TrainerConfig {
            local_name: Some("trainer-1".into()),
            tls_cert: Some("server.pem".into()),
            tls_key: Some("server.key".into()),
            ..TrainerConfig::default()
        };
        assert!(
            matches!(local.validate().unwrap_err(), TrainerError::Config { field, .. } if field == "local_name")
        );
    }
}
