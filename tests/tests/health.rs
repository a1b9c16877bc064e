//! The checks container health probes run (`market-node health`, `agent-node
//! health`, see deploy/): against a real market on a loopback port they
//! pass, and they fail when the market is gone or the token is wrong.

use std::sync::Arc;

use peergrid_agent_node::{AgentError, Secret};
use peergrid_core::data::citylearn::bundled_citylearn;
use peergrid_e2e::cluster::ClusterBuilder;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_pass_on_a_serving_market_and_fail_otherwise() {
    let ds = Arc::new(bundled_citylearn().expect("bundled data"));
    let cluster = ClusterBuilder { auto_start: false, ..ClusterBuilder::default() }
        .nodes(&[3])
        .start(ds)
        .await
        .unwrap();

    // market-node health: the gRPC health service says SERVING.
    assert!(peergrid_market_node::grpc::check_health(&cluster.market_url(), None, None)
        .await
        .unwrap());

    // agent-node health: the market answers the node's own token.
    let status =
        peergrid_agent_node::health(&cluster.agent_config("probe", 1, None)).await.unwrap();
    assert_eq!((status.prosumers, status.nodes), (3, 1));
    let mut wrong = cluster.agent_config("probe", 1, None);
    wrong.token = Some(Secret::new("token", "not-the-agent-token-0123456789").unwrap());
    let e = peergrid_agent_node::health(&wrong).await.unwrap_err();
    assert!(
        matches!(&e, AgentError::Rpc(s) if matches!(s.code(), tonic::Code::Unauthenticated | tonic::Code::PermissionDenied)),
        "{e}"
    );

    let url = cluster.market_url();
    let probe = cluster.agent_config("probe", 1, None);
    cluster.stop().await.unwrap();
    assert!(
        peergrid_market_node::grpc::check_health(&url, None, None).await.is_err(),
        "a stopped market is not healthy"
    );
    assert!(peergrid_agent_node::health(&probe).await.is_err(), "no market, no agent-node health");
}
