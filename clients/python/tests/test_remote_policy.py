"""A Python policy driving a real agent-node: a ``market-node`` and an
``agent-node --policy remote:URL`` on loopback, the policy served by
``peergrid.serve_policy`` on the port the node was told.

The market never clears on its own (``--min-prosumers`` above what joins):
each test steps it and reads the slots it cleared. Its deadline is short
(300 ms) so that a slot the node did not hold would be missing; the node's
remote-policy timeout is 2 s. Tests run in file order and share the node:
each starts (or leaves stopped) its own server on the node's policy port.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from processes import AGENT_TOKEN, OPERATOR_TOKEN, Proc, WaitTimeout, free_port, logs, take_slots, wait_until

import peergrid

PROSUMERS = 4
DEADLINE_MS = 300
TIMEOUT_MS = 2_000
WATCH_S = 60.0
CHARGE = [1.0, -1.0, 0.0]


@dataclass
class RemoteCluster:
    url: str
    policy_port: int
    metrics_port: int
    procs: list[Proc] = field(default_factory=list)

    def market(self) -> peergrid.Market:
        return peergrid.Market(self.url, OPERATOR_TOKEN)

    def metric(self, name: str, reason: str | None = None) -> float:
        """A sample of the agent-node's /metrics (0 if not exposed yet)."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10) as r:
            text = r.read().decode()
        key = name if reason is None else f'{name}{{reason="{reason}"}}'
        for line in text.splitlines():
            if line.startswith(key + " "):
                return float(line.split()[-1])
        return 0.0

    def agent_alive(self) -> bool:
        return all(p.exited() is None for p in self.procs)


@pytest.fixture(scope="module")
def remote(log_dir: Path) -> Iterator[RemoteCluster]:
    port = free_port()
    c = RemoteCluster(f"http://127.0.0.1:{port}", free_port(), free_port())
    config = log_dir / "remote-agent.json"
    # Fast reconnects to the policy, so a test's new server is called soon.
    config.write_text(json.dumps({"reconnect": {"base_ms": 50, "max_ms": 300}}))
    try:
        c.procs.append(
            Proc(
                "market-node:remote",
                [f"--listen=127.0.0.1:{port}", "--min-prosumers=1000", f"--deadline-ms={DEADLINE_MS}"],
                log_dir,
            )
        )
        with c.market() as market:
            wait_until("the market-node answers Status", market.status, lambda s: True, c.procs)
            c.procs.append(
                Proc(
                    "agent-node:remote",
                    [
                        f"--market={c.url}",
                        "--name=py-remote-policy",
                        f"--prosumers={PROSUMERS}",
                        "--seed=7",
                        "--actor-threads=1",
                        f"--config={config}",
                        f"--policy=remote:http://127.0.0.1:{c.policy_port}",
                        f"--remote-policy-timeout-ms={TIMEOUT_MS}",
                        f"--metrics-listen=127.0.0.1:{c.metrics_port}",
                    ],
                    log_dir,
                )
            )
            wait_until(
                f"the agent-node's {PROSUMERS} prosumers joined the market",
                market.status,
                lambda s: s.prosumers == PROSUMERS and s.nodes == 1,
                c.procs,
            )
            wait_until("the agent-node serves /metrics", lambda: c.metric("peergrid_agent_prosumers"), lambda v: v == PROSUMERS, c.procs)
        yield c
    finally:
        for p in c.procs:
            p.kill()


class Recorder:
    """A policy that plays ``CHARGE`` (after ``delay`` s, or once
    ``release`` is set), recording every call and feedback."""

    def __init__(self, delay: float = 0.0, release: threading.Event | None = None) -> None:
        self.calls: list[tuple[int, list[int], np.ndarray]] = []
        self.feedback: list[peergrid.Feedback] = []
        self.delay, self.release = delay, release

    def act(self, slot: int, ids: list[int], observations: np.ndarray) -> np.ndarray:
        if self.release is not None:
            self.release.wait(30)
        time.sleep(self.delay)
        self.calls.append((slot, list(ids), observations.copy()))
        return np.tile(np.array(CHARGE, dtype=np.float32), (len(ids), 1))


#: How long a test steps single slots waiting for the node to call its new
#: server: the node may be backing off (≤ 300 ms here) from an earlier
#: test's stopped one, and plays those slots without calling.
CALLED_WITHIN_S = 15.0


def step_until(remote: RemoteCluster, market: peergrid.Market, watch: Any, what: str, done: Any) -> None:
    """Steps single slots, 0.1 s apart, until ``done()``; each slot must
    have every report. Fails after :data:`CALLED_WITHIN_S` saying ``what``."""
    deadline = time.monotonic() + CALLED_WITHIN_S
    while True:
        market.step(1)
        [s] = take_slots(watch, 1, f"step(1) while waiting until {what}")
        assert (s.reported, s.missing) == (PROSUMERS, 0), s
        if done():
            return
        if time.monotonic() > deadline:
            raise WaitTimeout(f"timed out after {CALLED_WITHIN_S} s waiting until {what}\n{logs(remote.procs)}")
        time.sleep(0.1)


def step_until_called(remote: RemoteCluster, market: peergrid.Market, watch: Any, policy: Recorder) -> None:
    step_until(remote, market, watch, "the node calls the policy", lambda: bool(policy.calls))


def test_a_python_policy_decides_every_slot_and_gets_the_outcomes(remote: RemoteCluster) -> None:
    policy = Recorder()
    calls_before = remote.metric("peergrid_agent_remote_policy_calls_total")
    with peergrid.serve_policy(policy.act, observe=policy.feedback.append, port=remote.policy_port, token=AGENT_TOKEN):
        with remote.market() as market, market.watch(timeout=WATCH_S) as watch:
            step_until_called(remote, market, watch, policy)
            market.step(4)
            slots = take_slots(watch, 4, "step(4)")
    called = policy.calls[-4:]
    assert [c[0] for c in called] == [s.slot for s in slots], "one call per slot, for the slot played"
    for s in slots:
        assert (s.reported, s.missing) == (PROSUMERS, 0), s
        assert s.matched_kwh == 0.0, f"the policy offers nothing P2P: {s}"
    for slot, ids, obs in called:
        assert ids == list(range(PROSUMERS))
        assert obs.shape == (PROSUMERS, len(peergrid.FEATURE_NAMES)) and obs.dtype == np.float32
    # The households charged: no battery at home lost charge between slots.
    soc, capacity, home = (peergrid.FEATURE_NAMES.index(n) for n in ("soc", "battery_capacity_kwh", "battery_available"))
    for (_, _, a), (_, _, b) in zip(called, called[1:]):
        for p in range(PROSUMERS):
            if a[p, capacity] > 0 and a[p, home] == 1 and b[p, home] == 1:
                assert b[p, soc] >= a[p, soc] - 1e-6, f"prosumer {p}: SoC {a[p, soc]} -> {b[p, soc]}"
    # Each call after the first carried the outcome of the slot before.
    by_slot = {f.slot: f for f in policy.feedback}
    for s in slots[:-1]:
        f = by_slot[s.slot]
        assert f.prosumer_ids == tuple(range(PROSUMERS)) and f.remote_actions and all(f.settled_by_market), f
        assert len(f.rewards) == len(f.costs) == len(f.dones) == PROSUMERS and all(g >= 0 for g in f.grid_import_kwh)
    assert remote.metric("peergrid_agent_remote_policy_calls_total") >= calls_before + 4


def test_a_slow_python_policy_holds_the_market_instead_of_losing_the_slot(remote: RemoteCluster) -> None:
    # 1 s per slot: over three times the market's 300 ms deadline, within the node's 2 s timeout.
    policy = Recorder(delay=1.0)
    with peergrid.serve_policy(policy.act, port=remote.policy_port, token=AGENT_TOKEN):
        with remote.market() as market, market.watch(timeout=WATCH_S) as watch:
            step_until_called(remote, market, watch, policy)
            holds_before = market.status().holds
            market.step(2)
            slots = take_slots(watch, 2, "step(2) with a slow policy")
            status = market.status()
    assert [c[0] for c in policy.calls[-2:]] == [s.slot for s in slots], "both slots were answered by the policy"
    for s in slots:
        assert (s.reported, s.missing) == (PROSUMERS, 0), s
        assert s.held_ms > 0, f"the market held the slot for the node: {s}"
    assert status.holds >= holds_before + 2 and status.missing_reports == 0, status


def test_a_gone_python_policy_falls_back_to_the_rule_based_action(remote: RemoteCluster) -> None:
    # No server on the policy port: every slot falls back, none is lost.
    before = remote.metric("peergrid_agent_remote_policy_fallbacks_total", "unavailable")
    with remote.market() as market, market.watch(timeout=WATCH_S) as watch:
        market.step(3)
        slots = take_slots(watch, 3, "step(3) without a policy server")
        status = market.status()
    for s in slots:
        assert (s.reported, s.missing) == (PROSUMERS, 0), s
    assert status.missing_reports == 0
    assert remote.metric("peergrid_agent_remote_policy_fallbacks_total", "unavailable") >= before + 3
    assert remote.agent_alive(), logs(remote.procs)


def test_a_hung_python_policy_times_out_and_the_node_plays_on(remote: RemoteCluster) -> None:
    release = threading.Event()
    policy = Recorder(release=release)
    before = remote.metric("peergrid_agent_remote_policy_fallbacks_total", "timeout")
    server = peergrid.serve_policy(policy.act, port=remote.policy_port, token=AGENT_TOKEN)
    try:
        with remote.market() as market, market.watch(timeout=WATCH_S) as watch:
            step_until(
                remote,
                market,
                watch,
                "a call to the hung policy timed out",
                lambda: remote.metric("peergrid_agent_remote_policy_fallbacks_total", "timeout") >= before + 1,
            )
    finally:
        release.set()
        server.stop()
    assert remote.agent_alive(), logs(remote.procs)


def test_a_python_policy_answering_badly_is_counted_and_the_slot_plays_on(remote: RemoteCluster) -> None:
    asked: list[int] = []

    def act(slot: int, ids: list[int], observations: np.ndarray) -> list[list[float]]:
        asked.append(slot)
        return [[float("nan"), 0.0, 0.0]] * len(ids)

    before = remote.metric("peergrid_agent_remote_policy_fallbacks_total", "refused")
    with peergrid.serve_policy(act, port=remote.policy_port, token=AGENT_TOKEN):
        with remote.market() as market, market.watch(timeout=WATCH_S) as watch:
            step_until(remote, market, watch, "the node calls the policy answering NaN", lambda: bool(asked))
    assert remote.metric("peergrid_agent_remote_policy_fallbacks_total", "refused") >= before + 1
