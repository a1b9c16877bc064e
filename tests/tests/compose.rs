//! The docker compose cluster of `deploy/compose.yaml` as shipped, end to
//! end: build the images (`deploy/build-images.sh`), then with the compose
//! file's own timing and learning defaults (fast market, synchronous
//! trainer following membership, 30 s lease grace; only the prosumers per
//! node and the clearing start are set, to keep the test small):
//!
//! 1. 3 agent-nodes train (policy version ≥ 3, no rollout stale from the
//!    first round on), then a steady window;
//! 2. scale to 5, a steady window once the newcomers are in step;
//! 3. restart the trainer's container: it resumes from its checkpoint and
//!    learning advances ≥ 2 versions, then a steady window;
//! 4. restart one agent-node's container: it continues its session and
//!    households from its state volume (same id range, nobody absent);
//! 5. `docker kill` one agent-node and wait past the lease grace: its
//!    households leave, the market counts the live nodes' prosumers, and
//!    learning goes on without it (a steady window of 4);
//! 6. restart the market-node: the nodes reconnect, learning goes on.
//!
//! Asserted: missing reports below 1 % of the prosumer-slots counted
//! outside the kill window (from slot 0 to the kill, and from the lease's
//! expiry to the market restart); no stale rollout in a synchronous steady
//! window (each spans [`STEADY_VERSIONS`] versions after a transition has
//! settled, and every live node — named by its container's host name —
//! contributes to every update, no other node to any); no agent-node
//! container exited or was restarted on its own; after the grace the
//! market's prosumers are the live nodes' prosumers; balances within 1e-9
//! throughout. Market status comes from `peergrid ctl status --json` in a
//! one-off container, trainer figures from its Prometheus metrics.
//!
//! Skipped, with the reason printed, when there is no usable Docker engine
//! (`docker info` fails) or no compose command: the rest of the suite still
//! reports real results. The project is torn down (`down -v`) on every
//! exit, failed or not. PEERGRID_IMAGE_TAG (default `latest`) names the
//! images built and run; PEERGRID_COMPOSE_PREBUILT=1 skips the build.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use peergrid_e2e::compose::{
    docker_unavailable, http_get, repo_root, run, tail, wait_for, ComposeProject,
};
use peergrid_e2e::measure::{missing_outside, MarketStatus as Status, TrainerFigures as Trainer};

/// Prosumers per agent-node (small: the test is about the cluster, not scale).
const PROSUMERS_PER_NODE: u64 = 20;
/// Agent-nodes the cluster starts with (clearing starts once all joined).
const FIRST_NODES: u64 = 3;
/// Cold image builds compile two release trees; warm ones take seconds.
const BUILD_TIMEOUT: Duration = Duration::from_secs(45 * 60);
/// Everything after the build.
const CLUSTER_TIMEOUT: Duration = Duration::from_secs(9 * 60);
/// The longest any single wait may take (the lease grace wait adds the grace).
const STEP_TIMEOUT: Duration = Duration::from_secs(120);
/// deploy/compose.yaml's PEERGRID_MARKET_LEASE_GRACE_MS default.
const LEASE_GRACE: Duration = Duration::from_secs(30);
/// Balance errors the status API may report (exact fixed-point arithmetic: 0).
const BALANCE_TOLERANCE: f64 = 1e-9;
/// Missing reports allowed outside the kill window, per prosumer-slot.
const MAX_MISSING_SHARE: f64 = 0.01;
/// Policy versions a steady window spans.
const STEADY_VERSIONS: u64 = 4;

#[test]
fn compose_cluster_learns_through_scaling_restarts_and_a_killed_node() {
    if let Some(reason) = docker_unavailable() {
        println!("SKIP compose cluster test: {reason}");
        return;
    }
    let tag = std::env::var("PEERGRID_IMAGE_TAG").unwrap_or_else(|_| "latest".into());
    let started = Instant::now();
    // PEERGRID_COMPOSE_PREBUILT=1: run the images already tagged (iterating on the test).
    if std::env::var("PEERGRID_COMPOSE_PREBUILT").as_deref() == Ok("1") {
        println!("PEERGRID_COMPOSE_PREBUILT=1: using the peergrid/*:{tag} images as they are");
    } else {
        let mut build = Command::new(repo_root().join("deploy/build-images.sh"));
        build.args(["--tag", &tag]).current_dir(repo_root());
        if let Err(e) = run(&mut build, BUILD_TIMEOUT) {
            panic!("deploy/build-images.sh failed: {e:#}");
        }
    }
    let built = started.elapsed();
    println!("images built in {built:.0?}");

    let project = ComposeProject::new("peergrid-test", env(&tag)).expect("compose project");
    let cluster = Cluster::new(&project);
    if let Err(e) = scenario(&cluster) {
        eprintln!("--- compose logs ({}) ---\n{}", project.name, project.logs(60));
        panic!("compose cluster test failed: {e:#}");
    }
    println!(
        "compose cluster test: build {:.0?}, cluster {:.0?}",
        built,
        started.elapsed() - built
    );
}

/// Settings for the compose file: fresh tokens, ephemeral host ports on the
/// loopback address (no clash with a cluster the user runs), small nodes
/// that all join before slot 0. Timing and learning stay the file's
/// defaults.
fn env(tag: &str) -> Vec<(String, String)> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let unique = format!("{:x}{:x}", std::process::id(), nanos);
    let mut vars: Vec<(String, String)> = [
        ("PEERGRID_AGENT_TOKEN", format!("test-agent-token-{unique}-0123456789")),
        ("PEERGRID_OPERATOR_TOKEN", format!("test-operator-token-{unique}-0123456789")),
        ("PEERGRID_PUBLISH_ADDR", "127.0.0.1".into()),
        ("PEERGRID_AGENT_PROSUMERS", PROSUMERS_PER_NODE.to_string()),
        ("PEERGRID_MARKET_MIN_PROSUMERS", (FIRST_NODES * PROSUMERS_PER_NODE).to_string()),
        ("PEERGRID_IMAGE_TAG", tag.to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    for port in [
        "PEERGRID_MARKET_PORT",
        "PEERGRID_MARKET_METRICS_PORT",
        "PEERGRID_TRAINER_PORT",
        "PEERGRID_TRAINER_METRICS_PORT",
    ] {
        vars.push((port.to_owned(), String::new()));
    }
    vars
}

/// An agent-node container: full id, and the node name it trains under
/// (its host name: the id's first 12 characters).
#[derive(Clone, Debug, PartialEq)]
struct Agent {
    id: String,
    name: String,
}

/// One container's `docker inspect` state.
#[derive(Clone, Debug, PartialEq)]
struct ContainerState {
    status: String,
    restarts: u64,
    exit_code: i64,
    started_at: String,
}

/// The cluster under test: the project, every market status sample taken
/// (for the missing-report ledger), and the time limits.
struct Cluster<'a> {
    project: &'a ComposeProject,
    started: Instant,
    deadline: Instant,
    samples: RefCell<Vec<Status>>,
}

impl<'a> Cluster<'a> {
    fn new(project: &'a ComposeProject) -> Cluster<'a> {
        let started = Instant::now();
        Cluster {
            project,
            started,
            deadline: started + CLUSTER_TIMEOUT,
            samples: RefCell::new(Vec::new()),
        }
    }

    fn say(&self, what: &str) {
        println!("[{:>5.1}s] {what}", self.started.elapsed().as_secs_f64());
    }

    /// How long the next wait may take: `limit`, within the whole test's deadline.
    fn left(&self, limit: Duration) -> Duration {
        limit.min(self.deadline.saturating_duration_since(Instant::now()))
    }

    /// The market's status, recorded for the ledger; fails on a balance error.
    fn status(&self) -> Result<Status> {
        let s = Status::parse(&self.project.run_json("cli", &["ctl", "status", "--json"])?)?;
        s.balanced(BALANCE_TOLERANCE)?;
        self.samples.borrow_mut().push(s.clone());
        Ok(s)
    }

    /// Index of the last status sample.
    fn last_sample(&self) -> usize {
        self.samples.borrow().len().saturating_sub(1)
    }

    fn wait_market(
        &self,
        what: &str,
        limit: Duration,
        done: impl Fn(&Status) -> bool,
    ) -> Result<Status> {
        let s = wait_for(what, self.left(limit), || {
            let s = self.status()?;
            Ok(done(&s).then_some(s))
        })?;
        self.say(&format!(
            "{what}: slot {}, {} prosumers on {} nodes, {} absent, {} missing reports, {} holds ({} expired), {} leases expired",
            s.slot, s.prosumers, s.nodes, s.absent_prosumers, s.missing_reports, s.holds, s.holds_expired, s.leases_expired
        ));
        Ok(s)
    }

    /// The trainer's metrics, through its published metrics port.
    fn trainer(&self) -> Result<Trainer> {
        let addr = self.project.published("trainer", 9101)?;
        Trainer::parse(&http_get(&addr, "/metrics", Duration::from_secs(10))?)
    }

    fn wait_version(&self, what: &str, at_least: u64) -> Result<Trainer> {
        let t = wait_for(
            &format!("{what} (trainer policy version ≥ {at_least})"),
            self.left(STEP_TIMEOUT),
            || {
                let t = self.trainer()?;
                Ok((t.version >= at_least).then_some(t))
            },
        )?;
        self.say(&format!("{what}: policy version {}", t.version));
        Ok(t)
    }

    /// A synchronous steady window of `STEADY_VERSIONS` versions: no rollout
    /// goes stale, and exactly the `live` nodes feed every update (a node
    /// contributes one rollout per version: n versions mean n ± 1 accepted
    /// rollouts between two scrapes, as a round may be open at either).
    fn steady(&self, what: &str, live: &[Agent]) -> Result<()> {
        let t0 = self.trainer()?;
        let t1 =
            self.wait_version(&format!("steady window, {what}"), t0.version + STEADY_VERSIONS)?;
        let n = t1.version - t0.version;
        let stale: Vec<String> = t1
            .nodes()
            .into_iter()
            .filter(|node| t1.count(node, "stale") > t0.count(node, "stale"))
            .map(|node| {
                format!(
                    "{node} +{}",
                    t1.count(&node, "stale").saturating_sub(t0.count(&node, "stale"))
                )
            })
            .collect();
        ensure!(
            t1.stale_batches == t0.stale_batches,
            "{what}: stale rollouts {} → {} in synchronous steady state (versions {}..{}): {stale:?}",
            t0.stale_batches,
            t1.stale_batches,
            t0.version,
            t1.version
        );
        let live_names: BTreeSet<&str> = live.iter().map(|a| a.name.as_str()).collect();
        for node in t1.nodes() {
            let accepted = t1.count(&node, "accepted").saturating_sub(t0.count(&node, "accepted"));
            if live_names.contains(node.as_str()) {
                ensure!(
                    accepted + 1 >= n && accepted <= n + 1,
                    "{what}: live node {node} had {accepted} rollouts accepted over {n} versions ({}..{}): {:?}",
                    t0.version,
                    t1.version,
                    t1.rollouts
                );
            } else {
                ensure!(
                    accepted == 0,
                    "{what}: node {node}, not live, had {accepted} rollouts accepted: {:?}",
                    t1.rollouts
                );
            }
        }
        for name in &live_names {
            ensure!(
                t1.nodes().contains(*name),
                "{what}: live node {name} never sent a rollout: {:?}",
                t1.rollouts
            );
        }
        self.say(&format!(
            "steady window, {what}: versions {}..{}, 0 stale, {} live nodes in every update",
            t0.version,
            t1.version,
            live.len()
        ));
        Ok(())
    }

    fn agents(&self) -> Result<Vec<Agent>> {
        let ids = self.project.containers("agent-node")?;
        Ok(ids.into_iter().map(|id| Agent { name: id.chars().take(12).collect(), id }).collect())
    }

    fn inspect(&self, agents: &[Agent]) -> Result<BTreeMap<String, ContainerState>> {
        let mut cmd = Command::new("docker");
        cmd.args([
            "inspect",
            "-f",
            "{{.Id}} {{.State.Status}} {{.RestartCount}} {{.State.ExitCode}} {{.State.StartedAt}}",
        ]);
        cmd.args(agents.iter().map(|a| &a.id));
        let out =
            String::from_utf8_lossy(&run(&mut cmd, Duration::from_secs(30))?.stdout).into_owned();
        let lines: Vec<&str> = out.lines().collect();
        ensure!(
            lines.len() == agents.len(),
            "`docker inspect` of {} containers printed: {out}",
            agents.len()
        );
        let mut states = BTreeMap::new();
        // One line per container, in the order asked.
        for (agent, line) in agents.iter().zip(lines) {
            let f: Vec<&str> = line.split_whitespace().collect();
            ensure!(
                f.len() == 5 && f[0].starts_with(&agent.id),
                "unexpected `docker inspect` line for {}: '{line}'",
                agent.id
            );
            let state = ContainerState {
                status: f[1].to_owned(),
                restarts: f[2].parse()?,
                exit_code: f[3].parse()?,
                started_at: f[4].to_owned(),
            };
            states.insert(agent.id.clone(), state);
        }
        Ok(states)
    }

    fn wait_healthy(&self, agents: &[Agent]) -> Result<()> {
        wait_for(
            &format!("{} healthy agent-node containers", agents.len()),
            self.left(STEP_TIMEOUT),
            || {
                let mut inspect = Command::new("docker");
                inspect
                    .args(["inspect", "-f", "{{.State.Health.Status}}"])
                    .args(agents.iter().map(|a| &a.id));
                let health =
                    String::from_utf8_lossy(&run(&mut inspect, Duration::from_secs(30))?.stdout)
                        .into_owned();
                ensure!(!health.contains("unhealthy"), "an agent-node is unhealthy: {health}");
                Ok(health.lines().all(|h| h == "healthy").then_some(()))
            },
        )
    }
}

/// The prosumers `n` agent-nodes host.
fn prosumers_of(n: u64) -> u64 {
    n * PROSUMERS_PER_NODE
}

fn scenario(c: &Cluster) -> Result<()> {
    // The ledger starts at slot 0, where all first nodes were connected
    // (clearing waits for PEERGRID_MARKET_MIN_PROSUMERS of them).
    c.samples
        .borrow_mut()
        .push(Status { prosumers: prosumers_of(FIRST_NODES), ..Status::default() });

    // 1. Three agent-nodes (compose starts them once market-node and trainer are healthy).
    c.project.exec(
        &["up", "-d", "--scale", &format!("agent-node={FIRST_NODES}")],
        Duration::from_secs(180),
    )?;
    c.wait_market("3 agent-nodes clearing", STEP_TIMEOUT, |s| {
        s.prosumers == prosumers_of(3) && s.slot > 5
    })?;
    let first = c.agents()?;
    ensure!(first.len() == 3, "expected 3 agent-node containers, found {first:?}");
    // Every node announces its first rollout as it begins it (all three
    // before slot 0 clears: clearing waits for all of them), so the first
    // round waits for all three and nothing is stale from the start.
    let t = c.wait_version("3 agent-nodes learning", 3)?;
    ensure!(
        t.stale_batches == 0,
        "{} stale rollouts in the first rounds: {:?}",
        t.stale_batches,
        t.rollouts
    );
    c.steady("3 agent-nodes", &first)?;

    // 2. Scale to five: the market assigns the new nodes fresh id ranges,
    // the trainer waits for their first rollouts (a newcomer that begins
    // while a round's end is held may be stale once: the window below
    // starts two versions later).
    c.project.exec(
        &["up", "-d", "--no-recreate", "--scale", "agent-node=5"],
        Duration::from_secs(180),
    )?;
    c.wait_market("scaled to 5 agent-nodes", STEP_TIMEOUT, |s| {
        s.prosumers == prosumers_of(5) && s.nodes == 5
    })?;
    let five = c.agents()?;
    ensure!(five.len() == 5, "expected 5 agent-node containers, found {five:?}");
    c.wait_healthy(&five)?;
    let v = c.trainer()?.version;
    c.wait_version("newcomers in step", v + 2)?;
    c.steady("5 agent-nodes", &five)?;
    let states = c.inspect(&five)?;

    // 3. Restart the trainer: SIGTERM writes a checkpoint, the new process
    // resumes from it, the nodes resubscribe and push again.
    let before = c.trainer()?.version;
    c.project.exec(&["restart", "-t", "60", "trainer"], Duration::from_secs(180))?;
    let resumed = wait_for("the restarted trainer's metrics", c.left(STEP_TIMEOUT), || {
        Ok(Some(c.trainer()?))
    })?;
    c.say(&format!("trainer restarted: version {before} before, {} resumed", resumed.version));
    ensure!(
        resumed.version >= before,
        "the trainer resumed at version {} after publishing {before}: its SIGTERM checkpoint was lost",
        resumed.version
    );
    c.wait_version("learning after the trainer restart", resumed.version + 2)?;
    c.steady("5 agent-nodes after the trainer restart", &five)?;

    // 4. Restart one agent-node's container: SIGTERM saves its session and
    // households in its volume; the new process resumes both (same id range:
    // nobody stays absent, no lease expires).
    let restarted = &five[0];
    let s = c.status()?;
    run(
        Command::new("docker").args(["restart", "-t", "15", &restarted.id]),
        Duration::from_secs(120),
    )?;
    let back = c.wait_market("the restarted agent-node is back", STEP_TIMEOUT, |b| {
        b.prosumers == prosumers_of(5) && b.nodes == 5 && b.absent_prosumers == 0 && b.slot > s.slot
    })?;
    ensure!(
        back.leases_expired == s.leases_expired,
        "a lease expired although the node came back: {back:?}"
    );
    let logs = run(Command::new("docker").args(["logs", &restarted.id]), Duration::from_secs(60))?;
    let logs = format!(
        "{}{}",
        String::from_utf8_lossy(&logs.stdout),
        String::from_utf8_lossy(&logs.stderr)
    );
    for needle in ["resuming the saved session", "households continue from their saved state"] {
        ensure!(
            logs.contains(needle),
            "the restarted agent-node's log lacks '{needle}':\n{}",
            tail(&logs, 30)
        );
    }
    ensure!(
        !logs.contains("cannot resume"),
        "the market refused the restarted node's session:\n{}",
        tail(&logs, 30)
    );
    let mut expected_starts: BTreeMap<String, String> =
        states.into_iter().map(|(id, s)| (id, s.started_at)).collect();
    let restarted_state = c.inspect(std::slice::from_ref(restarted))?;
    expected_starts.insert(restarted.id.clone(), restarted_state[&restarted.id].started_at.clone());

    // 5. Kill one for good: its households are absent for the lease grace,
    // then leave; learning goes on with the four others. The kill window
    // (left out of the missing-report ledger) runs from the last sample
    // before the kill to the first one after the lease expired.
    let killed = &five[1];
    let live: Vec<Agent> = five.iter().filter(|a| a.id != killed.id).cloned().collect();
    let before_kill = c.status()?;
    let kill_from = c.last_sample();
    run(Command::new("docker").args(["kill", &killed.id]), Duration::from_secs(60))?;
    c.wait_market("the killed node's households absent", STEP_TIMEOUT, |s| {
        s.prosumers == prosumers_of(4) && s.nodes == 4
    })?;
    let gone =
        c.wait_market("the killed node's lease expired", LEASE_GRACE + STEP_TIMEOUT, |s| {
            s.absent_prosumers == 0 && s.leases_expired > before_kill.leases_expired
        })?;
    let kill_to = c.last_sample();
    ensure!(
        gone.prosumers == prosumers_of(4) && gone.nodes == 4,
        "after the lease grace the market counts {} prosumers on {} nodes, the 4 live nodes host {}",
        gone.prosumers,
        gone.nodes,
        prosumers_of(4)
    );
    let v = c.trainer()?.version;
    c.wait_version("learning without the killed node", v + 2)?;
    c.steady("4 agent-nodes after the kill", &live)?;
    c.wait_market("clearing after the lease grace", STEP_TIMEOUT, |s| s.slot > gone.slot + 100)?;

    // The ledger: everything before the market restart but the kill window.
    let (missing, prosumer_slots) = missing_outside(&c.samples.borrow(), kill_from..kill_to)?;
    let share = missing as f64 / prosumer_slots.max(1) as f64;
    c.say(&format!(
        "missing reports outside the kill window: {missing} of {prosumer_slots} prosumer-slots ({:.3} %)",
        share * 100.0
    ));
    ensure!(prosumer_slots > 0, "no prosumer-slots counted: {:?}", c.samples.borrow());
    ensure!(
        share < MAX_MISSING_SHARE,
        "missing reports outside the kill window: {missing} of {prosumer_slots} prosumer-slots ({:.2} % ≥ {} %)",
        share * 100.0,
        MAX_MISSING_SHARE * 100.0
    );

    // 6. Restart the market: the nodes reconnect with their sessions (a
    // restarted market counts slots from zero) and learning goes on.
    let version = c.trainer()?.version;
    c.project.exec(&["restart", "-t", "10", "market-node"], Duration::from_secs(120))?;
    let s = c.wait_market("clearing after a market restart", STEP_TIMEOUT, |s| {
        s.prosumers == prosumers_of(4) && s.slot > 5
    })?;
    c.wait_market("slots continuing", STEP_TIMEOUT, |n| {
        n.prosumers == prosumers_of(4) && n.nodes == 4 && n.slot > s.slot + 5
    })?;
    c.wait_version("learning after the market restart", version + 1)?;

    // No agent-node exited on its own: every one but the killed one runs
    // the process it ran before (the restarted one: the one after its restart).
    let states = c.inspect(&five)?;
    for agent in &live {
        let state = &states[&agent.id];
        ensure!(
            state.status == "running"
                && state.restarts == 0
                && state.started_at == expected_starts[&agent.id],
            "agent-node {} exited or was restarted on its own: {state:?} (started at {} before)",
            agent.name,
            expected_starts[&agent.id]
        );
    }
    let k = &states[&killed.id];
    ensure!(
        k.status == "exited" && k.exit_code == 137,
        "the killed agent-node is not the one docker killed: {k:?}"
    );
    c.say("every agent-node but the killed one still runs its process");
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
    let config = run(
        Command::new("docker-compose").arg("-f").arg(&file).args(["--profile", "tools", "config"]),
        Duration::from_secs(60),
    )
    .expect("docker-compose config");
    let config = String::from_utf8_lossy(&config.stdout);
    for service in ["market-node:", "trainer:", "agent-node:", "cli:"] {
        assert!(config.contains(service), "{service} missing from:\n{config}");
    }
    assert!(config.contains("condition: service_healthy"), "{config}");
    // Every agent-node replica keeps its state in a volume of its own.
    assert!(config.contains("PEERGRID_AGENT_STATE_DIR: /var/lib/peergrid/agent"), "{config}");
    assert!(
        config.contains("- /var/lib/peergrid/agent"),
        "an anonymous volume per replica:\n{config}"
    );
}
