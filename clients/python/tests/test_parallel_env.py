"""``peergrid.ParallelEnv`` over a live market: a ``market-node`` that clears
on its own (fast mode, starts when the node's prosumers joined) and an
``agent-node --policy remote:<the env's url>``; PettingZoo's own API test,
then a random policy evaluated for an episode."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from pettingzoo.test import parallel_api_test
from processes import AGENT_TOKEN, OPERATOR_TOKEN, Proc, free_port, logs, wait_until

import peergrid

PROSUMERS = 3


@pytest.fixture(scope="module")
def env(log_dir: Path) -> Iterator[peergrid.ParallelEnv]:
    e = peergrid.ParallelEnv(prosumers=PROSUMERS, token=AGENT_TOKEN, episode_slots=6, wait_s=60)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    procs: list[Proc] = []
    try:
        market_args = [f"--listen=127.0.0.1:{port}", f"--min-prosumers={PROSUMERS}", "--deadline-ms=10000"]
        procs.append(Proc("market-node:env", market_args, log_dir))
        with peergrid.Market(url, OPERATOR_TOKEN) as market:
            wait_until("the market-node answers Status", market.status, lambda s: True, procs)
            agent = [f"--market={url}", "--name=py-env", f"--prosumers={PROSUMERS}", "--seed=3", "--actor-threads=1"]
            procs.append(Proc("agent-node:env", [*agent, f"--policy=remote:{e.url}"], log_dir))
            wait_until("the agent-node joined", market.status, lambda s: s.prosumers == PROSUMERS, procs)
        yield e
        for p in procs:
            assert p.exited() is None, f"{p.name} exited\n{logs(procs)}"
    finally:
        e.close()
        for p in procs:
            p.kill()


@pytest.mark.filterwarnings("error")  # PettingZoo reports API slips as warnings
def test_the_env_passes_pettingzoos_parallel_api_test(env: peergrid.ParallelEnv) -> None:
    parallel_api_test(env, num_cycles=20)
    assert env.possible_agents == list(range(PROSUMERS)), "agents are the node's prosumer ids"
    assert env.observation_space(0).shape == (len(peergrid.FEATURE_NAMES),)
    assert env.action_space(0).shape == (len(peergrid.ACTION_NAMES),)


def test_bad_actions_raise_naming_the_agent_and_nothing_is_played(env: peergrid.ParallelEnv) -> None:
    obs, infos = env.reset()
    slot = infos[0]["slot"]
    good = {a: np.zeros(3, dtype=np.float32) for a in env.agents}
    cases = [
        ({**good, 99: np.zeros(3)}, "actions[99]: not an agent of this episode"),
        ({**good, 1: np.zeros(2)}, "actions[1]: expected 3 numbers (battery, quantity, price), got shape (2,)"),
        ({**good, 2: [0.0, float("nan"), 0.0]}, "actions[2]: [0.0, nan, 0.0] must be finite"),
        ({**good, 0: "charge"}, "actions[0]: must be 3 numbers"),
    ]
    for actions, message in cases:
        with pytest.raises(ValueError) as e:
            env.step(actions)
        assert message in str(e.value)
    # Nothing was played: the same slot is still open, and a good step plays it.
    obs, rewards, _, _, infos = env.step(good)
    assert infos[0]["slot"] == slot + 1 and infos[0]["feedback"], infos[0]


def test_a_random_policy_plays_an_episode_with_the_households_rewards(env: peergrid.ParallelEnv) -> None:
    obs, infos = env.reset()
    first_slot = infos[0]["slot"]
    assert set(obs) == set(env.agents) == set(range(PROSUMERS))
    rng = np.random.default_rng(0)
    steps, total = 0, dict.fromkeys(env.agents, 0.0)
    while env.agents:
        actions = {a: rng.uniform(-1, 1, size=3).astype(np.float32) for a in env.agents}
        obs, rewards, terminations, truncations, infos = env.step(actions)
        steps += 1
        for a, r in rewards.items():
            assert math.isfinite(r)
            total[a] += r
            assert infos[a]["feedback"] and infos[a]["remote_actions"], infos[a]
            assert infos[a]["slot"] == first_slot + steps, "one market slot per step"
        assert not any(terminations.values())
        for o in obs.values():
            assert o.shape == (len(peergrid.FEATURE_NAMES),) and o.dtype == np.float32 and env.observation_space(0).contains(o)
    assert steps == env.episode_slots and all(truncations.values())
    assert any(r != 0.0 for r in total.values()), f"the households' rewards came back: {total}"
