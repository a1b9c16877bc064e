//! The `trainer` binary under SIGTERM (issue 12): shutdown is bounded by
//! `--shutdown-timeout-ms` whatever clients hold open.

use std::process::Stdio;
use std::time::Duration;

use peergrid_proto::pb::learner::v1 as pb;
use peergrid_proto::pb::learner::v1::learner_service_client::LearnerServiceClient;
use tonic::transport::Endpoint;

/// The `trainer` binary: SIGTERM while one client holds a half-sent
/// `PushExperience` (a stream that never sends) and another a
/// `SubscribePolicy` stream must exit 0 (before: the push held it forever).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_exits_zero_while_a_push_is_half_sent() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_trainer"))
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--insecure-no-auth",
            "--shutdown-timeout-ms",
            "1000",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let channel = async {
        for _ in 0..1200 {
            if let Ok(c) = Endpoint::from_shared(url.clone()).unwrap().connect().await {
                return c;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("trainer did not start");
    }
    .await;
    let mut client = LearnerServiceClient::new(channel.clone());
    let subscribed = client
        .subscribe_policy(pb::SubscribeRequest { node_name: "watcher".into(), after_version: 0 })
        .await;
    let mut policies = subscribed.unwrap().into_inner();
    assert_eq!(policies.message().await.unwrap().unwrap().version, 1);
    let (held_tx, held_rx) = tokio::sync::mpsc::channel::<pb::ExperienceBatch>(1);
    let mut pusher = LearnerServiceClient::new(channel);
    let push = tokio::spawn(async move {
        pusher.push_experience(tokio_stream::wrappers::ReceiverStream::new(held_rx)).await
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap()
        .success());
    // A liveness bound, not a performance one.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let exit = loop {
        if let Some(exit) = child.try_wait().unwrap() {
            break exit;
        }
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            panic!("trainer still running 60 s after SIGTERM");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(exit.code(), Some(0), "{exit:?}");
    drop(held_tx);
    let _ = push.await;
}
