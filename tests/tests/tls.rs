//! TLS end to end: a market serving gRPC over rustls with the test-only
//! certificate of `tests/fixtures/tls`, agent-nodes and clients trusting its
//! CA. A plain-HTTP client gets nothing from it, and half a TLS configuration
//! is refused before anything starts.

use std::sync::Arc;

use clap::Parser;
use peergrid_core::data::citylearn::bundled_citylearn;
use peergrid_core::data::Dataset;
use peergrid_e2e::cluster::{tls_fixture, ClusterBuilder};
use peergrid_market_node::config::Cli;
use peergrid_market_node::{MarketConfig, MarketSettings};
use peergrid_proto::pb::market::v1 as market;
use peergrid_runtime::{ShutdownController, Tokens};
use tonic::transport::Channel;

fn dataset() -> Arc<Dataset> {
    Arc::new(bundled_citylearn().expect("bundled data"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_market_and_two_tls_nodes_clear_slots_and_answer_status() {
    let cluster = ClusterBuilder::default().tls().nodes(&[4, 4]).max_slots(6).start(dataset()).await.unwrap();
    assert!(cluster.market_url().starts_with("https://127.0.0.1:"), "{}", cluster.market_url());
    let status = cluster.wait_for_slot(2).await.unwrap();
    assert_eq!(status.prosumers, 8);

    let tls = peergrid_market_node::tls::client_tls(&tls_fixture("ca.pem"), None).unwrap();
    assert!(peergrid_market_node::grpc::check_health(&cluster.market_url(), Some(tls)).await.unwrap());
    let tls = peergrid_market_node::tls::client_tls(&tls_fixture("ca.pem"), Some("localhost")).unwrap();
    assert!(peergrid_market_node::grpc::check_health(&cluster.market_url(), Some(tls)).await.unwrap());

    let (status, reports) = cluster.finish().await.unwrap();
    assert_eq!(status.missing_reports, 0);
    assert_eq!(reports.len(), 2);
    for r in &reports {
        assert_eq!(r.slots_cleared, 6, "{r:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_http_client_cannot_talk_to_a_tls_market() {
    let cluster =
        ClusterBuilder { auto_start: false, ..ClusterBuilder::default() }.tls().nodes(&[2]).start(dataset()).await.unwrap();
    let plain = format!("http://{}", cluster.market().grpc_addr.expect("a TCP market"));
    let answer = async {
        let channel = Channel::from_shared(plain.clone())?.connect().await?;
        let mut client = market::market_service_client::MarketServiceClient::new(channel);
        anyhow::Ok(client.status(market::StatusRequest {}).await?)
    };
    let answer = tokio::time::timeout(std::time::Duration::from_secs(10), answer).await.expect("fails fast, not hangs");
    assert!(answer.is_err(), "a plain-HTTP client got an answer from the TLS market");
    assert!(!peergrid_market_node::grpc::check_health(&plain, None).await.unwrap_or(false));
    // https without a CA to trust is refused up front.
    let e = peergrid_market_node::grpc::check_health(&cluster.market_url(), None).await.unwrap_err();
    assert!(e.to_string().contains("--tls-ca"), "{e}");
    // Over TLS the same market answers.
    assert_eq!(cluster.status().await.unwrap().prosumers, 2);
    cluster.stop().await.unwrap();
}

#[test]
fn a_certificate_without_a_key_is_rejected_naming_the_field() {
    let cert = tls_fixture("server.pem").display().to_string();
    let cli = Cli::try_parse_from(["market-node", "--insecure-no-auth", "--tls-cert", &cert]).unwrap();
    let e = cli.run.resolve(Tokens::default()).unwrap_err();
    assert_eq!(e.field, "tls_key", "{e}");
    let key = tls_fixture("server.key").display().to_string();
    let cli = Cli::try_parse_from(["market-node", "--insecure-no-auth", "--tls-key", &key]).unwrap();
    assert_eq!(cli.run.resolve(Tokens::default()).unwrap_err().field, "tls_cert");
    let cli = Cli::try_parse_from(["market-node", "--insecure-no-auth", "--tls-cert", &cert, "--tls-key", &key]).unwrap();
    let c = cli.run.resolve(Tokens::default()).unwrap();
    assert_eq!(c.settings.tls_key, Some(tls_fixture("server.key")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unusable_key_file_is_a_startup_error_naming_it() {
    let settings = MarketSettings {
        listen: "127.0.0.1:0".parse().unwrap(),
        insecure_no_auth: true,
        tls_cert: Some(tls_fixture("server.pem")),
        tls_key: Some(tls_fixture("ca.pem")),
        ..MarketSettings::default()
    };
    let config = MarketConfig::new(settings, Default::default(), Tokens::default()).unwrap();
    let e = match peergrid_market_node::start_with_dataset(config, dataset(), ShutdownController::new().subscribe()).await {
        Ok(_) => panic!("a certificate as the key was accepted"),
        Err(e) => format!("{e:#}"),
    };
    assert!(e.contains("tls_key") && e.contains("ca.pem"), "{e}");
}
