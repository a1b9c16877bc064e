//! The LearnerService over gRPC: the only file of the trainer that names
//! generated types.
//!
//! - `PushExperience` (agent token): each batch is validated by
//!   `peergrid_proto::convert::experience` and then judged by the learner;
//!   a malformed batch, an unknown version or a duplicate ends the stream
//!   with INVALID_ARGUMENT / FAILED_PRECONDITION naming the problem, and
//!   nothing of that batch is ingested.
//! - `SubscribePolicy` (agent token): the current version at once (if newer
//!   than `after_version`), then every new one, and the current one again
//!   when an update was discarded (synchronous nodes then push their
//!   rollouts again); a slow subscriber skips to the newest version rather
//!   than queueing old ones.
//! - `BeginRollout` (agent token): a synchronous node's word that it began
//!   a rollout; the learner may wait for it (advisory, see the proto).
//! - `Status` (either token).

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use peergrid_proto::convert::experience::{
    node_name_from_wire, policy_update_from_blob, rollout_from_wire, rollout_start_from_wire,
};
use peergrid_proto::pb::learner::v1 as pb;
use peergrid_proto::pb::learner::v1::learner_service_server::{
    LearnerService, LearnerServiceServer,
};
use peergrid_proto::WireError;
use peergrid_runtime::{
    authorize, authorize_reader, ClientAuth, GrpcListener, RequireToken, Role, Secret,
    ServeOptions, Services, Shutdown, Target, Tokens, MAX_MESSAGE_BYTES,
};
use tokio_stream::{Stream, StreamExt};
use tonic::codec::CompressionEncoding;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Request, Response, Status, Streaming};
use tracing::{debug, info, warn};

use crate::learner::{Ingest, LearnerHandle, Refusal};
use crate::metrics::TrainerMetrics;

#[derive(Clone)]
struct Learner {
    handle: LearnerHandle,
    tokens: Arc<Tokens>,
    metrics: TrainerMetrics,
    /// Ends the policy streams, so a graceful stop does not wait for them.
    shutdown: Shutdown,
}

fn refusal_status(r: Refusal) -> Status {
    match r {
        Refusal::UnknownVersion { .. } => {
            WireError::invalid("policy_version", r.to_string()).into()
        }
        Refusal::Duplicate { .. } => WireError::failed_precondition(r.to_string()).into(),
        Refusal::Stopped => WireError::Unavailable { reason: r.to_string() }.into(),
    }
}

type PolicyStream = Pin<Box<dyn Stream<Item = Result<pb::PolicyUpdate, Status>> + Send>>;

#[tonic::async_trait]
impl LearnerService for Learner {
    async fn push_experience(
        &self,
        request: Request<Streaming<pb::ExperienceBatch>>,
    ) -> Result<Response<pb::PushSummary>, Status> {
        authorize(request.metadata(), Role::Agent, &self.tokens)?;
        let mut stream = request.into_inner();
        let mut summary = pb::PushSummary::default();
        while let Some(batch) = stream.next().await {
            let batch = batch.map_err(peergrid_runtime::serve::normalise_status)?;
            let rollout = rollout_from_wire(batch).inspect_err(|e| {
                self.metrics.batches_rejected.inc();
                warn!("experience batch rejected: {e}");
            })?;
            let node = rollout.node_name.clone();
            let (verdict, act_version) = self.handle.ingest_and_next(rollout).await;
            summary.act_version = act_version;
            match verdict {
                Ok(Ingest::Accepted { samples }) => {
                    summary.batches_accepted += 1;
                    summary.samples_accepted += samples as u64;
                    debug!(%node, samples, "experience accepted");
                }
                Ok(Ingest::Stale { version, current }) => {
                    summary.batches_stale += 1;
                    debug!(%node, version, current, "stale experience dropped");
                }
                Err(refusal) => {
                    self.metrics.batches_rejected.inc();
                    warn!(%node, "experience batch refused: {refusal}");
                    return Err(refusal_status(refusal));
                }
            }
        }
        Ok(Response::new(summary))
    }

    type SubscribePolicyStream = PolicyStream;

    async fn subscribe_policy(
        &self,
        request: Request<pb::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribePolicyStream>, Status> {
        authorize(request.metadata(), Role::Agent, &self.tokens)?;
        let req = request.into_inner();
        let node = node_name_from_wire(&req.node_name, "node_name")?;
        let mut rx = self.handle.published();
        let guard = self.handle.subscriber(&node);
        let after = req.after_version;
        let mut shutdown = self.shutdown.clone();
        info!(%node, after_version = after, "policy subscriber joined");
        let stream = async_stream(move |tx| async move {
            let _guard = guard;
            // The last (version, republished) sent: a version announced
            // again after a discarded update goes out once more.
            let mut sent: Option<(u64, u32)> = None;
            loop {
                let current = rx.borrow_and_update().clone();
                let key = (current.version, current.republished);
                if current.version > after && sent.is_none_or(|s| key > s) {
                    let update =
                        policy_update_from_blob(current.version, current.weights.as_ref().clone());
                    if tx.send(Ok(update)).await.is_err() {
                        break;
                    }
                    sent = Some(key);
                }
                tokio::select! {
                    changed = rx.changed() => if changed.is_err() { break },
                    // The client went away: drop the subscription now, not at
                    // the next publish (the learner stops waiting for it).
                    _ = tx.closed() => break,
                    _ = shutdown.recv() => break,
                }
            }
            info!(%node, "policy subscriber left");
        });
        Ok(Response::new(stream))
    }

    async fn begin_rollout(
        &self,
        request: Request<pb::RolloutStart>,
    ) -> Result<Response<pb::RolloutStartReply>, Status> {
        authorize(request.metadata(), Role::Agent, &self.tokens)?;
        let start = rollout_start_from_wire(request.into_inner())?;
        let awaited = self.handle.begin_rollout(start).await;
        Ok(Response::new(pb::RolloutStartReply { awaited }))
    }

    async fn status(
        &self,
        request: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        authorize_reader(request.metadata(), &self.tokens)?;
        let s = self.handle.status();
        Ok(Response::new(pb::StatusResponse {
            version: s.version,
            updates_done: s.updates_done,
            samples_per_s: s.samples_per_s,
            policy_lag: s.policy_lag,
            mode: s.mode.name().into(),
            samples_total: s.samples_total,
            batches_stale: s.batches_stale,
            subscribers: s.subscribers,
            mean_episode_return: s.mean_episode_return,
        }))
    }
}

/// A stream fed by a task through a small channel (the task ends when the
/// client goes away and the channel closes).
fn async_stream<F, Fut>(body: F) -> PolicyStream
where
    F: FnOnce(tokio::sync::mpsc::Sender<Result<pb::PolicyUpdate, Status>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(2);
    tokio::spawn(body(tx));
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}

/// What [`serve`] needs besides the listener and the learner.
pub struct ServeParams {
    /// How connections are admitted (cap, handshake deadline, socket
    /// options) and how long open calls get after shutdown.
    pub options: ServeOptions,
    pub tokens: Arc<Tokens>,
    pub metrics: TrainerMetrics,
    pub shutdown: Shutdown,
}

/// Serves the LearnerService with health and reflection on `listener` (TCP,
/// or in-process for the embedded run) until `shutdown` fires (policy
/// streams end then too) or the learner thread dies. Either way health
/// turns NOT_SERVING first; open calls get the options' drain to finish
/// (`peergrid_runtime::serve`).
pub async fn serve(
    listener: GrpcListener,
    handle: LearnerHandle,
    params: ServeParams,
) -> anyhow::Result<()> {
    let ServeParams { options, tokens, metrics, shutdown } = params;
    let learner_died = {
        let handle = handle.clone();
        async move { handle.died().await }
    };
    let stop = {
        let mut shutdown = shutdown.clone();
        async move {
            tokio::select! {
                _ = shutdown.recv() => {}
                reason = learner_died => tracing::error!("the learner thread died ({reason}): not serving, stopping"),
            }
        }
    };
    // `RequireToken` refuses callers without a valid token on their headers,
    // before a body is read or decompressed; handlers check the role.
    let service = LearnerServiceServer::new(Learner {
        handle,
        tokens: Arc::clone(&tokens),
        metrics,
        shutdown,
    })
    .accept_compressed(CompressionEncoding::Gzip)
    .send_compressed(CompressionEncoding::Gzip)
    .max_decoding_message_size(MAX_MESSAGE_BYTES)
    .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let service = InterceptedService::new(service, RequireToken::new(tokens));
    let services = Services::new(peergrid_proto::FILE_DESCRIPTOR_SET).add_service(service);
    peergrid_runtime::serve(listener, services, stop, options).await?;
    Ok(())
}

/// A channel to the trainer at `target`: `http://host:port`,
/// `https://host:port` (trusting the target's CA), or `local://NAME` for a
/// trainer in this process.
async fn connect(target: Target<'_>) -> anyhow::Result<Channel> {
    Ok(target
        .connect(|e| e.connect_timeout(Duration::from_secs(3)).timeout(Duration::from_secs(5)))
        .await?)
}

/// Whether the trainer at `target` reports SERVING (the `health` command).
pub async fn check_health(target: Target<'_>) -> anyhow::Result<bool> {
    Ok(target.check_health(peergrid_proto::services::LEARNER_SERVICE).await?)
}

/// The trainer's status as JSON (the `status` command), with `token` if given.
pub async fn fetch_status(
    target: Target<'_>,
    token: Option<&Secret>,
) -> anyhow::Result<serde_json::Value> {
    use peergrid_proto::pb::learner::v1::learner_service_client::LearnerServiceClient;
    let channel = connect(target).await?;
    let mut client = LearnerServiceClient::with_interceptor(channel, ClientAuth::new(token));
    let s = client.status(pb::StatusRequest {}).await?.into_inner();
    Ok(serde_json::json!({
        "version": s.version,
        "updates_done": s.updates_done,
        "samples_per_s": s.samples_per_s,
        "policy_lag": s.policy_lag,
        "mode": s.mode,
        "samples_total": s.samples_total,
        "batches_stale": s.batches_stale,
        "subscribers": s.subscribers,
        "mean_episode_return": if s.mean_episode_return.is_finite() { Some(s.mean_episode_return) } else { None },
    }))
}
