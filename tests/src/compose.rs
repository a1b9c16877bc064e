//! Driving the docker compose cluster of `deploy/compose.yaml` from tests:
//! external commands with time limits, a compose project that is torn down
//! (`down -v`) when it goes out of scope, and clients that run as containers
//! on the project's network (`docker-compose run --rm`). Only Prometheus
//! metrics are read through a published port (an ephemeral one on the
//! loopback address, [`ComposeProject::published`]), as a user would
//! `curl` them.
//!
//! Works with docker-compose 1.29 (`docker-compose`) and Compose v2
//! (`docker compose`): only commands and flags both understand are used.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};

/// The repository root (the parent of this crate).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ has a parent").to_path_buf()
}

/// Runs `cmd` to completion or until `timeout` (then kills it and fails),
/// capturing its output. Fails when it exits non-zero, with its stderr.
pub fn run(cmd: &mut Command, timeout: Duration) -> Result<Output> {
    let output = run_unchecked(cmd, timeout)?;
    if !output.status.success() {
        bail!(
            "{cmd:?} exited with {}: {}",
            output.status,
            tail(&String::from_utf8_lossy(&output.stderr), 40)
        );
    }
    Ok(output)
}

/// [`run`] without the exit status check.
pub fn run_unchecked(cmd: &mut Command, timeout: Duration) -> Result<Output> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    // Drain both pipes on their own threads so a chatty child never blocks.
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            bytes
        })
    };
    let stdout = drain(Box::new(child.stdout.take().expect("piped")));
    let stderr = drain(Box::new(child.stderr.take().expect("piped")));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{cmd:?} did not finish within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stdout = stdout.join().map_err(|_| anyhow!("stdout reader panicked"))?;
    let stderr = stderr.join().map_err(|_| anyhow!("stderr reader panicked"))?;
    Ok(Output { status, stdout, stderr })
}

/// The last `lines` lines of `text`.
pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Why the docker tests cannot run here, or `None` when they can: a Docker
/// engine that answers `docker info` and a compose command.
pub fn docker_unavailable() -> Option<String> {
    if let Err(e) = run(Command::new("docker").arg("info"), Duration::from_secs(30)) {
        return Some(format!(
            "`docker info` failed, no usable Docker engine: {}",
            first_line(&e.to_string())
        ));
    }
    if ComposeCommand::detect().is_none() {
        return Some("neither `docker-compose` nor `docker compose` is installed".into());
    }
    None
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or("")
}

/// Polls `probe` until it yields a value, at most `timeout`; the error
/// names `what` and the last thing the probe reported.
pub fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut probe: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let deadline = Instant::now() + timeout;
    let mut last = String::from("no answer yet");
    loop {
        match probe() {
            Ok(Some(value)) => return Ok(value),
            Ok(None) => {}
            Err(e) => last = format!("{e:#}"),
        }
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}; last: {last}");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// `docker-compose` (1.x) or `docker compose` (v2).
#[derive(Clone, Debug)]
pub enum ComposeCommand {
    V1,
    V2,
}

impl ComposeCommand {
    pub fn detect() -> Option<ComposeCommand> {
        let works = |cmd: &mut Command| run(cmd, Duration::from_secs(30)).is_ok();
        if works(Command::new("docker-compose").arg("version")) {
            Some(ComposeCommand::V1)
        } else if works(Command::new("docker").args(["compose", "version"])) {
            Some(ComposeCommand::V2)
        } else {
            None
        }
    }

    fn command(&self) -> Command {
        match self {
            ComposeCommand::V1 => Command::new("docker-compose"),
            ComposeCommand::V2 => {
                let mut c = Command::new("docker");
                c.arg("compose");
                c
            }
        }
    }
}

/// A compose project of `deploy/compose.yaml` under a unique name; dropping
/// it runs `down -v` (containers, network and volumes go), also when the
/// test failed.
pub struct ComposeProject {
    pub name: String,
    file: PathBuf,
    compose: ComposeCommand,
    env: Vec<(String, String)>,
}

impl ComposeProject {
    /// A project named `prefix-<pid>-<time>` with `env` set for every
    /// compose command (settings the compose file reads).
    pub fn new(prefix: &str, env: Vec<(String, String)>) -> Result<ComposeProject> {
        let compose = ComposeCommand::detect().context("no compose command")?;
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos();
        let name = format!("{prefix}-{}-{}", std::process::id(), nanos % 1_000_000_000);
        Ok(ComposeProject { name, file: repo_root().join("deploy/compose.yaml"), compose, env })
    }

    /// `<compose> -p NAME -f deploy/compose.yaml ARGS...`
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = self.compose.command();
        cmd.arg("-p").arg(&self.name).arg("-f").arg(&self.file).args(args);
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd
    }

    /// Runs a compose command, failing on a non-zero exit; returns stdout.
    pub fn exec(&self, args: &[&str], timeout: Duration) -> Result<String> {
        let output = run(&mut self.command(args), timeout)?;
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// A one-off container of `service` on the project's network
    /// (`run --rm -T --no-deps`), its stdout parsed as one JSON value.
    pub fn run_json(&self, service: &str, args: &[&str]) -> Result<serde_json::Value> {
        let mut all = vec!["run", "--rm", "-T", "--no-deps", service];
        all.extend_from_slice(args);
        let stdout = self.exec(&all, Duration::from_secs(60))?;
        let start = stdout
            .find(['{', '['])
            .with_context(|| format!("no JSON in the output of {args:?}: {stdout}"))?;
        serde_json::from_str(&stdout[start..])
            .with_context(|| format!("output of {args:?} is not JSON: {stdout}"))
    }

    /// Container ids of `service`'s running replicas.
    pub fn containers(&self, service: &str) -> Result<Vec<String>> {
        Ok(self
            .exec(&["ps", "-q", service], Duration::from_secs(60))?
            .lines()
            .map(str::to_owned)
            .collect())
    }

    /// The host address (`127.0.0.1:PORT`) that `service`'s container
    /// `port` is published on. Ask again after a restart: an ephemeral
    /// host port may change.
    pub fn published(&self, service: &str, port: u16) -> Result<String> {
        let out = self.exec(&["port", service, &port.to_string()], Duration::from_secs(60))?;
        let addr = out.trim();
        let (host, host_port) =
            addr.rsplit_once(':').filter(|(_, p)| p.parse::<u16>().is_ok()).with_context(|| {
                format!("{service}:{port} is not published (`port` printed '{addr}')")
            })?;
        // A port published on every address answers on the loopback one.
        Ok(match host {
            "0.0.0.0" | "[::]" | "::" => format!("127.0.0.1:{host_port}"),
            _ => addr.to_owned(),
        })
    }

    /// The last lines of every service's log, for failure reports.
    pub fn logs(&self, lines: usize) -> String {
        let n = lines.to_string();
        match run_unchecked(
            &mut self.command(&["logs", "--no-color", "--tail", &n]),
            Duration::from_secs(60),
        ) {
            Ok(out) => String::from_utf8_lossy(&out.stdout).into_owned(),
            Err(e) => format!("(no logs: {e:#})"),
        }
    }
}

/// `GET path` from `addr` (`host:port`) over plain HTTP/1.0: the body of a
/// 200 answer, else an error with the status line.
pub fn http_get(addr: &str, path: &str, timeout: Duration) -> Result<String> {
    let socket =
        addr.to_socket_addrs()?.next().with_context(|| format!("{addr} resolves to no address"))?;
    let mut stream = TcpStream::connect_timeout(&socket, timeout)
        .with_context(|| format!("cannot connect to {addr}"))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    stream.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())?;
    let mut answer = String::new();
    stream
        .read_to_string(&mut answer)
        .with_context(|| format!("reading GET {path} from {addr}"))?;
    let (head, body) = answer
        .split_once("\r\n\r\n")
        .with_context(|| format!("GET {path} from {addr}: no HTTP header"))?;
    let status = head.lines().next().unwrap_or("");
    if status.split_whitespace().nth(1) != Some("200") {
        bail!("GET {path} from {addr} answered '{status}'");
    }
    Ok(body.to_owned())
}

impl Drop for ComposeProject {
    fn drop(&mut self) {
        let down = run(
            &mut self.command(&["down", "-v", "--remove-orphans", "-t", "5"]),
            Duration::from_secs(180),
        );
        if let Err(e) = down {
            eprintln!("compose project {}: `down -v` failed, remove it by hand: {e:#}", self.name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_reports_exit_status_and_stderr() {
        let out = run(Command::new("sh").args(["-c", "echo hi"]), Duration::from_secs(10)).unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "hi\n");
        let e = run(
            Command::new("sh").args(["-c", "echo broken >&2; exit 3"]),
            Duration::from_secs(10),
        )
        .unwrap_err();
        assert!(e.to_string().contains("broken"), "{e}");
    }

    #[test]
    fn run_kills_a_command_that_overstays() {
        let started = Instant::now();
        let e = run(Command::new("sleep").arg("30"), Duration::from_millis(200)).unwrap_err();
        assert!(e.to_string().contains("did not finish"), "{e}");
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn http_get_returns_the_body_of_a_200_and_fails_otherwise() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let server = std::thread::spawn(move || {
            for answer in [
                "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nmetric 1\n",
                "HTTP/1.0 404 Not Found\r\n\r\n",
            ] {
                let (mut s, _) = listener.accept().unwrap();
                // The whole request first: closing with unread bytes resets the connection.
                let mut request = Vec::new();
                let mut chunk = [0u8; 1024];
                while !request.ends_with(b"\r\n\r\n") {
                    let n = s.read(&mut chunk).unwrap();
                    assert!(n > 0, "the client closed mid-request: {request:?}");
                    request.extend_from_slice(&chunk[..n]);
                }
                assert!(request.starts_with(b"GET /metrics HTTP/1.0\r\n"), "{request:?}");
                s.write_all(answer.as_bytes()).unwrap();
            }
        });
        assert_eq!(http_get(&addr, "/metrics", Duration::from_secs(10)).unwrap(), "metric 1\n");
        let e = http_get(&addr, "/metrics", Duration::from_secs(10)).unwrap_err();
        assert!(e.to_string().contains("404"), "{e}");
        server.join().unwrap();
    }

    #[test]
    fn wait_for_names_what_it_waited_for() {
        let e = wait_for("the impossible", Duration::from_millis(10), || -> Result<Option<()>> {
            bail!("nope")
        })
        .unwrap_err();
        assert!(e.to_string().contains("the impossible") && e.to_string().contains("nope"), "{e}");
        let mut n = 0;
        assert_eq!(
            wait_for("three", Duration::from_secs(10), || {
                n += 1;
                Ok((n == 3).then_some(n))
            })
            .unwrap(),
            3
        );
    }
}
