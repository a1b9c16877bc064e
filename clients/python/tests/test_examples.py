"""The examples: ``examples/random_policy.py`` run against a live market
(a ``market-node`` that clears on its own and an ``agent-node --policy
remote:`` pointing at the example's port); ``examples/train_reinforce.py``
(not run: it trains for minutes) only compiled, so it cannot rot silently."""

from __future__ import annotations

import json
import py_compile
import subprocess
import sys
from pathlib import Path

from processes import AGENT_TOKEN, OPERATOR_TOKEN, Proc, free_port, logs, wait_until

import peergrid

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_the_random_policy_example_evaluates_episodes_on_a_live_market(log_dir: Path) -> None:
    market_port, policy_port = free_port(), free_port()
    url = f"http://127.0.0.1:{market_port}"
    config = log_dir / "example-agent.json"
    config.write_text(json.dumps({"reconnect": {"base_ms": 50, "max_ms": 300}}))
    procs: list[Proc] = []
    try:
        procs.append(Proc("market-node:example", [f"--listen=127.0.0.1:{market_port}", "--min-prosumers=3", "--deadline-ms=10000"], log_dir))
        with peergrid.Market(url, OPERATOR_TOKEN) as market:
            wait_until("the market-node answers Status", market.status, lambda s: True, procs)
        agent = [f"--market={url}", "--name=py-example", "--prosumers=3", "--seed=5", "--actor-threads=1", f"--config={config}"]
        procs.append(Proc("agent-node:example", [*agent, f"--policy=remote:http://127.0.0.1:{policy_port}"], log_dir))
        command = [sys.executable, str(EXAMPLES / "random_policy.py"), f"--port={policy_port}", "--prosumers=3", "--episodes=2", "--episode-slots=5"]
        env = {"PEERGRID_AGENT_TOKEN": AGENT_TOKEN, "PATH": "/usr/bin:/bin"}
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, f"{done.stdout}\n{done.stderr}\n{logs(procs)}"
        lines = done.stdout.splitlines()
        assert [line.split(":")[0] for line in lines] == ["episode 0", "episode 1"], done.stdout
        assert all("over 3 prosumers" in line and "/5 slots played with these actions" in line for line in lines), done.stdout
        assert all(p.exited() is None for p in procs), logs(procs)
    finally:
        for p in procs:
            p.kill()


def test_the_training_example_compiles(tmp_path: Path) -> None:
    py_compile.compile(str(EXAMPLES / "train_reinforce.py"), cfile=str(tmp_path / "train.pyc"), doraise=True)
