//! Health and reflection as a client sees them: a real tonic server on a
//! loopback port, queried over gRPC like `grpcurl` or a Kubernetes probe would.

use peergrid_proto::services::{self, MARKET_SERVICE};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::{Channel, Endpoint, Server};
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::{health_check_response::ServingStatus, HealthCheckRequest};
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
use tonic_reflection::pb::v1::ServerReflectionRequest;

async fn start() -> (Channel, services::HealthReporter) {
    let (health, health_service) = services::health();
    let (reflection_v1, reflection_v1alpha) =
        services::reflection().expect("descriptor set is valid");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        Server::builder()
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    let channel = Endpoint::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();
    (channel, health)
}

#[tokio::test]
async fn health_reports_overall_and_per_service_status() {
    let (channel, health) = start().await;
    let mut client = HealthClient::new(channel);
    let overall =
        client.check(HealthCheckRequest { service: String::new() }).await.unwrap().into_inner();
    assert_eq!(overall.status(), ServingStatus::Serving);

    let unknown =
        client.check(HealthCheckRequest { service: MARKET_SERVICE.into() }).await.unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound, "not registered yet");
    health.set_service_status(MARKET_SERVICE, services::ServingStatus::Serving).await;
    let market = client
        .check(HealthCheckRequest { service: MARKET_SERVICE.into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(market.status(), ServingStatus::Serving);
}

#[tokio::test]
async fn reflection_lists_the_peergrid_services() {
    let (channel, _health) = start().await;
    let mut client = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut replies = client
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .unwrap()
        .into_inner();
    let reply = replies.message().await.unwrap().expect("one reply");
    let Some(MessageResponse::ListServicesResponse(list)) = reply.message_response else {
        panic!("unexpected {reply:?}")
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for expected in
        [MARKET_SERVICE, services::CONTROL_SERVICE, "grpc.reflection.v1.ServerReflection"]
    {
        assert!(names.iter().any(|n| n == expected), "{expected} missing from {names:?}");
    }
}
