"""Fixtures: one market-node with one agent-node for the whole session.

The market is started with ``--min-prosumers`` above what joins, so it never
clears on its own: only the tests' control calls (``step``, ``resume``) move
it, and each test reads the slot it starts from. The agent-node hosts
:data:`PROSUMERS` prosumers (ids ``0..PROSUMERS-1``) and plays the
rule-based policy, so every slot is deterministic for the seed.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from processes import OPERATOR_TOKEN, Proc, free_port, logs, wait_until

import peergrid

#: Prosumers of the one agent-node.
PROSUMERS = 8
#: Fast mode's wait for reports, ms. A slot clears as soon as the node has
#: reported, so a long deadline costs nothing, and a loaded machine never
#: turns a late report into a missing one.
DEADLINE_MS = 10_000


@dataclass
class Cluster:
    url: str
    procs: list[Proc] = field(default_factory=list)

    def market(self, token: str | None = OPERATOR_TOKEN, **kwargs: object) -> peergrid.Market:
        return peergrid.Market(self.url, token, **kwargs)  # type: ignore[arg-type]

    def logs(self) -> str:
        return logs(self.procs)


@pytest.fixture(scope="session")
def log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("peergrid-procs")


@pytest.fixture(scope="session")
def cluster(log_dir: Path) -> Iterator[Cluster]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    c = Cluster(url)
    try:
        c.procs.append(Proc("market-node", [f"--listen=127.0.0.1:{port}", "--min-prosumers=1000", f"--deadline-ms={DEADLINE_MS}"], log_dir))
        with c.market() as market:
            wait_until("the market-node answers Status", market.status, lambda s: True, c.procs)
            agent_args = [
                f"--market={url}",
                "--name=py-client-tests",
                f"--prosumers={PROSUMERS}",
                "--seed=7",
                "--actor-threads=1",
            ]
            c.procs.append(Proc("agent-node", agent_args, log_dir))
            wait_until(
                f"the agent-node's {PROSUMERS} prosumers joined the market",
                market.status,
                lambda s: s.prosumers == PROSUMERS and s.nodes == 1,
                c.procs,
            )
        yield c
    finally:
        for p in c.procs:
            p.kill()


@pytest.fixture
def market(cluster: Cluster) -> Iterator[peergrid.Market]:
    """An operator client of the session's market."""
    with cluster.market() as m:
        yield m
