//! The configuration from flags, environment and file, and its checks.

use super::*;
use std::path::Path;

const TOKEN: &str = "agent-secret-0123456789";

fn args(argv: &[&str]) -> AgentArgs {
    AgentArgs::try_parse_from(std::iter::once("peergrid-agent-node").chain(argv.iter().copied()))
        .unwrap()
}

fn no_env(_: &str) -> Option<String> {
    None
}

fn field_of(e: AgentError) -> String {
    match e {
        AgentError::Config { field, .. } => field,
        other => panic!("not a config error: {other}"),
    }
}

#[test]
fn flags_build_a_valid_config_and_the_token_never_prints() {
    let cfg = args(&[
        "--market",
        "http://10.0.0.5:50051",
        "--prosumers",
        "2500",
        "--seed",
        "7",
        "--token",
        TOKEN,
    ])
    .into_config_with(no_env)
    .unwrap();
    assert_eq!(cfg.market, "http://10.0.0.5:50051");
    assert_eq!(cfg.prosumers, 2500);
    assert_eq!(cfg.community.seed, 7);
    assert_eq!(cfg.policy, PolicyChoice::RuleBased);
    let printed = format!("{} {:?}", cfg.redacted_json(), cfg);
    assert!(!printed.contains(TOKEN) && printed.contains("<redacted>"), "{printed}");
}

#[test]
fn https_market_with_a_ca_is_accepted() {
    let cfg = args(&[
        "--insecure-no-auth",
        "--market",
        "https://10.0.0.5:50051",
        "--tls-ca",
        "ca.pem",
        "--tls-domain",
        "market",
    ])
    .into_config_with(no_env)
    .unwrap();
    assert_eq!(
        (cfg.tls_ca, cfg.tls_domain.as_deref()),
        (Some(PathBuf::from("ca.pem")), Some("market"))
    );
}

#[test]
fn an_https_learner_with_a_ca_is_accepted() {
    let argv =
        ["--insecure-no-auth", "--learner", "https://trainer:50061", "--learner-tls-ca", "ca.pem"];
    let cfg = args(&[&argv[..], &["--learner-tls-domain", "trainer.internal"]].concat())
        .into_config_with(no_env)
        .unwrap();
    let target = cfg.learner_target().unwrap();
    assert_eq!((target.ca, target.domain), (Some(Path::new("ca.pem")), Some("trainer.internal")));
    assert!(target.is_tls() && !cfg.market_target().is_tls());
}

#[test]
fn a_short_token_names_the_minimum_without_echoing_it() {
    let short = |name: &str| (name == Tokens::AGENT_ENV).then(|| "hunter2".to_string());
    let e = args(&[]).into_config_with(short).unwrap_err().to_string();
    assert!(
        e.contains(Tokens::AGENT_ENV) && e.contains("at least 16") && !e.contains("hunter2"),
        "{e}"
    );
}

#[test]
fn token_comes_from_env_or_file_but_not_both() {
    let env = |name: &str| (name == Tokens::AGENT_ENV).then(|| TOKEN.to_string());
    assert_eq!(args(&[]).into_config_with(env).unwrap().token.unwrap().expose(), TOKEN);
    let both = |name: &str| {
        Some(if name == Tokens::AGENT_ENV { TOKEN.to_string() } else { "/nonexistent".to_string() })
    };
    assert_eq!(field_of(args(&[]).into_config_with(both).unwrap_err()), "token");
    let file = std::env::temp_dir().join(format!("peergrid-agent-token-{}", std::process::id()));
    std::fs::write(&file, format!("{TOKEN}\n")).unwrap();
    let path = file.display().to_string();
    let from_file = move |name: &str| (name == Tokens::AGENT_FILE_ENV).then(|| path.clone());
    assert_eq!(args(&[]).into_config_with(from_file).unwrap().token.unwrap().expose(), TOKEN);
    std::fs::remove_file(file).unwrap();
}

#[test]
fn validation_errors_name_the_field() {
    let cases: &[(&[&str], &str)] = &[
        (&["--insecure-no-auth", "--prosumers", "0"], "prosumers"),
        (&["--insecure-no-auth", "--prosumers", "100001"], "prosumers"),
        (&["--insecure-no-auth", "--market", "ftp://x:1"], "market"),
        (&["--insecure-no-auth", "--market", "https://x:1"], "tls_ca"),
        (&["--insecure-no-auth", "--tls-ca", "ca.pem"], "tls_ca"),
        (
            &[
                "--insecure-no-auth",
                "--market",
                "https://x:1",
                "--tls-ca",
                "ca.pem",
                "--tls-domain",
                "",
            ],
            "tls_domain",
        ),
        (&["--insecure-no-auth", "--market", "127.0.0.1:50051"], "market"),
        (&["--insecure-no-auth", "--market", "local://"], "market"),
        (&["--insecure-no-auth", "--market", "local://two words"], "market"),
        (&["--insecure-no-auth", "--market", "local://market", "--tls-ca", "ca.pem"], "tls_ca"),
        (&["--insecure-no-auth", "--learner", "local://a/b"], "learner"),
        (&["--insecure-no-auth", "--learner", "ftp://trainer:1"], "learner"),
        (&["--insecure-no-auth", "--learner", "https://trainer:1"], "learner_tls_ca"),
        (
            &["--insecure-no-auth", "--learner", "http://trainer:1", "--learner-tls-ca", "ca.pem"],
            "learner_tls_ca",
        ),
        (&["--insecure-no-auth", "--learner-tls-ca", "ca.pem"], "learner_tls_ca"),
        (
            &[
                "--insecure-no-auth",
                "--learner",
                "https://t:1",
                "--learner-tls-ca",
                "ca.pem",
                "--learner-tls-domain",
                "",
            ],
            "learner_tls_domain",
        ),
        (&["--insecure-no-auth", "--name", ""], "name"),
        (&["--insecure-no-auth", "--actor-threads", "0"], "actor_threads"),
        (&["--insecure-no-auth", "--policy", ""], "policy"),
        (&["--insecure-no-auth", "--policy", "w.json"], "policy"),
        (&["--insecure-no-auth", "--policy", "remote:"], "policy"),
        (&["--insecure-no-auth", "--policy", "remote:ftp://policy:1"], "policy"),
        (&["--insecure-no-auth", "--policy", "remote:127.0.0.1:50071"], "policy"),
        (&["--insecure-no-auth", "--policy", "remote:https://policy:1"], "remote_policy_tls_ca"),
        (
            &["--insecure-no-auth", "--policy", "remote:http://p:1", "--learner", "http://t:1"],
            "policy",
        ),
        (&["--insecure-no-auth", "--remote-policy-tls-ca", "ca.pem"], "remote_policy_tls_ca"),
        (
            &[
                "--insecure-no-auth",
                "--policy",
                "remote:http://p:1",
                "--remote-policy-tls-ca",
                "ca.pem",
            ],
            "remote_policy_tls_ca",
        ),
        (
            &[
                "--insecure-no-auth",
                "--policy",
                "remote:http://p:1",
                "--remote-policy-timeout-ms",
                "0",
            ],
            "remote_policy_timeout_ms",
        ),
        (
            &["--insecure-no-auth", "--remote-policy-timeout-ms", "600001"],
            "remote_policy_timeout_ms",
        ),
        (&["--insecure-no-auth", "--dataset", "ausgrid-csv"], "data_file"),
        (&["--insecure-no-auth", "--data-file", "homes.csv"], "data_file"),
        (&[], "token"),
        (&["--token", "short"], "token"),
        (&["--token", TOKEN, "--insecure-no-auth"], "token"),
        (&["--insecure-no-auth", "--config", "/nonexistent/agent.json"], "config"),
        (&["--insecure-no-auth", "--community", "/nonexistent/community.json"], "community"),
    ];
    for (argv, field) in cases {
        let e = args(argv).into_config_with(no_env).unwrap_err();
        let text = e.to_string();
        assert_eq!(field_of(e), *field, "{argv:?}: {text}");
    }
    let csv = args(&["--insecure-no-auth", "--dataset", "ausgrid-csv", "--data-file", "homes.csv"]);
    let source = csv.into_config_with(no_env).unwrap().dataset_source().unwrap();
    assert_eq!(
        source,
        DatasetSource::AusgridCsv("homes.csv".into()),
        "the same flags as `peergrid run`"
    );
    let local = args(&[
        "--insecure-no-auth",
        "--market",
        "local://market-1",
        "--learner",
        "local://trainer-1",
    ]);
    local.into_config_with(no_env).expect("in-process URLs are valid");
    let mut cfg = AgentConfig { insecure_no_auth: true, ..AgentConfig::default() };
    cfg.community.share_ev = 2.0;
    let e = cfg.validate().unwrap_err().to_string();
    assert!(e.contains("community") && e.contains("share_ev"), "{e}");
    cfg = AgentConfig { insecure_no_auth: true, ..AgentConfig::default() };
    cfg.reconnect.base_ms = 0;
    assert_eq!(field_of(cfg.validate().unwrap_err()), "reconnect.base_ms");
}

#[test]
fn a_remote_policy_comes_from_flags_env_or_the_file() {
    let cfg = args(&[
        "--insecure-no-auth",
        "--policy",
        "remote:http://127.0.0.1:50071",
        "--remote-policy-timeout-ms",
        "250",
    ])
    .into_config_with(no_env)
    .unwrap();
    assert_eq!(cfg.policy, PolicyChoice::Remote("http://127.0.0.1:50071".into()));
    assert_eq!(cfg.remote_policy_timeout_ms, 250);
    let target = cfg.remote_policy_target().expect("a remote policy has a target");
    assert_eq!((target.url, target.is_tls()), ("http://127.0.0.1:50071", false));
    assert!(
        cfg.redacted_json().contains(r#""policy":"remote:http://127.0.0.1:50071""#),
        "{}",
        cfg.redacted_json()
    );
    let tls = args(&[
        "--insecure-no-auth",
        "--policy",
        "remote:https://policy:50071",
        "--remote-policy-tls-ca",
        "ca.pem",
    ])
    .into_config_with(no_env)
    .unwrap();
    assert_eq!(tls.remote_policy_target().unwrap().ca, Some(Path::new("ca.pem")));
    assert_eq!(AgentConfig::default().remote_policy_timeout_ms, 30_000);
    assert!(AgentConfig::default().remote_policy_target().is_none());
    let dir =
        std::env::temp_dir().join(format!("peergrid-agent-remote-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("agent.json");
    std::fs::write(
        &file,
        r#"{"policy": "remote:local://policy-1", "remote_policy_timeout_ms": 5000}"#,
    )
    .unwrap();
    let f = file.display().to_string();
    let cfg = args(&["--insecure-no-auth", "--config", &f]).into_config_with(no_env).unwrap();
    assert_eq!(
        (cfg.policy, cfg.remote_policy_timeout_ms),
        (PolicyChoice::Remote("local://policy-1".into()), 5000)
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn file_then_flags_and_policy_paths() {
    let dir = std::env::temp_dir().join(format!("peergrid-agent-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("agent.json");
    std::fs::write(&file, r#"{"prosumers": 40, "name": "from-file", "policy": "grid-only", "community": {"seed": 3}}"#)
        .unwrap();
    let f = file.display().to_string();
    let cfg = args(&["--insecure-no-auth", "--config", &f, "--name", "from-flag"])
        .into_config_with(no_env)
        .unwrap();
    assert_eq!((cfg.prosumers, cfg.name.as_str(), cfg.community.seed), (40, "from-flag", 3));
    // Without a name anywhere, the host name (a container's id) names the node.
    let host = |name: &str| (name == "HOSTNAME").then(|| "3f2c9a1b7d4e".to_string());
    assert_eq!(args(&["--insecure-no-auth"]).into_config_with(host).unwrap().name, "3f2c9a1b7d4e");
    assert_eq!(args(&["--insecure-no-auth"]).into_config_with(no_env).unwrap().name, "agent-node");
    assert_eq!(
        args(&["--insecure-no-auth", "--name", "n1"]).into_config_with(host).unwrap().name,
        "n1"
    );
    assert_eq!(
        args(&["--insecure-no-auth", "--config", &f]).into_config_with(host).unwrap().name,
        "from-file"
    );
    assert_eq!(cfg.policy, PolicyChoice::GridOnly);
    let cfg =
        args(&["--insecure-no-auth", "--config", &f, "--seed", "9", "--policy", "w.safetensors"])
            .into_config_with(no_env)
            .unwrap();
    assert_eq!(cfg.community.seed, 9);
    assert_eq!(cfg.policy, PolicyChoice::Weights("w.safetensors".into()));
    // The JSON weights format is gone: a config file naming one is refused.
    std::fs::write(&file, r#"{"policy": "weights.json"}"#).unwrap();
    let e = args(&["--insecure-no-auth", "--config", &f]).into_config_with(no_env).unwrap_err();
    assert!(e.to_string().contains(".safetensors"), "{e}");
    assert_eq!(field_of(e), "policy");
    std::fs::write(&file, r#"{"prosumerz": 40}"#).unwrap();
    let e = args(&["--insecure-no-auth", "--config", &f]).into_config_with(no_env).unwrap_err();
    assert!(e.to_string().contains("prosumerz"), "{e}");
    std::fs::remove_dir_all(dir).unwrap();
}
