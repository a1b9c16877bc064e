//! The agent-node's learner client and the trainer's server agree on the
//! largest message (issue 12): 64 MiB, the README's limits table. Before,
//! the client allowed 256 MiB, so a too-large rollout was sent in full and
//! refused by the server after it had read it. Against a stand-in learner
//! served with the servers' kit and limit, a rollout one megabyte over the
//! limit now fails in the client with `RESOURCE_EXHAUSTED` naming the
//! limit, before it is sent, and the server never sees it; one under the
//! limit is delivered.
//!
//! And a push to a learner that takes the call but never answers fails
//! after the node's `learner_wait_ms` with `DEADLINE_EXCEEDED`, instead of
//! holding the node (and the slot it holds at the market) forever.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use peergrid_agent_node::config::AgentConfig;
use peergrid_agent_node::error::AgentError;
use peergrid_agent_node::grpc::{LearnerClient, Pushed};
use peergrid_core::experience::Rollout;
use peergrid_proto::pb::learner::v1 as pb;
use peergrid_proto::pb::learner::v1::learner_service_server::{
    LearnerService, LearnerServiceServer,
};
use peergrid_runtime::{
    serve as serve_grpc, GrpcListener, RuntimeError, ServeOptions, Services, MAX_MESSAGE_BYTES,
};
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

/// A learner that accepts every batch and counts the bytes it received
/// (or, with `hang`, reads the batch and never answers).
#[derive(Clone, Default)]
struct Learner {
    received_bytes: Arc<AtomicU64>,
    hang: Arc<std::sync::atomic::AtomicBool>,
}

#[tonic::async_trait]
impl LearnerService for Learner {
    type SubscribePolicyStream =
        Pin<Box<dyn Stream<Item = Result<pb::PolicyUpdate, Status>> + Send>>;

    async fn push_experience(
        &self,
        request: Request<Streaming<pb::ExperienceBatch>>,
    ) -> Result<Response<pb::PushSummary>, Status> {
        let mut batches = request.into_inner();
        let mut accepted = 0;
        while let Some(batch) = batches.next().await {
            let batch = batch?;
            self.received_bytes
                .fetch_add(prost::Message::encoded_len(&batch) as u64, Ordering::Relaxed);
            accepted += 1;
        }
        if self.hang.load(Ordering::Relaxed) {
            std::future::pending::<()>().await;
        }
        Ok(Response::new(pb::PushSummary { batches_accepted: accepted, ..Default::default() }))
    }

    async fn subscribe_policy(
        &self,
        _: Request<pb::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribePolicyStream>, Status> {
        Err(Status::unimplemented("not in this test"))
    }

    async fn status(
        &self,
        _: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        Err(Status::unimplemented("not in this test"))
    }

    async fn begin_rollout(
        &self,
        _: Request<pb::RolloutStart>,
    ) -> Result<Response<pb::RolloutStartReply>, Status> {
        Err(Status::unimplemented("not in this test"))
    }
}

/// A rollout of one prosumer whose observations make its encoding about `bytes` long.
fn rollout_of(bytes: usize) -> Rollout {
    let floats = bytes / 4;
    Rollout {
        node_name: "big".into(),
        policy_version: 1,
        steps: 1,
        prosumer_ids: vec![0],
        observations: vec![0.5; floats],
        ..Rollout::default()
    }
}

/// Serves `learner` on a free loopback port as the trainer serves (the
/// shared kit, `peergrid_runtime::serve`, with its limit and status
/// layer); its URL and the server's task.
async fn serve(learner: Learner) -> (String, tokio::task::JoinHandle<Result<(), RuntimeError>>) {
    let listener = GrpcListener::bind("127.0.0.1:0".parse().unwrap(), None).await.unwrap();
    let url = listener.url(false);
    let service = LearnerServiceServer::new(learner.clone())
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let services = Services::new(peergrid_proto::FILE_DESCRIPTOR_SET).add_service(service);
    let options = ServeOptions::plain(std::time::Duration::ZERO);
    let server = tokio::spawn(serve_grpc(listener, services, std::future::pending(), options));
    (url, server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_over_the_servers_limit_fails_in_the_client_before_it_is_sent() {
    let learner = Learner::default();
    let (url, server) = serve(learner.clone()).await;
    let cfg = AgentConfig { insecure_no_auth: true, ..AgentConfig::default() };
    let mut client = LearnerClient::connect(&cfg, &url).await.unwrap();

    let under = rollout_of(MAX_MESSAGE_BYTES - (1 << 20));
    assert_eq!(client.push(&under).await.unwrap().verdict, Pushed::Accepted);
    let delivered = learner.received_bytes.load(Ordering::Relaxed);
    assert!(delivered > (MAX_MESSAGE_BYTES - (2 << 20)) as u64, "{delivered} bytes delivered");

    let over = rollout_of(MAX_MESSAGE_BYTES + (1 << 20));
    let error = client.push(&over).await.unwrap_err();
    let AgentError::Rpc(status) = &error else { panic!("expected a gRPC status, got {error}") };
    // Refused by the client, naming the limit (not "h2 protocol error", what
    // tonic's encoder leaves when it resets the stream, nor a refusal by
    // the server after it read the message).
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().starts_with("rollout: ")
            && status.message().contains(&MAX_MESSAGE_BYTES.to_string()),
        "{status:?}"
    );
    assert_eq!(
        learner.received_bytes.load(Ordering::Relaxed),
        delivered,
        "the server received nothing of it"
    );
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_the_learner_never_answers_fails_after_learner_wait_ms() {
    let learner = Learner::default();
    learner.hang.store(true, Ordering::Relaxed);
    let (url, server) = serve(learner.clone()).await;
    let cfg =
        AgentConfig { insecure_no_auth: true, learner_wait_ms: 300, ..AgentConfig::default() };
    let mut client = LearnerClient::connect(&cfg, &url).await.unwrap();
    let rollout = rollout_of(1000);
    let push = tokio::time::timeout(std::time::Duration::from_secs(20), client.push(&rollout));
    let error = push.await.expect("the push gave up by itself, long before 20 s").unwrap_err();
    let AgentError::Rpc(status) = &error else { panic!("expected a gRPC status, got {error}") };
    assert_eq!(status.code(), tonic::Code::DeadlineExceeded, "{status:?}");
    assert!(status.message().contains("learner_wait_ms (300 ms)"), "{status:?}");
    assert!(learner.received_bytes.load(Ordering::Relaxed) > 0, "the batch was delivered");
    server.abort();
}
