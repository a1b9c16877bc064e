//! `ProcessCluster`: the cluster as users run it — separate `market-node`,
//! `trainer` and `agent-node` processes (the binaries cargo built next to
//! the test executables), on loopback ports, with real tokens, learning on,
//! at the binaries' default timing unless a test passes flags. Tests kill,
//! stop and restart processes and read both services' `Status` over gRPC.
//!
//! Every process's output goes to a log file in the cluster's directory;
//! a failing wait names what it waited for and shows the tails of the logs.
//! Dropping the cluster kills every process it started.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use peergrid_proto::pb::learner::v1 as learner;
use peergrid_proto::pb::market::v1 as market;
use peergrid_runtime::auth::BearerInterceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

use crate::cluster::{AGENT_TOKEN, OPERATOR_TOKEN};

/// The directory holding the workspace's binaries: `PEERGRID_BIN_DIR`, or
/// `target/<profile>` next to the test executable.
pub fn bin_dir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("PEERGRID_BIN_DIR") {
        return Ok(PathBuf::from(dir));
    }
    let exe = std::env::current_exe()?;
    // target/<profile>/deps/<test-exe>
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or_else(|| anyhow!("no target dir above {}", exe.display()))?;
    Ok(dir.to_path_buf())
}

/// The path of the workspace binary `name`; an error saying how to build it
/// when it is missing.
pub fn binary(name: &str) -> Result<PathBuf> {
    let path = bin_dir()?.join(name);
    if !path.exists() {
        bail!("{} is not built: run `cargo build --workspace --bins` (or the test suite with --workspace)", path.display());
    }
    Ok(path)
}

/// The processes' log filter unless `PEERGRID_PROC_LOG` says otherwise.
const PROC_LOG: &str = "info,peergrid_agent_node::learning=debug,peergrid_trainer::grpc=debug";

/// A free loopback port (bound and released; fine for tests on one machine).
pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// One started process and how to start it again.
struct Proc {
    name: String,
    program: PathBuf,
    args: Vec<String>,
    child: Option<Child>,
    log: PathBuf,
}

impl Proc {
    fn spawn(&mut self) -> Result<()> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log)?;
        let child = Command::new(&self.program)
            .args(&self.args)
            .env("PEERGRID_AGENT_TOKEN", AGENT_TOKEN)
            .env("PEERGRID_OPERATOR_TOKEN", OPERATOR_TOKEN)
            // Each rollout's verdict and wait, so a stalled round can be read off the logs.
            .env(
                "RUST_LOG",
                std::env::var("PEERGRID_PROC_LOG").unwrap_or_else(|_| PROC_LOG.to_owned()),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start {}", self.name))?;
        self.child = Some(child);
        Ok(())
    }

    fn signal(&self, signal: &str) {
        if let Some(child) = &self.child {
            let _ =
                Command::new("kill").arg(format!("-{signal}")).arg(child.id().to_string()).status();
        }
    }

    /// SIGKILL and reap.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then wait up to `timeout` for a clean exit.
    fn stop(&mut self, timeout: Duration) -> Result<ExitStatus> {
        self.signal("TERM");
        let Some(mut child) = self.child.take() else { bail!("{} is not running", self.name) };
        let started = Instant::now();
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(status);
            }
            if started.elapsed() > timeout {
                let _ = child.kill();
                let _ = child.wait();
                bail!("{} did not exit within {timeout:?} of SIGTERM", self.name);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `Some(status)` if the process has exited on its own.
    fn exited(&mut self) -> Option<ExitStatus> {
        self.child.as_mut().and_then(|c| c.try_wait().ok().flatten())
    }

    fn tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// How to start a process cluster.
#[derive(Clone, Debug)]
pub struct ProcessClusterBuilder {
    /// Prosumers per agent-node.
    pub nodes: Vec<u32>,
    pub seed: u64,
    /// Extra flags of each binary (defaults otherwise).
    pub market_args: Vec<String>,
    pub trainer_args: Vec<String>,
    pub agent_args: Vec<String>,
}

impl Default for ProcessClusterBuilder {
    fn default() -> Self {
        ProcessClusterBuilder {
            nodes: vec![24, 24],
            seed: 7,
            market_args: Vec::new(),
            trainer_args: Vec::new(),
            agent_args: Vec::new(),
        }
    }
}

pub struct ProcessCluster {
    pub dir: PathBuf,
    market: Proc,
    trainer: Proc,
    agents: Vec<Proc>,
    market_port: u16,
    trainer_port: u16,
}

type MarketClient = market::market_service_client::MarketServiceClient<
    InterceptedService<Channel, BearerInterceptor>,
>;
type LearnerClient = learner::learner_service_client::LearnerServiceClient<
    InterceptedService<Channel, BearerInterceptor>,
>;

impl ProcessClusterBuilder {
    /// Starts the trainer, the market and the agent-nodes, and waits until
    /// every node has joined the market.
    pub async fn start(self, name: &str) -> Result<ProcessCluster> {
        let dir = std::env::temp_dir().join(format!("peergrid-proc-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let (market_port, trainer_port) = (free_port()?, free_port()?);
        let mut market_args = vec![format!("--listen=127.0.0.1:{market_port}")];
        market_args.extend(self.market_args.iter().cloned());
        let mut trainer_args = vec![
            format!("--listen=127.0.0.1:{trainer_port}"),
            format!("--run-dir={}", dir.join("trainer").display()),
            format!("--seed={}", self.seed),
        ];
        trainer_args.extend(self.trainer_args.iter().cloned());
        let proc = |name: &str, program: PathBuf, args: Vec<String>| Proc {
            name: name.to_owned(),
            program,
            args,
            child: None,
            log: dir.join(format!("{name}.log")),
        };
        let mut cluster = ProcessCluster {
            market: proc("market-node", binary("market-node")?, market_args),
            trainer: proc("trainer", binary("trainer")?, trainer_args),
            agents: Vec::new(),
            dir: dir.clone(),
            market_port,
            trainer_port,
        };
        cluster.trainer.spawn()?;
        cluster.market.spawn()?;
        for (i, &prosumers) in self.nodes.iter().enumerate() {
            let name = format!("node-{i}");
            let mut args = vec![
                format!("--market=http://127.0.0.1:{market_port}"),
                format!("--learner=http://127.0.0.1:{trainer_port}"),
                format!("--name={name}"),
                format!("--prosumers={prosumers}"),
                format!("--seed={}", self.seed),
                format!("--state-dir={}", dir.join(&name).display()),
                "--actor-threads=1".to_owned(),
            ];
            args.extend(self.agent_args.iter().cloned());
            let mut p = proc(&name, binary("agent-node")?, args);
            p.spawn()?;
            cluster.agents.push(p);
        }
        let total: u32 = self.nodes.iter().sum();
        cluster
            .wait("every agent-node joined the market", Duration::from_secs(60), |m, _| {
                m.prosumers == total
            })
            .await?;
        Ok(cluster)
    }
}

impl ProcessCluster {
    async fn channel(port: u16) -> Result<Channel> {
        Ok(Endpoint::from_shared(format!("http://127.0.0.1:{port}"))?
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(5))
            .connect()
            .await?)
    }

    async fn market_client(&self) -> Result<MarketClient> {
        let channel = Self::channel(self.market_port).await?;
        Ok(market::market_service_client::MarketServiceClient::with_interceptor(
            channel,
            BearerInterceptor::new(OPERATOR_TOKEN)?,
        ))
    }

    async fn learner_client(&self) -> Result<LearnerClient> {
        let channel = Self::channel(self.trainer_port).await?;
        Ok(learner::learner_service_client::LearnerServiceClient::with_interceptor(
            channel,
            BearerInterceptor::new(OPERATOR_TOKEN)?,
        ))
    }

    pub async fn market_status(&self) -> Result<market::StatusResponse> {
        Ok(self.market_client().await?.status(market::StatusRequest {}).await?.into_inner())
    }

    pub async fn trainer_status(&self) -> Result<learner::StatusResponse> {
        Ok(self.learner_client().await?.status(learner::StatusRequest {}).await?.into_inner())
    }

    /// Both statuses, when both services answer.
    pub async fn statuses(&self) -> Result<(market::StatusResponse, learner::StatusResponse)> {
        Ok((self.market_status().await?, self.trainer_status().await?))
    }

    /// Polls until `done` holds, failing after `timeout` with `what`, the
    /// last statuses seen and the tails of the logs. Fails at once if an
    /// agent-node exited on its own.
    pub async fn wait(
        &mut self,
        what: &str,
        timeout: Duration,
        done: impl Fn(&market::StatusResponse, &learner::StatusResponse) -> bool,
    ) -> Result<(market::StatusResponse, learner::StatusResponse)> {
        let started = Instant::now();
        let mut last = None;
        let mut last_error = None;
        loop {
            self.check_agents_alive()?;
            match self.statuses().await {
                Ok((m, t)) => {
                    if done(&m, &t) {
                        return Ok((m, t));
                    }
                    last = Some((m, t));
                }
                Err(e) => last_error = Some(e),
            }
            if started.elapsed() > timeout {
                bail!(
                    "timed out after {timeout:?} waiting until {what}\nlast statuses: {last:#?}\nlast error: {last_error:?}\n{}",
                    self.logs(30)
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits until the trainer has published `n` more versions than `from`.
    pub async fn wait_for_learning(
        &mut self,
        from: u64,
        n: u64,
        timeout: Duration,
    ) -> Result<learner::StatusResponse> {
        let what = format!("the trainer publishes version {} (from {from})", from + n);
        Ok(self.wait(&what, timeout, |_, t| t.version >= from + n).await?.1)
    }

    /// Fails if an agent-node exited without being told to.
    pub fn check_agents_alive(&mut self) -> Result<()> {
        for a in &mut self.agents {
            if let Some(status) = a.exited() {
                bail!("{} exited on its own with {status}:\n{}", a.name, a.tail(40));
            }
        }
        Ok(())
    }

    pub fn agents(&self) -> usize {
        self.agents.len()
    }

    /// The market's gRPC address (`http://127.0.0.1:PORT`).
    pub fn market_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.market_port)
    }

    /// The trainer's gRPC address (`http://127.0.0.1:PORT`).
    pub fn trainer_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.trainer_port)
    }

    /// Name and pid of every running process (market-node, trainer,
    /// agent-nodes), e.g. to sample their memory.
    pub fn pids(&self) -> Vec<(String, u32)> {
        std::iter::once(&self.market)
            .chain(std::iter::once(&self.trainer))
            .chain(&self.agents)
            .filter_map(|p| p.child.as_ref().map(|c| (p.name.clone(), c.id())))
            .collect()
    }

    /// SIGKILL an agent-node (it can be restarted with [`Self::restart_agent`]).
    pub fn kill_agent(&mut self, i: usize) {
        self.agents[i].kill();
    }

    /// Starts agent-node `i` again with the same flags (and state dir).
    pub fn restart_agent(&mut self, i: usize) -> Result<()> {
        self.agents[i].kill();
        self.agents[i].spawn()
    }

    /// SIGTERM the trainer (it writes a checkpoint), then start it again
    /// resuming from its run directory.
    pub fn restart_trainer(&mut self) -> Result<()> {
        let status = self.trainer.stop(Duration::from_secs(30))?;
        if !status.success() {
            bail!("the trainer exited with {status} on SIGTERM:\n{}", self.trainer.tail(30));
        }
        if !self.trainer.args.iter().any(|a| a == "--resume") {
            self.trainer.args.push("--resume".to_owned());
        }
        self.trainer.spawn()
    }

    /// SIGTERM the market, then start a fresh one on the same port.
    pub fn restart_market(&mut self) -> Result<()> {
        let status = self.market.stop(Duration::from_secs(30))?;
        if !status.success() {
            bail!("the market-node exited with {status} on SIGTERM:\n{}", self.market.tail(30));
        }
        self.market.spawn()
    }

    /// The tails of every log.
    pub fn logs(&self, lines: usize) -> String {
        std::iter::once(&self.market)
            .chain(std::iter::once(&self.trainer))
            .chain(&self.agents)
            .map(|p| format!("--- {} ({}):\n{}", p.name, p.log.display(), p.tail(lines)))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Stops everything with SIGTERM; every process must exit 0.
    pub fn stop(mut self) -> Result<()> {
        let mut failures = Vec::new();
        for a in &mut self.agents {
            match a.stop(Duration::from_secs(30)) {
                Ok(s) if s.success() => {}
                Ok(s) => failures.push(format!("{} exited with {s}:\n{}", a.name, a.tail(20))),
                Err(e) => failures.push(e.to_string()),
            }
        }
        for p in [&mut self.market, &mut self.trainer] {
            match p.stop(Duration::from_secs(30)) {
                Ok(s) if s.success() => {}
                Ok(s) => failures.push(format!("{} exited with {s}:\n{}", p.name, p.tail(20))),
                Err(e) => failures.push(e.to_string()),
            }
        }
        if !failures.is_empty() {
            bail!("{}", failures.join("\n"));
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        Ok(())
    }
}
