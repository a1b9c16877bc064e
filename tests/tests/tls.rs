//! TLS and tokens end to end: a market and a trainer serving gRPC over
//! rustls with the test-only certificate of `tests/fixtures/tls`,
//! agent-nodes and clients trusting its CA. A client trusting another CA,
//! or speaking plain HTTP, gets nothing from them; half a TLS configuration
//! is refused before anything starts. Tokens come from a variable or a
//! file the same way in every binary, and every binary refuses to start
//! with both, or with a token that is too short.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use peergrid_agent_node::grpc::LearnerClient;
use peergrid_agent_node::{AgentArgs, AgentConfig, AgentError};
use peergrid_core::data::citylearn::bundled_citylearn;
use peergrid_core::data::Dataset;
use peergrid_e2e::cluster::{tls_fixture, ClusterBuilder, AGENT_TOKEN, OPERATOR_TOKEN};
use peergrid_e2e::processes::binary;
use peergrid_market_node::config::Cli;
use peergrid_market_node::{MarketConfig, MarketSettings};
use peergrid_proto::pb::market::v1 as market;
use peergrid_runtime::{Secret, SettingNames, ShutdownController, Target, Tokens, MIN_TOKEN_LEN};
use peergrid_trainer::config::TrainerConfig;
use peergrid_trainer::{LearnerSettings, PpoConfig, TrainerHandle};
use tonic::transport::Channel;

fn dataset() -> Arc<Dataset> {
    Arc::new(bundled_citylearn().expect("bundled data"))
}

const TRAINER_SETTINGS: SettingNames =
    SettingNames { url: "--addr", ca: "--tls-ca", domain: "--tls-domain" };

/// A trainer on an ephemeral loopback port serving the fixture certificate.
async fn start_tls_trainer() -> (TrainerHandle, ShutdownController) {
    let config = TrainerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        tls_cert: Some(tls_fixture("server.pem")),
        tls_key: Some(tls_fixture("server.key")),
        ppo: PpoConfig { minibatch_size: 32, ..PpoConfig::default() },
        learner: LearnerSettings::default(),
        ..TrainerConfig::default()
    };
    let tokens = Tokens::new(Some(AGENT_TOKEN.into()), Some(OPERATOR_TOKEN.into())).unwrap();
    let controller = ShutdownController::new();
    let trainer = peergrid_trainer::start(config, tokens, controller.subscribe()).await.unwrap();
    (trainer, controller)
}

fn trainer_target<'a>(url: &'a str, ca: Option<&'a Path>, domain: Option<&'a str>) -> Target<'a> {
    Target { url, ca, domain, names: TRAINER_SETTINGS }
}

/// A learning agent-node's config towards `learner`, trusting `ca`.
fn learner_config(learner: &str, ca: Option<&Path>) -> AgentConfig {
    AgentConfig {
        learner: Some(learner.to_owned()),
        learner_tls_ca: ca.map(Path::to_path_buf),
        token: Some(Secret::new("token", AGENT_TOKEN).unwrap()),
        connect_timeout_ms: 3_000,
        ..AgentConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_trainer_teaches_nodes_that_trust_its_ca() {
    let (trainer, stop_trainer) = start_tls_trainer().await;
    assert!(trainer.url().starts_with("https://127.0.0.1:"), "{}", trainer.url());
    let cluster = ClusterBuilder {
        nodes: vec![4],
        deadline_ms: 5_000,
        learner: Some(trainer.url().to_owned()),
        rollout_slots: 8,
        ..ClusterBuilder::default()
    }
    .tls()
    .start(dataset())
    .await
    .unwrap();
    // Version 2 exists only once the node's rollout came in over TLS, and
    // the node acts on it only after it came back over TLS.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
    while trainer.learner.status().version < 3 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "waited 300 s for policy version 3 from the TLS trainer; it is at {}",
            trainer.learner.status().version
        );
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            () = trainer.finished() => panic!("the TLS trainer stopped: {:?}", trainer.learner.death()),
        }
    }
    assert!(trainer.learner.status().samples_total >= 2 * 4 * 8, "{:?}", trainer.learner.status());

    // `trainer health` and `trainer status` over TLS, trusting the CA.
    let ca = tls_fixture("ca.pem");
    assert!(peergrid_trainer::grpc::check_health(trainer_target(trainer.url(), Some(&ca), None))
        .await
        .unwrap());
    let operator = Secret::new("token", OPERATOR_TOKEN).unwrap();
    let status = peergrid_trainer::grpc::fetch_status(
        trainer_target(trainer.url(), Some(&ca), Some("localhost")),
        Some(&operator),
    )
    .await
    .unwrap();
    assert!(status["version"].as_u64().unwrap() >= 3, "{status}");
    let e =
        peergrid_trainer::grpc::fetch_status(trainer_target(trainer.url(), Some(&ca), None), None)
            .await
            .unwrap_err();
    let code = e.downcast_ref::<tonic::Status>().map(tonic::Status::code);
    assert_eq!(code, Some(tonic::Code::Unauthenticated), "status without a token: {e:#}");

    cluster.stop().await.unwrap();
    stop_trainer.trigger();
    trainer.join().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_refuse_a_trainer_they_cannot_verify_and_plain_http_gets_nothing() {
    let (trainer, stop_trainer) = start_tls_trainer().await;
    let url = trainer.url().to_owned();
    let (ca, other_ca) = (tls_fixture("ca.pem"), tls_fixture("other-ca.pem"));

    // The right CA: the agent-node's learner client gets an answer.
    let mut client = LearnerClient::connect(&learner_config(&url, Some(&ca)), &url).await.unwrap();
    assert!(client.is_sync().await.unwrap());

    // Another CA, or the right CA with a name the certificate does not
    // carry: the handshake fails, reported as a connection error.
    for (ca, domain) in [(&other_ca, None), (&ca, Some("trainer.invalid"))] {
        let mut cfg = learner_config(&url, Some(ca));
        cfg.learner_tls_domain = domain.map(str::to_owned);
        let e = match LearnerClient::connect(&cfg, &url).await {
            Ok(mut c) => c.is_sync().await.expect_err("an unverified trainer answered"),
            Err(e) => e,
        };
        assert!(
            matches!(&e, AgentError::Connect { .. } | AgentError::Rpc(_)),
            "{ca:?} {domain:?}: {e}"
        );
        assert!(!peergrid_trainer::grpc::check_health(trainer_target(&url, Some(ca), domain))
            .await
            .unwrap_or(false));
    }

    // Plain HTTP to the TLS port: no answer, and quickly.
    let plain = url.replacen("https://", "http://", 1);
    let answer = async {
        let mut c = LearnerClient::connect(&learner_config(&plain, None), &plain).await?;
        c.is_sync().await
    };
    let answer = tokio::time::timeout(Duration::from_secs(10), answer)
        .await
        .expect("a plain client fails fast, it does not hang");
    assert!(answer.is_err(), "a plain-HTTP client got an answer from the TLS trainer");
    // https without a CA is a configuration error naming the setting.
    let e =
        peergrid_trainer::grpc::check_health(trainer_target(&url, None, None)).await.unwrap_err();
    assert!(format!("{e:#}").contains("--tls-ca"), "{e:#}");
    let e = LearnerClient::connect(&learner_config(&url, None), &url)
        .await
        .err()
        .expect("https without a CA");
    assert!(matches!(&e, AgentError::Config { field, .. } if field == "learner_tls_ca"), "{e}");

    stop_trainer.trigger();
    trainer.join().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_token_file_authenticates_over_tls() {
    let cluster = ClusterBuilder { auto_start: false, ..ClusterBuilder::default() }
        .tls()
        .nodes(&[2])
        .start(dataset())
        .await
        .unwrap();
    let dir = std::env::temp_dir().join(format!("peergrid-e2e-token-file-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("agent-token");
    std::fs::write(&file, format!("{AGENT_TOKEN}\n")).unwrap();
    let (market_url, ca, file) = (
        cluster.market_url(),
        tls_fixture("ca.pem").display().to_string(),
        file.display().to_string(),
    );
    let args = || {
        AgentArgs::try_parse_from([
            "agent-node",
            "--market",
            &market_url,
            "--tls-ca",
            &ca,
            "--prosumers",
            "1",
            "--name",
            "probe",
        ])
        .unwrap()
    };
    let cfg = args()
        .into_config_with(|name| (name == "PEERGRID_AGENT_TOKEN_FILE").then(|| file.clone()))
        .unwrap();
    let status = peergrid_agent_node::health(&cfg).await.unwrap();
    assert_eq!(status.prosumers, 2);
    // The same file next to the variable: refused, naming both.
    let both = |name: &str| match name {
        "PEERGRID_AGENT_TOKEN_FILE" => Some(file.clone()),
        "PEERGRID_AGENT_TOKEN" => Some(AGENT_TOKEN.to_owned()),
        _ => None,
    };
    let e = args().into_config_with(both).unwrap_err().to_string();
    assert!(e.contains("PEERGRID_AGENT_TOKEN_FILE") && e.contains("not both"), "{e}");
    std::fs::remove_dir_all(dir).unwrap();
    cluster.stop().await.unwrap();
}

/// Runs a binary with only the given token variables, expecting it to
/// refuse to start: exit 2 within 30 s. Returns its stderr.
fn refused_at_startup(program: &Path, args: &[&str], env: &[(&str, &str)]) -> String {
    let mut command = Command::new(program);
    command.args(args).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
    for var in ["PEERGRID_AGENT_TOKEN", "PEERGRID_OPERATOR_TOKEN"] {
        command.env_remove(var).env_remove(format!("{var}_FILE"));
    }
    for name in
        ["PEERGRID_INSECURE_NO_AUTH", "PEERGRID_MARKET", "PEERGRID_TLS_CA", "PEERGRID_LEARNER"]
    {
        command.env_remove(name);
    }
    command.envs(env.iter().copied());
    let mut child =
        command.spawn().unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{} {args:?} with {env:?} was still running after 30 s instead of refusing to start", program.display());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(2), "{} {args:?}: {stderr}", program.display());
    stderr
}

#[test]
fn every_binary_refuses_both_token_sources_and_short_tokens_at_startup() {
    let dir =
        std::env::temp_dir().join(format!("peergrid-e2e-token-refusals-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("token");
    std::fs::write(&file, format!("{AGENT_TOKEN}\n")).unwrap();
    let file = file.to_str().unwrap();
    let short = "hunter2";
    let listen = ["--listen", "127.0.0.1:0"];
    // (binary, arguments, the token variable it reads)
    let cases: [(&str, &[&str], &str); 4] = [
        ("market-node", &listen, "PEERGRID_AGENT_TOKEN"),
        ("trainer", &listen, "PEERGRID_AGENT_TOKEN"),
        ("agent-node", &["check-config"], "PEERGRID_AGENT_TOKEN"),
        (
            "peergrid",
            &["ctl", "--market", "http://127.0.0.1:1", "status"],
            "PEERGRID_OPERATOR_TOKEN",
        ),
    ];
    for (name, args, var) in cases {
        let program = binary(name).unwrap();
        let file_var = format!("{var}_FILE");
        let both = refused_at_startup(&program, args, &[(var, AGENT_TOKEN), (&file_var, file)]);
        assert!(
            both.contains(var) && both.contains(&file_var) && both.contains("not both"),
            "{name}: {both}"
        );
        assert!(!both.contains(AGENT_TOKEN), "{name} printed the token: {both}");
        let too_short = refused_at_startup(&program, args, &[(var, short)]);
        assert!(
            too_short.contains(var) && too_short.contains(&format!("at least {MIN_TOKEN_LEN}")),
            "{name}: {too_short}"
        );
        assert!(!too_short.contains(short), "{name} printed the token: {too_short}");
    }
    // No token at all: both servers refuse to start, naming the way out.
    for name in ["market-node", "trainer"] {
        let e = refused_at_startup(&binary(name).unwrap(), &listen, &[]);
        assert!(
            e.contains("no token configured") && e.contains("--insecure-no-auth"),
            "{name}: {e}"
        );
    }
    // Half a TLS configuration stops the trainer too, naming the missing file.
    let cert = tls_fixture("server.pem");
    let e = refused_at_startup(
        &binary("trainer").unwrap(),
        &["--listen", "127.0.0.1:0", "--insecure-no-auth", "--tls-cert", cert.to_str().unwrap()],
        &[],
    );
    assert!(e.contains("tls_key"), "{e}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_market_and_two_tls_nodes_clear_slots_and_answer_status() {
    let cluster =
        ClusterBuilder::default().tls().nodes(&[4, 4]).max_slots(6).start(dataset()).await.unwrap();
    assert!(cluster.market_url().starts_with("https://127.0.0.1:"), "{}", cluster.market_url());
    let status = cluster.wait_for_slot(2).await.unwrap();
    assert_eq!(status.prosumers, 8);

    let ca = tls_fixture("ca.pem");
    assert!(peergrid_market_node::grpc::check_health(&cluster.market_url(), Some(&ca), None)
        .await
        .unwrap());
    assert!(peergrid_market_node::grpc::check_health(
        &cluster.market_url(),
        Some(&ca),
        Some("localhost")
    )
    .await
    .unwrap());

    let (status, reports) = cluster.finish().await.unwrap();
    assert_eq!(status.missing_reports, 0);
    assert_eq!(reports.len(), 2);
    for r in &reports {
        assert_eq!(r.slots_cleared, 6, "{r:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_http_client_cannot_talk_to_a_tls_market() {
    let cluster = ClusterBuilder { auto_start: false, ..ClusterBuilder::default() }
        .tls()
        .nodes(&[2])
        .start(dataset())
        .await
        .unwrap();
    let plain = format!("http://{}", cluster.market().grpc_addr.expect("a TCP market"));
    let answer = async {
        let channel = Channel::from_shared(plain.clone())?.connect().await?;
        let mut client = market::market_service_client::MarketServiceClient::new(channel);
        anyhow::Ok(client.status(market::StatusRequest {}).await?)
    };
    let answer = tokio::time::timeout(std::time::Duration::from_secs(10), answer)
        .await
        .expect("fails fast, not hangs");
    assert!(answer.is_err(), "a plain-HTTP client got an answer from the TLS market");
    assert!(!peergrid_market_node::grpc::check_health(&plain, None, None).await.unwrap_or(false));
    // https without a CA to trust is refused up front.
    let e = peergrid_market_node::grpc::check_health(&cluster.market_url(), None, None)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("--tls-ca"), "{e}");
    // Over TLS the same market answers.
    assert_eq!(cluster.status().await.unwrap().prosumers, 2);
    cluster.stop().await.unwrap();
}

#[test]
fn a_certificate_without_a_key_is_rejected_naming_the_field() {
    let cert = tls_fixture("server.pem").display().to_string();
    let cli =
        Cli::try_parse_from(["market-node", "--insecure-no-auth", "--tls-cert", &cert]).unwrap();
    let e = cli.run.resolve(Tokens::default()).unwrap_err();
    assert_eq!(e.field, "tls_key", "{e}");
    let key = tls_fixture("server.key").display().to_string();
    let cli =
        Cli::try_parse_from(["market-node", "--insecure-no-auth", "--tls-key", &key]).unwrap();
    assert_eq!(cli.run.resolve(Tokens::default()).unwrap_err().field, "tls_cert");
    let cli = Cli::try_parse_from([
        "market-node",
        "--insecure-no-auth",
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
    ])
    .unwrap();
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
    let e = match peergrid_market_node::start_with_dataset(
        config,
        dataset(),
        ShutdownController::new().subscribe(),
    )
    .await
    {
        Ok(_) => panic!("a certificate as the key was accepted"),
        Err(e) => format!("{e:#}"),
    };
    assert!(e.contains("tls_key") && e.contains("ca.pem"), "{e}");
}
