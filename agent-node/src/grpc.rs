//! The market client: the only file of the agent-node that names generated
//! (`pb`) types. Everything crossing it is converted here, in one pass, with
//! the validated conversions of `peergrid_proto::convert`, into domain
//! values the session works with: [`Registration`], [`Inbound`] (an
//! `OpenSlot`, a `ClearedSlot` — self-describing, so decoded without the
//! batch we sent — or a [`Refusal`]). The one thing kept of a sent batch is
//! the [`Outbox`], for sending it again on a new stream.
//!
//! The remote policy's client ([`PolicyClient`], `--policy remote:URL`)
//! lives here too: it encodes an `ObservationBatch` and decodes the answer
//! into a validated `ActionBatch`.
//!
//! Every channel (market, trainer, remote policy) is dialled by `peergrid_runtime::dial`
//! (TLS when the URL is `https://`), carry the agent bearer token on every
//! call ([`ClientAuth`]; none with `--insecure-no-auth`), accept gzip
//! responses, gzips its own messages with `--gzip`, and raises the
//! decode limit to [`MAX_MESSAGE_BYTES`] (a batch of 100,000 reports is
//! ~10 MB before compression).

use std::ops::Range;
use std::time::Duration;

use peergrid_core::household::HouseholdReport;
use peergrid_core::observation::OpenSlot;
use peergrid_core::physics::Envelope;
use peergrid_core::policy::remote::{ActionBatch, ObservationBatch};
use peergrid_core::prosumer::ProsumerSpec;
use peergrid_core::reward::RewardWeights;
use peergrid_core::settlement::ClearedSlot;
use peergrid_core::units::ProsumerId;
use peergrid_proto::convert::cleared::slot_cleared_from_wire;
use peergrid_proto::convert::slot::{report_to_wire, slot_open_from_wire};
use peergrid_proto::convert::{envelope_to_wire, reward_weights_from_json};
use peergrid_proto::pb::market::v1 as pb;
use peergrid_proto::pb::market::v1::market_service_client::MarketServiceClient;
use peergrid_proto::pb::policy::v1 as policy_pb;
use peergrid_proto::WireError;
use peergrid_runtime::serve::limits;
use peergrid_runtime::{ClientAuth, Target, MAX_MESSAGE_BYTES};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::codec::{CompressionEncoding, Streaming};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::config::AgentConfig;
use crate::error::AgentError;

type Client = MarketServiceClient<InterceptedService<Channel, ClientAuth>>;

/// What the market assigned this node.
#[derive(Clone, PartialEq)]
pub struct Registration {
    pub session_id: String,
    /// Proves ownership of the session in `Join` and on resume; never logged.
    pub secret: String,
    /// How long the market keeps our ids and households while we are gone, ms.
    pub lease_grace_ms: u64,
    pub first_prosumer_id: ProsumerId,
    pub prosumer_count: u32,
    pub dataset: String,
    pub slot_minutes: u32,
    pub reward_weights: RewardWeights,
    pub next_slot: u64,
}

impl std::fmt::Debug for Registration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registration")
            .field("session_id", &self.session_id)
            .field("secret", &"<redacted>")
            .field("first_prosumer_id", &self.first_prosumer_id)
            .field("prosumer_count", &self.prosumer_count)
            .field("next_slot", &self.next_slot)
            .finish_non_exhaustive()
    }
}

/// A session to resume: what the node keeps from its registration.
#[derive(Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Resume {
    pub session_id: String,
    pub secret: String,
    /// Lets a market that restarted (and forgot us) re-create the session.
    pub first_prosumer_id: ProsumerId,
    pub prosumer_count: u32,
}

impl std::fmt::Debug for Resume {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Resume({}, ids {}+{}, secret <redacted>)",
            self.session_id, self.first_prosumer_id, self.prosumer_count
        )
    }
}

impl Resume {
    /// The hosted ids.
    pub fn range(&self) -> Range<ProsumerId> {
        self.first_prosumer_id..self.first_prosumer_id.saturating_add(self.prosumer_count)
    }
}

impl Registration {
    pub fn resume(&self) -> Resume {
        Resume {
            session_id: self.session_id.clone(),
            secret: self.secret.clone(),
            first_prosumer_id: self.first_prosumer_id,
            prosumer_count: self.prosumer_count,
        }
    }

    /// The hosted ids.
    pub fn range(&self) -> Range<ProsumerId> {
        self.first_prosumer_id..self.first_prosumer_id.saturating_add(self.prosumer_count)
    }
}

/// The market's status, for `health`.
#[derive(Clone, Debug, PartialEq)]
pub struct MarketStatus {
    pub slot: u64,
    pub prosumers: u32,
    pub nodes: u32,
    pub mode: String,
    pub paused: bool,
}

/// A connected market client.
pub struct MarketClient {
    inner: Client,
}

/// A channel to `target` (the market or the trainer) with the node's
/// tuning: connect timeout, no Nagle, HTTP/2 windows with room for a whole
/// slot's batch in flight (see the market's server), keep-alive. The same
/// settings apply to an in-process `local://NAME` target
/// (`peergrid run --transport local`).
async fn channel(cfg: &AgentConfig, target: Target<'_>) -> Result<Channel, AgentError> {
    let connect_timeout = Duration::from_millis(cfg.connect_timeout_ms);
    let channel = target
        .connect(|endpoint| {
            endpoint
                .connect_timeout(connect_timeout)
                .tcp_nodelay(true)
                .initial_stream_window_size(limits::HTTP2_STREAM_WINDOW_BYTES)
                .initial_connection_window_size(limits::HTTP2_CONNECTION_WINDOW_BYTES)
                .http2_keep_alive_interval(Duration::from_secs(10))
                .keep_alive_timeout(Duration::from_secs(20))
                .keep_alive_while_idle(true)
        })
        .await?;
    Ok(channel)
}

/// The interceptor adding the agent token to every call (none with `--insecure-no-auth`).
fn auth(cfg: &AgentConfig) -> ClientAuth {
    ClientAuth::new(cfg.token.as_ref())
}

impl MarketClient {
    pub async fn connect(cfg: &AgentConfig) -> Result<MarketClient, AgentError> {
        let channel = channel(cfg, cfg.market_target()).await?;
        let mut inner = MarketServiceClient::with_interceptor(channel, auth(cfg))
            .accept_compressed(CompressionEncoding::Gzip)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        if cfg.gzip {
            inner = inner.send_compressed(CompressionEncoding::Gzip);
        }
        Ok(MarketClient { inner })
    }

    /// Registers, or resumes a session: a market that restarted (or let
    /// the lease expire) re-creates it with its range if that is free.
    pub async fn register(
        &mut self,
        name: &str,
        count: u32,
        resume: Option<&Resume>,
    ) -> Result<Registration, AgentError> {
        let request = pb::RegisterRequest {
            node_name: name.to_owned(),
            prosumer_count: count,
            resume_session_id: resume.map(|r| r.session_id.clone()).unwrap_or_default(),
            resume_first_prosumer_id: resume.map(|r| r.first_prosumer_id),
            resume_secret: resume.map(|r| r.secret.clone()).unwrap_or_default(),
        };
        let r = self.inner.register(request).await?.into_inner();
        if r.session_id.is_empty()
            || r.prosumer_count == 0
            || r.first_prosumer_id.checked_add(r.prosumer_count).is_none()
        {
            return Err(AgentError::protocol(format!(
                "RegisterResponse: session_id must be set and [first_prosumer_id {}, +prosumer_count {}) a valid id range",
                r.first_prosumer_id, r.prosumer_count
            )));
        }
        if r.resume_secret.len() != 32 {
            return Err(AgentError::protocol(
                "RegisterResponse: resume_secret must be 32 hex characters",
            ));
        }
        Ok(Registration {
            reward_weights: reward_weights_from_json(
                &r.reward_weights_json,
                "reward_weights_json",
            )?,
            secret: r.resume_secret,
            lease_grace_ms: r.lease_grace_ms,
            session_id: r.session_id,
            first_prosumer_id: r.first_prosumer_id,
            prosumer_count: r.prosumer_count,
            dataset: r.dataset,
            slot_minutes: r.slot_minutes,
            next_slot: r.next_slot,
        })
    }

    /// Opens the session stream; the `Join` (one summary per spec) is queued
    /// before the call so a market that waits for it before answering works.
    pub async fn open_session(
        &mut self,
        resume: &Resume,
        specs: &[ProsumerSpec],
    ) -> Result<(SessionSender, SessionReceiver), AgentError> {
        let (tx, rx) = mpsc::channel(4);
        let join = pb::Join {
            session_id: resume.session_id.clone(),
            prosumers: specs.iter().map(summary).collect(),
            resume_secret: resume.secret.clone(),
        };
        tx.send(pb::NodeMessage { msg: Some(pb::node_message::Msg::Join(join)) })
            .await
            .map_err(|_| AgentError::protocol("session channel closed before the join"))?;
        let inbound = self.inner.session(ReceiverStream::new(rx)).await?.into_inner();
        Ok((SessionSender { tx }, SessionReceiver { inbound, hosted: resume.range() }))
    }

    pub async fn status(&mut self) -> Result<MarketStatus, AgentError> {
        let s = self.inner.status(pb::StatusRequest {}).await?.into_inner();
        Ok(MarketStatus {
            slot: s.slot,
            prosumers: s.prosumers,
            nodes: s.nodes,
            mode: s.mode,
            paused: s.paused,
        })
    }
}

fn summary(spec: &ProsumerSpec) -> pb::ProsumerSummary {
    envelope_to_wire(spec.id, &Envelope::of(spec))
}

/// The node's half of the session stream.
pub struct SessionSender {
    tx: mpsc::Sender<pb::NodeMessage>,
}

/// The last batch sent, kept until the session stops waiting for its slot,
/// so that a market that re-opens the slot on a new stream (the old one
/// broke, maybe before the batch left) gets the very same batch again: the
/// households have played the slot and cannot play it twice. A
/// retransmission buffer only: nothing reads the reports back.
#[derive(Debug, Default)]
pub struct Outbox {
    sent: Option<(u64, Vec<HouseholdReport>)>,
}

impl Outbox {
    /// Drops the kept batch (its slot is settled, by the market or locally).
    pub fn clear(&mut self) {
        self.sent = None;
    }
}

impl SessionSender {
    /// Sends slot `slot`'s `OrderBatch` (`reports` sorted by prosumer id)
    /// and keeps the reports in `outbox`, even if sending fails.
    pub async fn send_batch(
        &self,
        slot: u64,
        reports: Vec<HouseholdReport>,
        outbox: &mut Outbox,
    ) -> Result<(), AgentError> {
        let batch = pb::OrderBatch { slot, reports: reports.iter().map(report_to_wire).collect() };
        outbox.sent = Some((slot, reports));
        self.send(batch).await
    }

    /// Sends the batch `outbox` keeps for `slot` again; `false` if it keeps none for it.
    pub async fn resend_batch(&self, slot: u64, outbox: &Outbox) -> Result<bool, AgentError> {
        match &outbox.sent {
            Some((sent, reports)) if *sent == slot => {
                self.send(pb::OrderBatch {
                    slot,
                    reports: reports.iter().map(report_to_wire).collect(),
                })
                .await?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn send(&self, batch: pb::OrderBatch) -> Result<(), AgentError> {
        self.tx
            .send(pb::NodeMessage { msg: Some(pb::node_message::Msg::Batch(batch)) })
            .await
            .map_err(|_| AgentError::protocol("the session stream closed while sending a batch"))
    }

    /// Asks the market to hold the open slot `slot` (we wait for the learner).
    pub async fn send_hold(&self, slot: u64, reason: &str) -> Result<(), AgentError> {
        let hold = pb::Hold { slot, reason: reason.to_owned() };
        self.tx
            .send(pb::NodeMessage { msg: Some(pb::node_message::Msg::Hold(hold)) })
            .await
            .map_err(|_| AgentError::protocol("the session stream closed while sending a hold"))
    }
}

/// A batch or hold the market refused in-stream (the session stays open).
#[derive(Clone, Debug, PartialEq)]
pub struct Refusal {
    pub slot: u64,
    pub reason: String,
    pub message: String,
}

/// A market message, decoded and validated.
#[derive(Debug)]
pub enum Inbound {
    Open(OpenSlot),
    Cleared(ClearedSlot),
    Refused(Refusal),
}

/// The market's half of the session stream.
pub struct SessionReceiver {
    inbound: Streaming<pb::MarketMessage>,
    /// The ids this node hosts: a `SlotCleared` may name no other.
    hosted: Range<ProsumerId>,
}

impl SessionReceiver {
    /// The next market message; `None` when the market ended the stream.
    /// Cancel-safe (a `select!` branch).
    pub async fn next(&mut self) -> Result<Option<Inbound>, AgentError> {
        let Some(message) = self.inbound.message().await? else {
            return Ok(None);
        };
        match message.msg {
            Some(pb::market_message::Msg::Open(open)) => {
                Ok(Some(Inbound::Open(slot_open_from_wire(&open)?)))
            }
            Some(pb::market_message::Msg::Cleared(cleared)) => {
                Ok(Some(Inbound::Cleared(slot_cleared_from_wire(&cleared, &self.hosted)?)))
            }
            Some(pb::market_message::Msg::Refused(r)) => Ok(Some(Inbound::Refused(Refusal {
                slot: r.slot,
                reason: r.reason,
                message: r.message,
            }))),
            None => Err(AgentError::protocol("MarketMessage without a message")),
        }
    }
}

/// The trainer client: policy subscription and experience pushes.
#[derive(Clone)]
pub struct LearnerClient {
    inner: peergrid_proto::pb::learner::v1::learner_service_client::LearnerServiceClient<
        InterceptedService<Channel, ClientAuth>,
    >,
    /// The longest a push may take: the node's `learner_wait_ms`, as long
    /// as it would wait for a policy version anyway.
    push_timeout: Duration,
}

/// A subscription to the trainer's policy versions.
pub struct PolicyStream {
    inner: Streaming<peergrid_proto::pb::learner::v1::PolicyUpdate>,
}

impl PolicyStream {
    /// The next version (validated: digest, blob, version), or `None` when
    /// the trainer closed the stream.
    pub async fn next(
        &mut self,
    ) -> Result<Option<peergrid_core::policy::weights::PolicyWeights>, AgentError> {
        match self.inner.message().await {
            Ok(Some(update)) => peergrid_proto::convert::experience::policy_from_wire(&update)
                .map(Some)
                .map_err(|e| AgentError::protocol(format!("policy update from the trainer: {e}"))),
            Ok(None) => Ok(None),
            Err(status) => Err(AgentError::Rpc(status)),
        }
    }
}

/// What the trainer did with a rollout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pushed {
    Accepted,
    /// Too old: the trainer moved on without it.
    Stale,
}

/// A push's verdict and the version the trainer says to act with next
/// (synchronous mode; `None` from an asynchronous or older trainer).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PushReply {
    pub verdict: Pushed,
    pub act_version: Option<u64>,
}

impl LearnerClient {
    /// Connects to the trainer at `url` (the node's `learner`), trusting
    /// the node's `learner_tls_ca` for `https://`.
    pub async fn connect(cfg: &AgentConfig, url: &str) -> Result<LearnerClient, AgentError> {
        let target = Target {
            url,
            ca: cfg.learner_tls_ca.as_deref(),
            domain: cfg.learner_tls_domain.as_deref(),
            names: crate::config::LEARNER_SETTINGS,
        };
        let channel = channel(cfg, target).await?;
        let inner =
            peergrid_proto::pb::learner::v1::learner_service_client::LearnerServiceClient::with_interceptor(channel, auth(cfg))
                .accept_compressed(CompressionEncoding::Gzip)
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES);
        Ok(LearnerClient { inner, push_timeout: Duration::from_millis(cfg.learner_wait_ms) })
    }

    /// The trainer's mode: `true` for synchronous.
    pub async fn is_sync(&mut self) -> Result<bool, AgentError> {
        let s = self
            .inner
            .status(peergrid_proto::pb::learner::v1::StatusRequest {})
            .await
            .map_err(AgentError::Rpc)?;
        Ok(s.into_inner().mode == "sync")
    }

    /// Subscribes to versions newer than `after_version` (0: the current one first).
    pub async fn subscribe(
        &mut self,
        node_name: &str,
        after_version: u64,
    ) -> Result<PolicyStream, AgentError> {
        let request = peergrid_proto::pb::learner::v1::SubscribeRequest {
            node_name: node_name.to_owned(),
            after_version,
        };
        let inner =
            self.inner.subscribe_policy(request).await.map_err(AgentError::Rpc)?.into_inner();
        Ok(PolicyStream { inner })
    }

    /// Says that a rollout began (`BeginRollout`): whether the trainer waits for it.
    pub async fn begin_rollout(
        &mut self,
        start: &peergrid_core::experience::RolloutStart,
    ) -> Result<bool, AgentError> {
        let request = peergrid_proto::pb::learner::v1::RolloutStart::from(start);
        Ok(self.inner.begin_rollout(request).await.map_err(AgentError::Rpc)?.into_inner().awaited)
    }

    /// Pushes one rollout (a one-message client stream) and reports the verdict.
    pub async fn push(
        &mut self,
        rollout: &peergrid_core::experience::Rollout,
    ) -> Result<PushReply, AgentError> {
        let batch = peergrid_proto::pb::learner::v1::ExperienceBatch::from(rollout);
        // Checked here, not left to the encoder: over the limit, tonic resets
        // the stream and the node would only log "h2 protocol error".
        let bytes = prost::Message::encoded_len(&batch);
        if bytes > MAX_MESSAGE_BYTES {
            return Err(AgentError::Rpc(tonic::Status::resource_exhausted(format!(
                "rollout: {bytes} bytes encoded exceed the message limit of {MAX_MESSAGE_BYTES} bytes ({} samples); not sent",
                rollout.samples()
            ))));
        }
        // A trainer that took the call but never answers (stuck, not gone:
        // keep-alive notices a dead one) must not hold the node forever.
        let call = self.inner.push_experience(tokio_stream::once(batch));
        let summary = tokio::time::timeout(self.push_timeout, call)
            .await
            .map_err(|_| {
                AgentError::Rpc(tonic::Status::deadline_exceeded(format!(
                    "the trainer did not answer the rollout push within learner_wait_ms ({} ms)",
                    self.push_timeout.as_millis()
                )))
            })?
            .map_err(AgentError::Rpc)?
            .into_inner();
        let verdict = if summary.batches_accepted == 1 { Pushed::Accepted } else { Pushed::Stale };
        Ok(PushReply {
            verdict,
            act_version: (summary.act_version > 0).then_some(summary.act_version),
        })
    }
}

/// Why a remote policy call gave no usable answer.
#[derive(Debug)]
pub enum PolicyCallError {
    /// The call failed with this status (transport errors are `UNAVAILABLE`).
    Status(tonic::Status),
    /// The service answered something the contract does not allow.
    Invalid(WireError),
}

/// The remote policy client (`--policy remote:URL`).
pub struct PolicyClient {
    inner: policy_pb::policy_service_client::PolicyServiceClient<
        InterceptedService<Channel, ClientAuth>,
    >,
}

impl PolicyClient {
    /// Dials the remote policy named by the node's `policy` (with the
    /// node's connect timeout and agent token).
    pub async fn connect(cfg: &AgentConfig) -> Result<PolicyClient, AgentError> {
        let target = cfg
            .remote_policy_target()
            .ok_or_else(|| AgentError::config("policy", "is not remote:URL"))?;
        let channel = channel(cfg, target).await?;
        let inner = policy_pb::policy_service_client::PolicyServiceClient::with_interceptor(
            channel,
            auth(cfg),
        )
        .accept_compressed(CompressionEncoding::Gzip)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
        Ok(PolicyClient { inner })
    }

    /// One slot's call: the answer, decoded and validated on its own (the
    /// caller checks that it answers `batch`).
    pub async fn act(&mut self, batch: &ObservationBatch) -> Result<ActionBatch, PolicyCallError> {
        let response = self
            .inner
            .act(policy_pb::ActRequest::from(batch))
            .await
            .map_err(PolicyCallError::Status)?;
        ActionBatch::try_from(response.into_inner()).map_err(PolicyCallError::Invalid)
    }
}
