//! `peergrid eval --policy remote:URL`: an external `PolicyService` (the
//! one an agent-node asks with `--policy remote:URL`, for example a Python
//! policy served with `peergrid.serve_policy`) evaluated like any policy.
//!
//! The simulator hands [`RemoteEvalPolicy`] every prosumer's observation
//! of a slot at once (`Policy::begin_slot`); it makes one `Act` call for
//! the slot (node name `peergrid-eval`, no feedback: nothing learns from
//! an evaluation) and plays the answer. An evaluation of a policy that did
//! not answer would be a rule-based one under another name, so the first
//! failure (no answer within the timeout, an error status, an answer that
//! does not fit the request) is kept, later slots play rule-based without
//! calling, and [`RemoteEvalPolicy::failure`] tells the command to refuse
//! the result before any report is written.

use std::time::Duration;

use anyhow::{Context, Result};
use peergrid_agent_node::grpc::{PolicyCallError, PolicyClient};
use peergrid_agent_node::{AgentConfig, PolicyChoice};
use peergrid_core::observation::{Observation, OBS_DIM};
use peergrid_core::policy::remote::ObservationBatch;
use peergrid_core::policy::{Action, Policy, RuleBased};
use peergrid_core::units::ProsumerId;

use peergrid_runtime::BadInput;

/// The node name the service sees in every call.
pub const EVAL_NODE_NAME: &str = "peergrid-eval";

/// How to call a remote policy (`--policy remote:URL`), shared by
/// `peergrid eval` and `peergrid run`.
#[derive(clap::Args, Debug, Clone)]
pub struct RemotePolicyArgs {
    /// With `--policy remote:URL`: how long the service may take for one
    /// slot, ms. In an evaluation a slot it misses fails the command; while
    /// `peergrid run` plays the training days, the agent-node plays that
    /// slot rule-based instead (counted).
    #[arg(long, default_value_t = 30_000)]
    pub remote_policy_timeout_ms: u64,
    /// PEM CA certificate(s) to trust for an `https://` policy service.
    #[arg(long, value_name = "FILE")]
    pub remote_policy_tls_ca: Option<std::path::PathBuf>,
}

impl Default for RemotePolicyArgs {
    fn default() -> Self {
        RemotePolicyArgs { remote_policy_timeout_ms: 30_000, remote_policy_tls_ca: None }
    }
}

/// The URL of `--policy remote:URL`; bad input (another form) names the flag.
pub fn remote_url(policy: &str) -> Result<&str, BadInput> {
    policy.strip_prefix(peergrid_agent_node::config::REMOTE_POLICY_PREFIX).ok_or_else(|| {
        BadInput::new(format!(
            "--policy must be remote:URL (a policy file goes to --checkpoint), got {policy}"
        ))
    })
}

/// A remote policy driven by the reference simulator.
pub struct RemoteEvalPolicy {
    runtime: tokio::runtime::Runtime,
    client: PolicyClient,
    url: String,
    timeout: Duration,
    /// This slot's answer, by position in the slot's id order.
    ids: Vec<ProsumerId>,
    actions: Vec<Action>,
    fallback: RuleBased,
    failure: Option<String>,
    calls: u64,
}

impl RemoteEvalPolicy {
    /// Dials `url` (`http://`, `https://` with `tls_ca`, or `local://`) with
    /// the agent token of `PEERGRID_AGENT_TOKEN`/`_FILE`, if set; each slot's
    /// call may take `timeout_ms`.
    pub fn connect(url: &str, args: &RemotePolicyArgs) -> Result<RemoteEvalPolicy> {
        let (tls_ca, timeout_ms) =
            (args.remote_policy_tls_ca.clone(), args.remote_policy_timeout_ms);
        if !(10..=600_000).contains(&timeout_ms) {
            return Err(BadInput::new(format!(
                "--remote-policy-timeout-ms must lie in 10..=600000, got {timeout_ms}"
            ))
            .into());
        }
        let token_env = peergrid_runtime::Tokens::AGENT_ENV;
        let token = peergrid_runtime::load_token(token_env)
            .map_err(|e| BadInput::new(format!("{token_env}: {e}")))?;
        let config = AgentConfig {
            policy: PolicyChoice::Remote(url.to_owned()),
            remote_policy_tls_ca: tls_ca,
            token,
            connect_timeout_ms: timeout_ms,
            ..AgentConfig::default()
        };
        let target = config.remote_policy_target().context("a remote policy has a target")?;
        target.check().map_err(|e| BadInput::new(format!("--policy remote:{url}: {e}")))?;
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let client = runtime
            .block_on(PolicyClient::connect(&config))
            .with_context(|| format!("connecting to the remote policy at {url}"))?;
        Ok(RemoteEvalPolicy {
            runtime,
            client,
            url: url.to_owned(),
            timeout: Duration::from_millis(timeout_ms),
            ids: Vec::new(),
            actions: Vec::new(),
            fallback: RuleBased,
            failure: None,
            calls: 0,
        })
    }

    /// The first slot the service failed, and why; `None` if it answered every slot.
    pub fn failure(&self) -> Option<&str> {
        self.failure.as_deref()
    }

    /// Slots the service answered.
    pub fn calls(&self) -> u64 {
        self.calls
    }

    fn call(&mut self, batch: &ObservationBatch) -> Result<Vec<Action>, String> {
        let (client, timeout) = (&mut self.client, self.timeout);
        let answer = self
            .runtime
            .block_on(async { tokio::time::timeout(timeout, client.act(batch)).await })
            .map_err(|_| format!("no answer within {} ms", timeout.as_millis()))?
            .map_err(|e| match e {
                PolicyCallError::Status(s) => format!("{:?}: {}", s.code(), s.message()),
                PolicyCallError::Invalid(e) => format!("an invalid answer: {e}"),
            })?;
        answer.answers(batch).map_err(|e| format!("the answer does not fit the request: {e}"))?;
        Ok(answer.actions)
    }
}

impl Policy for RemoteEvalPolicy {
    fn name(&self) -> &str {
        "remote"
    }

    fn act(&mut self, prosumer: ProsumerId, obs: &Observation) -> Action {
        match self.ids.binary_search(&prosumer) {
            Ok(i) if i < self.actions.len() => self.actions[i],
            _ => self.fallback.act(prosumer, obs),
        }
    }

    fn decides_per_slot(&self) -> bool {
        true
    }

    fn begin_slot(&mut self, slot: u64, observations: &[(ProsumerId, Observation)]) {
        self.actions.clear();
        self.ids = observations.iter().map(|(id, _)| *id).collect();
        if self.failure.is_some() {
            return;
        }
        let rows = observations
            .iter()
            .map(|(_, obs)| {
                let mut row = [0.0; OBS_DIM];
                obs.features(&mut row);
                row
            })
            .collect();
        let batch = ObservationBatch {
            node_name: EVAL_NODE_NAME.to_owned(),
            slot,
            prosumer_ids: self.ids.clone(),
            observations: rows,
            previous: None,
        };
        match self.call(&batch) {
            Ok(actions) => {
                self.actions = actions;
                self.calls += 1;
            }
            Err(why) => {
                self.failure =
                    Some(format!("the remote policy at {} failed slot {slot}: {why}", self.url));
            }
        }
    }
}

/// Evaluates `remote` as the learned row on the held-out days of `setup`
/// and writes the report with `curve` — unless the service failed a slot:
/// then the command fails, naming the slot, and nothing is written (the
/// row would be rule-based under another name).
pub fn evaluate_remote_and_report(
    setup: &crate::evaluate::Setup,
    remote: &mut RemoteEvalPolicy,
    curve: &[peergrid_eval::LearningPoint],
) -> Result<()> {
    let evaluation = peergrid_eval::compare_policies(
        &setup.scenario,
        Some(&mut *remote),
        setup.info.optimum_mode,
        &setup.info.mpc,
    )?;
    if let Some(failure) = remote.failure() {
        anyhow::bail!("{failure}; no report written (its learned row would be rule-based)");
    }
    eprintln!("remote policy at {}: {} slots answered", remote.url, remote.calls());
    crate::evaluate::report(setup, &evaluation, curve)
}
