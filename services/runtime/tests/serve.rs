//! `peergrid_runtime::serve` as a client sees it, over TCP and over the
//! in-process transport: health reports each added service and the
//! overall status, reflection lists the protos of the descriptor set, and
//! the stop signal turns health NOT_SERVING before a bounded drain that a
//! client holding a stream open cannot outlast.

use std::convert::Infallible;
use std::future::Ready;
use std::task::{Context, Poll};
use std::time::Duration;

use peergrid_proto::services::{CONTROL_SERVICE, MARKET_SERVICE};
use peergrid_runtime::connections::{Acceptor, ConnectionLimits, ConnectionMetrics};
use peergrid_runtime::dial::{SettingNames, Target};
use peergrid_runtime::{GrpcListener, Metrics, ServeOptions, Services};
use tonic::body::Body;
use tonic::codegen::http;
use tonic::server::NamedService;
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
use tonic_reflection::pb::v1::ServerReflectionRequest;

/// A stand-in for the market service: its name, and UNIMPLEMENTED for
/// every call (these tests only ask health and reflection about it).
#[derive(Clone)]
struct Stub;

impl NamedService for Stub {
    const NAME: &'static str = MARKET_SERVICE;
}

impl tower::Service<http::Request<Body>> for Stub {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: http::Request<Body>) -> Self::Future {
        std::future::ready(Ok(tonic::Status::unimplemented("a stub").into_http()))
    }
}

struct Server {
    channel: Channel,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), peergrid_runtime::RuntimeError>>,
}

/// Serves the stub on a loopback port, or on `local://NAME` with `local`.
async fn start(local: Option<&str>, drain: Duration) -> Server {
    let listener = GrpcListener::bind("127.0.0.1:0".parse().unwrap(), local).await.unwrap();
    let url = listener.url(false);
    let limits = ConnectionLimits::default();
    let acceptor = Acceptor::new(limits, ConnectionMetrics::register(&mut Metrics::new()), None);
    let services = Services::new(peergrid_proto::FILE_DESCRIPTOR_SET).add_service(Stub);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let stop_signal = async move {
        let _ = stopped.await;
    };
    let options = ServeOptions { acceptor, drain };
    let task = tokio::spawn(peergrid_runtime::serve(listener, services, stop_signal, options));
    let names = SettingNames { url: "url", ca: "ca", domain: "domain" };
    let target = Target { url: &url, ca: None, domain: None, names };
    let channel = target.connect(|e| e.timeout(Duration::from_secs(5))).await.unwrap();
    Server { channel, stop, task }
}

async fn check(health: &mut HealthClient<Channel>, service: &str) -> Result<i32, tonic::Code> {
    let request = HealthCheckRequest { service: service.to_owned() };
    health.check(request).await.map(|r| r.into_inner().status).map_err(|s| s.code())
}

#[tokio::test]
async fn health_and_reflection_describe_the_added_services_on_both_transports() {
    for local in [None, Some("serve-test-side-services")] {
        let server = start(local, Duration::from_secs(5)).await;
        let mut health = HealthClient::new(server.channel.clone());
        let serving = ServingStatus::Serving as i32;
        assert_eq!(check(&mut health, "").await, Ok(serving), "overall, {local:?}");
        assert_eq!(check(&mut health, MARKET_SERVICE).await, Ok(serving), "{local:?}");
        // Described by reflection, but not served: health does not know it.
        assert_eq!(check(&mut health, CONTROL_SERVICE).await, Err(tonic::Code::NotFound));

        let mut reflection = ServerReflectionClient::new(server.channel.clone());
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut replies = reflection
            .server_reflection_info(tokio_stream::iter(vec![request]))
            .await
            .unwrap()
            .into_inner();
        let reply = replies.message().await.unwrap().expect("one reply");
        let Some(MessageResponse::ListServicesResponse(list)) = reply.message_response else {
            panic!("unexpected {reply:?}")
        };
        let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
        for expected in [MARKET_SERVICE, CONTROL_SERVICE, "grpc.reflection.v1.ServerReflection"] {
            assert!(names.iter().any(|n| n == expected), "{expected} missing from {names:?}");
        }
        drop((replies, reflection, health));
        server.stop.send(()).unwrap();
        let stopped = tokio::time::timeout(Duration::from_secs(10), server.task).await;
        stopped.expect("stops once its clients are gone").unwrap().unwrap();
    }
}

#[tokio::test]
async fn stop_turns_health_not_serving_and_a_held_stream_cannot_outlast_the_drain() {
    let server = start(None, Duration::from_millis(300)).await;
    let mut health = HealthClient::new(server.channel.clone());
    // A watch is a stream the client never ends: it holds a call open.
    let request = HealthCheckRequest { service: MARKET_SERVICE.to_owned() };
    let mut watch = health.watch(request).await.unwrap().into_inner();
    let first = watch.message().await.unwrap().expect("the current status");
    assert_eq!(first.status(), ServingStatus::Serving);

    server.stop.send(()).unwrap();
    let next = tokio::time::timeout(Duration::from_secs(5), watch.message()).await;
    let next = next.expect("health changes on stop").unwrap().expect("an update");
    assert_eq!(next.status(), ServingStatus::NotServing);
    // The watch is still open: the server returns after the drain anyway.
    let stopped = tokio::time::timeout(Duration::from_secs(10), server.task).await;
    stopped.expect("abandons the open stream after the drain").unwrap().unwrap();
    drop(watch);
}
