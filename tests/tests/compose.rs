//! The docker compose cluster of `deploy/compose.yaml`, end to end: build the
//! images (`deploy/build-images.sh`), start a market-node, a trainer and 3
//! agent-nodes, wait for cleared slots and a trained policy (version ≥ 2),
//! scale to 5 agent-nodes, `docker kill` one, restart the market-node's
//! container, and check at every step that the market keeps clearing with
//! energy and money balanced. Every client (`peergrid ctl status`, `trainer
//! status`) runs as a one-off container on the project's network.
//!
//! Skipped, with the reason printed, when there is no usable Docker engine
//! (`docker info` fails) or no compose command: the rest of the suite still
//! reports real results. The project is torn down (`down -v`) on every
//! exit, failed or not.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use peergrid_e2e::compose::{docker_unavailable, repo_root, run, wait_for, ComposeProject};

/// Prosumers per agent-node (small: the test is about the cluster, not scale).
const PROSUMERS_PER_NODE: u64 = 20;
/// Cold image builds compile two release trees; warm ones take seconds.
const BUILD_TIMEOUT: Duration = Duration::from_secs(45 * 60);
/// Everything after the build: start, train, scale, kill, restart.
const CLUSTER_TIMEOUT: Duration = Duration::from_secs(8 * 60);
/// Balance errors the status API may report (exact fixed-point arithmetic: 0).
const BALANCE_TOLERANCE: f64 = 1e-9;

#[test]
fn compose_cluster_trains_scales_and_survives_a_killed_node_and_a_market_restart() {
    if let Some(reason) = docker_unavailable() {
        println!("SKIP compose cluster test: {reason}");
        return;
    }
    let started = Instant::now();
    let build = run(Command::new(repo_root().join("deploy/build-images.sh")).current_dir(repo_root()), BUILD_TIMEOUT);
    if let Err(e) = build {
        panic!("deploy/build-images.sh failed: {e:#}");
    }
    let built = started.elapsed();
    println!("images built in {:.0?}", built);

    let project = ComposeProject::new("peergrid-test", env()).expect("compose project");
    let result = scenario(&project);
    if let Err(e) = result {
        eprintln!("--- compose logs ({}) ---\n{}", project.name, project.logs(40));
        panic!("compose cluster test failed: {e:#}");
    }
    println!("compose cluster test: build {:.0?}, cluster {:.0?}", built, started.elapsed() - built);
}

/// Settings for the compose file: fresh tokens, ephemeral host ports (no
/// clash with a cluster the user runs), small nodes, fast mode.
fn env() -> Vec<(String, String)> {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let unique = format!("{:x}{:x}", std::process::id(), nanos);
    let mut vars: Vec<(String, String)> = [
        ("PEERGRID_AGENT_TOKEN", format!("test-agent-token-{unique}-0123456789")),
        ("PEERGRID_OPERATOR_TOKEN", format!("test-operator-token-{unique}-0123456789")),
        ("PEERGRID_PUBLISH_ADDR", "127.0.0.1".into()),
        ("PEERGRID_AGENT_PROSUMERS", PROSUMERS_PER_NODE.to_string()),
        ("PEERGRID_MARKET_MIN_PROSUMERS", PROSUMERS_PER_NODE.to_string()),
        ("PEERGRID_MARKET_MODE", "fast".into()),
        ("PEERGRID_MARKET_DEADLINE_MS", "1000".into()),
        ("PEERGRID_MARKET_NODE_TIMEOUT_MS", "3000".into()),
        ("PEERGRID_IMAGE_TAG", "latest".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    for port in ["PEERGRID_MARKET_PORT", "PEERGRID_MARKET_METRICS_PORT", "PEERGRID_TRAINER_PORT", "PEERGRID_TRAINER_METRICS_PORT"]
    {
        vars.push((port.to_owned(), String::new()));
    }
    vars
}

/// The market's status as `peergrid ctl status --json` prints it.
#[derive(Debug)]
struct Status {
    slot: u64,
    prosumers: u64,
    nodes: u64,
    energy_error_kwh: f64,
    money_error: f64,
}

fn status(project: &ComposeProject) -> Result<Status> {
    let v = project.run_json("cli", &["ctl", "status", "--json"])?;
    let int = |k: &str| v[k].as_u64().with_context(|| format!("status has no integer '{k}': {v}"));
    let float = |k: &str| v[k].as_f64().with_context(|| format!("status has no number '{k}': {v}"));
    Ok(Status {
        slot: int("slot")?,
        prosumers: int("prosumers")?,
        nodes: int("nodes")?,
        energy_error_kwh: float("energy_balance_error_kwh")?,
        money_error: float("money_balance_error")?,
    })
}

fn trainer_version(project: &ComposeProject) -> Result<u64> {
    let v = project.run_json("trainer", &["status", "--addr", "http://trainer:50061", "--json"])?;
    v["version"].as_u64().with_context(|| format!("trainer status has no integer 'version': {v}"))
}

fn balanced(s: &Status) -> Result<()> {
    ensure!(
        s.energy_error_kwh.abs() <= BALANCE_TOLERANCE && s.money_error.abs() <= BALANCE_TOLERANCE,
        "balance errors beyond {BALANCE_TOLERANCE}: energy {} kWh, money {}",
        s.energy_error_kwh,
        s.money_error
    );
    Ok(())
}

/// Waits until `prosumers` are connected and the slot counter is past
/// `after`, checking the balances on the way.
fn wait_for_clearing(project: &ComposeProject, what: &str, prosumers: u64, after: u64, deadline: Instant) -> Result<Status> {
    let left = deadline.saturating_duration_since(Instant::now());
    wait_for(what, left, || {
        let s = status(project)?;
        balanced(&s)?;
        Ok((s.prosumers == prosumers && s.slot > after).then_some(s))
    })
}

fn scenario(project: &ComposeProject) -> Result<()> {
    let deadline = Instant::now() + CLUSTER_TIMEOUT;
    let phase = Instant::now();
    let log = |what: &str, s: &Status| {
        println!(
            "[{:>5.1}s] {what}: slot {}, {} prosumers on {} nodes, balance errors {:e} kWh / {:e}",
            phase.elapsed().as_secs_f64(),
            s.slot,
            s.prosumers,
            s.nodes,
            s.energy_error_kwh,
            s.money_error
        )
    };

    // 1. Three agent-nodes (compose waits until market-node and trainer are healthy).
    project.exec(&["up", "-d", "--scale", "agent-node=3"], Duration::from_secs(180))?;
    let s = wait_for_clearing(project, "3 agent-nodes clearing slots", 3 * PROSUMERS_PER_NODE, 5, deadline)?;
    log("3 nodes", &s);
    let left = deadline.saturating_duration_since(Instant::now());
    let version = wait_for("trainer policy version ≥ 2", left, || Ok(trainer_version(project).ok().filter(|v| *v >= 2)))?;
    println!("[{:>5.1}s] trainer published policy version {version}", phase.elapsed().as_secs_f64());

    // 2. Scale to five: the market assigns the new nodes fresh id ranges.
    project.exec(&["up", "-d", "--no-recreate", "--scale", "agent-node=5"], Duration::from_secs(180))?;
    let s = wait_for_clearing(project, "5 agent-nodes", 5 * PROSUMERS_PER_NODE, s.slot, deadline)?;
    log("scaled to 5", &s);

    // Their health checks (`agent-node health`, the binary itself: the
    // image has no shell) pass.
    let agents = project.containers("agent-node")?;
    ensure!(agents.len() == 5, "expected 5 agent-node containers, found {agents:?}");
    let left = deadline.saturating_duration_since(Instant::now());
    wait_for("5 healthy agent-node containers", left, || {
        let mut inspect = Command::new("docker");
        inspect.args(["inspect", "-f", "{{.State.Health.Status}}"]).args(&agents);
        let health = String::from_utf8_lossy(&run(&mut inspect, Duration::from_secs(30))?.stdout).into_owned();
        ensure!(!health.contains("unhealthy"), "an agent-node is unhealthy: {health}");
        Ok(health.lines().all(|h| h == "healthy").then_some(()))
    })?;

    // 3. Kill one: its prosumers leave, the market keeps clearing, balanced.
    run(Command::new("docker").args(["kill", &agents[0]]), Duration::from_secs(60))?;
    let s = wait_for_clearing(project, "clearing after a killed node", 4 * PROSUMERS_PER_NODE, s.slot + 5, deadline)?;
    log("killed one", &s);

    // 4. Restart the market: the nodes reconnect with their sessions and the
    // run goes on (a restarted market counts slots from zero again), the
    // learning too.
    let version = trainer_version(project)?;
    project.exec(&["restart", "-t", "10", "market-node"], Duration::from_secs(120))?;
    let s = wait_for_clearing(project, "clearing after a market restart", 4 * PROSUMERS_PER_NODE, 5, deadline)?;
    log("market restarted", &s);
    let again = wait_for_clearing(project, "slots continuing", 4 * PROSUMERS_PER_NODE, s.slot + 5, deadline)?;
    log("still clearing", &again);
    if again.nodes != 4 {
        bail!("expected the 4 surviving nodes after the restart, status shows {}", again.nodes);
    }
    // Reconnected, not restarted: the surviving processes are the same.
    let mut inspect = Command::new("docker");
    inspect.args(["inspect", "-f", "{{.State.Status}} {{.RestartCount}}"]).args(&agents[1..]);
    let states = String::from_utf8_lossy(&run(&mut inspect, Duration::from_secs(30))?.stdout).into_owned();
    ensure!(states.lines().all(|l| l == "running 0"), "agent-nodes were restarted instead of reconnecting: {states}");
    let left = deadline.saturating_duration_since(Instant::now());
    let later =
        wait_for("training to go on after the restart", left, || Ok(trainer_version(project).ok().filter(|v| *v > version)))?;
    println!("[{:>5.1}s] trainer policy version {version} → {later}", phase.elapsed().as_secs_f64());
    Ok(())
}

#[test]
fn the_compose_file_parses_for_docker_compose() {
    // Needs only the docker-compose command, not an engine.
    if run(Command::new("docker-compose").arg("version"), Duration::from_secs(30)).is_err() {
        println!("SKIP compose file check: docker-compose is not installed");
        return;
    }
    let file = repo_root().join("deploy/compose.yaml");
    let config =
        run(Command::new("docker-compose").arg("-f").arg(&file).args(["--profile", "tools", "config"]), Duration::from_secs(60))
            .expect("docker-compose config");
    let config = String::from_utf8_lossy(&config.stdout);
    for service in ["market-node:", "trainer:", "agent-node:", "cli:"] {
        assert!(config.contains(service), "{service} missing from:\n{config}");
    }
    assert!(config.contains("condition: service_healthy"), "{config}");
}
