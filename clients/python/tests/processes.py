"""Real peergrid processes for the tests: the workspace's ``market-node``,
``agent-node`` and ``trainer`` binaries on free loopback ports, started as
``tests/src/processes.rs`` starts them (flags, tokens in the environment,
one log file per process).

Binaries come from ``PEERGRID_BIN_DIR``, else ``$CARGO_TARGET_DIR/debug``,
else ``target/debug`` of the repository. Every wait has a deadline and fails
saying what it waited for, with the tails of the logs; :meth:`Proc.kill`
(called by the fixtures' teardown) SIGKILLs and reaps.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

from peergrid import DeadlineExceeded, SlotSummary

REPO = Path(__file__).resolve().parents[3]
AGENT_TOKEN = "agent-token-for-tests-0123456789"
OPERATOR_TOKEN = "operator-token-for-tests-0123456789"
TLS_DIR = REPO / "tests" / "fixtures" / "tls"

T = TypeVar("T")


class WaitTimeout(AssertionError):
    """A wait ran out of time; the message says what it waited for."""


def bin_dir() -> Path:
    if os.environ.get("PEERGRID_BIN_DIR"):
        return Path(os.environ["PEERGRID_BIN_DIR"])
    if os.environ.get("CARGO_TARGET_DIR"):
        return Path(os.environ["CARGO_TARGET_DIR"]) / "debug"
    return REPO / "target" / "debug"


def binary(name: str) -> Path:
    path = bin_dir() / name
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is not built: run `cargo build --workspace --bins`, or set PEERGRID_BIN_DIR "
            "(or CARGO_TARGET_DIR) to where the binaries are"
        )
    return path


def free_port() -> int:
    """A free loopback port (bound and released; fine for tests on one machine)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The test's environment without any PEERGRID_* setting (a developer's
    PEERGRID_MARKET or PEERGRID_TLS_CA must not reach the processes), plus
    both tokens."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PEERGRID_")}
    env.update(
        PEERGRID_AGENT_TOKEN=AGENT_TOKEN,
        PEERGRID_OPERATOR_TOKEN=OPERATOR_TOKEN,
        RUST_LOG=os.environ.get("PEERGRID_PROC_LOG", "info"),
    )
    env.update(extra or {})
    return env


class Proc:
    """One started binary; its output goes to ``<dir>/<name>.log``."""

    def __init__(self, name: str, args: list[str], log_dir: Path, env: dict[str, str] | None = None) -> None:
        self.name = name
        self.log = log_dir / f"{name}.log"
        with open(self.log, "ab") as out:
            self.popen = subprocess.Popen(
                [str(binary(name.split(":")[0])), *args],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=child_env(env),
            )

    def exited(self) -> int | None:
        return self.popen.poll()

    def tail(self, lines: int = 30) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
        self.popen.wait(timeout=10)


def logs(procs: list[Proc], lines: int = 30) -> str:
    return "\n".join(f"--- {p.name} ({p.log}):\n{p.tail(lines)}" for p in procs)


def wait_until(
    what: str,
    probe: Callable[[], T],
    done: Callable[[T], bool],
    procs: list[Proc],
    timeout_s: float = 30.0,
) -> T:
    """Polls ``probe`` every 0.1 s until ``done(result)``; fails after
    ``timeout_s`` naming ``what``, the last result or error and the logs, or
    at once if one of ``procs`` exited."""
    deadline = time.monotonic() + timeout_s
    last: object = None
    while True:
        for p in procs:
            if p.exited() is not None:
                raise WaitTimeout(f"{p.name} exited with {p.exited()} while waiting until {what}:\n{logs(procs)}")
        try:
            result = probe()
            if done(result):
                return result
            last = result
        except Exception as e:  # the server may not listen yet
            last = e
        if time.monotonic() > deadline:
            raise WaitTimeout(f"timed out after {timeout_s} s waiting until {what}\nlast: {last!r}\n{logs(procs)}")
        time.sleep(0.1)


def take_slots(watch: Iterator[object], n: int, what: str) -> list[SlotSummary]:
    """The next ``n`` slot summaries of ``watch`` (opened with a timeout);
    fails naming ``what`` if the stream ends or times out first."""
    got: list[SlotSummary] = []
    try:
        for event in watch:
            if isinstance(event, SlotSummary):
                got.append(event)
                if len(got) == n:
                    return got
    except DeadlineExceeded:
        raise WaitTimeout(f"timed out waiting for {n} slot summaries after {what}; got {got}") from None
    raise WaitTimeout(f"the watch ended after {len(got)} of {n} slot summaries after {what}: {got}")
