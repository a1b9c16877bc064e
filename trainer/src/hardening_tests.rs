//! The trainer under hostile input and failure (issue 12), over loopback
//! gRPC: an update that would poison the model is discarded and the
//! learner goes on; a learner that died turns health NOT_SERVING and makes
//! the trainer stop with the panic's message. (SIGTERM with clients
//! holding calls open: `tests/shutdown.rs`, which runs the binary.)

use std::time::Duration;

use peergrid_core::experience::{Rollout, MAX_ABS_LOG_PROB};
use peergrid_core::observation::OBS_DIM;
use peergrid_core::policy::weights::from_safetensors;
use peergrid_proto::pb::learner::v1 as pb;
use peergrid_proto::pb::learner::v1::learner_service_client::LearnerServiceClient;
use peergrid_runtime::{BearerInterceptor, ShutdownController, Tokens};
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use crate::learner::CRASH_FOR_TEST;
use crate::{PpoConfig, TrainerConfig, TrainerHandle};

const AGENT: &str = "agent-token-for-trainer-tests";
const OPERATOR: &str = "operator-token-for-trainer-tests";

async fn start() -> (TrainerHandle, ShutdownController, Channel) {
    let config = TrainerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        ppo: PpoConfig { minibatch_size: 4, update_epochs: 2, ..PpoConfig::default() },
        ..TrainerConfig::default()
    };
    let tokens = Tokens::new(Some(AGENT.into()), Some(OPERATOR.into())).unwrap();
    let controller = ShutdownController::new();
    let trainer = crate::start(config, tokens, controller.subscribe()).await.unwrap();
    let channel = Endpoint::from_shared(trainer.url().to_owned()).unwrap().connect().await.unwrap();
    (trainer, controller, channel)
}

fn batch(node: &str, version: u64) -> pb::ExperienceBatch {
    let n = 4;
    pb::ExperienceBatch::from(&Rollout {
        node_name: node.into(),
        policy_version: version,
        first_slot: 0,
        steps: 2,
        prosumer_ids: vec![0, 1],
        observations: vec![0.1; n * OBS_DIM],
        actions: vec![0.0; n * 3],
        log_probs: vec![-2.0; n],
        values: vec![0.0; n],
        rewards: vec![-0.1; n],
        dones: vec![false; n],
        bootstrap_values: vec![0.0; 2],
        costs: vec![0.1; n],
        grid_import_kwh: vec![0.5; n],
    })
}

async fn push(channel: &Channel, b: pb::ExperienceBatch) -> Result<pb::PushSummary, tonic::Status> {
    let mut client = LearnerServiceClient::with_interceptor(
        channel.clone(),
        BearerInterceptor::new(AGENT).unwrap(),
    );
    client.push_experience(tokio_stream::once(b)).await.map(|r| r.into_inner())
}

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..3000 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_that_diverges_is_discarded_and_the_learner_goes_on() {
    let (trainer, controller, channel) = start().await;
    let mut client = LearnerServiceClient::with_interceptor(
        channel.clone(),
        BearerInterceptor::new(AGENT).unwrap(),
    );
    let request = pb::SubscribeRequest { node_name: "watcher".into(), after_version: 0 };
    let mut policy = client.subscribe_policy(request).await.unwrap().into_inner();
    let mut next_version = async move || {
        let next = tokio::time::timeout(Duration::from_secs(30), policy.message()).await;
        next.expect("timed out waiting for a policy update on the subscription")
            .unwrap()
            .unwrap()
            .version
    };
    assert_eq!(next_version().await, 1);
    // Within every bound, but the behaviour log-probs are a lie: the PPO
    // ratio exp(new − old) overflows, the loss and then every parameter
    // become NaN. Before the fix the learner thread panicked on publishing.
    let mut poisoned = batch("liar", 1);
    poisoned.log_probs.fill(-MAX_ABS_LOG_PROB);
    let summary = push(&channel, poisoned).await.unwrap();
    assert_eq!(summary.batches_accepted, 1, "well-formed: the learner takes it");
    let metrics = trainer.learner.clone();
    wait_until("the discarded update", || metrics.status().updates_discarded == 1).await;
    let s = trainer.learner.status();
    assert_eq!((s.version, s.updates_done), (1, 0), "version 1 stays published");
    assert_eq!(trainer.learner.published().borrow().version, 1);
    assert!(trainer.learner.death().is_none(), "the learner thread is alive");
    // Subscribers hear version 1 again: synchronous nodes push their
    // rollouts once more instead of waiting out their timeouts.
    assert_eq!(next_version().await, 1, "version 1 announced again after the discard");

    // The learner goes on: an honest batch for version 1 makes version 2,
    // with finite weights and normaliser.
    assert_eq!(push(&channel, batch("honest", 1)).await.unwrap().batches_accepted, 1);
    wait_until("version 2", || trainer.learner.status().version == 2).await;
    let published = trainer.learner.published().borrow().clone();
    let weights =
        from_safetensors(&published.weights).expect("version 2 reads back: every parameter finite");
    assert!(weights.normaliser.var.iter().chain(&weights.normaliser.mean).all(|x| x.is_finite()));
    assert_eq!(next_version().await, 2);
    controller.trigger();
    trainer.join().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_learner_makes_health_not_serving_and_the_trainer_stop_with_its_panic() {
    let (trainer, _controller, channel) = start().await;
    let mut health = HealthClient::new(channel.clone());
    let request =
        HealthCheckRequest { service: peergrid_proto::services::LEARNER_SERVICE.to_owned() };
    let mut watch = health.watch(request).await.unwrap().into_inner();
    let first = watch.message().await.unwrap().unwrap();
    assert_eq!(first.status, ServingStatus::Serving as i32);

    // Any bug that panics on the learner thread (a test hook stands in).
    push(&channel, batch(CRASH_FOR_TEST, 1)).await.unwrap();
    let next = tokio::time::timeout(Duration::from_secs(30), watch.message())
        .await
        .expect("health changes");
    let status = next.ok().flatten().map(|r| r.status);
    assert_eq!(
        status,
        Some(ServingStatus::NotServing as i32),
        "health must not keep answering SERVING"
    );
    // No shutdown was triggered: the trainer stops by itself, with the reason.
    tokio::time::timeout(Duration::from_secs(30), trainer.finished())
        .await
        .expect("finished() resolves when the trainer stops on its own");
    assert!(trainer.is_finished());
    let error = tokio::time::timeout(Duration::from_secs(30), trainer.join())
        .await
        .expect("the trainer stops")
        .unwrap_err();
    assert!(format!("{error:#}").contains("learner crash requested by a test"), "{error:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_resolves_after_the_shutdown_and_not_before() {
    let (trainer, controller, channel) = start().await;
    // A healthy trainer keeps serving: finished() stays pending.
    let early = tokio::time::timeout(Duration::from_millis(200), trainer.finished()).await;
    assert!(early.is_err(), "finished() resolved while the trainer was serving");
    assert!(!trainer.is_finished());
    assert_eq!(push(&channel, batch("honest", 1)).await.unwrap().batches_accepted, 1);
    controller.trigger();
    tokio::time::timeout(Duration::from_secs(30), trainer.finished())
        .await
        .expect("finished() resolves once the shutdown drained the trainer");
    trainer.join().await.expect("a normal stop is not an error");
}
