"""A PettingZoo ``ParallelEnv`` over a live peergrid market.

    import peergrid

    env = peergrid.ParallelEnv(prosumers=4, port=50071, token=peergrid.load_token("PEERGRID_AGENT_TOKEN"))
    # agent-node --market … --prosumers 4 --policy remote:http://127.0.0.1:50071
    obs, infos = env.reset()
    while env.agents:
        obs, rewards, terminations, truncations, infos = env.step(
            {a: env.action_space(a).sample() for a in env.agents})
    env.close()

The environment is a :class:`~peergrid.PolicyServer`: the agent-node asks it
for every slot's actions, and each ``Act`` call waits until :meth:`step`
supplies them (the node holds the market's slot meanwhile, so the market
runs at the pace of the learner, up to the node's
``--remote-policy-timeout-ms`` per slot). ``step`` then waits for the next
slot's call, which carries the outcome of the slot just played: its
observations and rewards are what ``step`` returns.

- **Agents** are the node's prosumer ids (ints), known from the node's first
  call; ``possible_agents`` is empty until the first :meth:`reset`.
- **Spaces**: observations ``Box(-1e6, 1e6, (22,), float32)``, features
  :data:`peergrid.FEATURE_NAMES` (raw, unnormalised); actions
  ``Box(-1, 1, (3,), float32)``: battery, quantity, price
  (:data:`peergrid.ACTION_NAMES`), played through the node's safety filter.
- **Episodes**: the households never reset (a battery carries over), so an
  episode is ``episode_slots`` consecutive slots (default 24, a day of hourly
  slots) ending in truncation; :meth:`reset` starts the next one from the
  market's next slot. ``seed`` is accepted and ignored: the market and the
  node are seeded by their own ``--seed``.
- **Rewards** are the households' (minus the weighted bill, degradation,
  CO2, overload, demand-charge share, EV shortfall). A slot the node played with its rule-based
  fallback (the env was too slow) gives ``infos[id]["remote_actions"] ==
  False``; one whose outcome did not arrive gives reward 0 and
  ``infos[id]["feedback"] == False``.
"""

from __future__ import annotations

import functools
import os
import threading
import time
from dataclasses import dataclass
from typing import Any

import gymnasium
import numpy as np
from pettingzoo import ParallelEnv as _PettingZooParallelEnv

from peergrid.errors import ConfigError
from peergrid.remote_policy import ACT_DIM, MAX_ABS_ACTION, OBS_DIM, Feedback, PolicyServer, PolicyUnavailable

#: Bound of every observation feature (the node's and the learner's bound).
MAX_ABS_OBSERVATION = 1e6


@dataclass
class _Request:
    """One ``Act`` call waiting for its actions."""

    slot: int
    ids: list[int]
    observations: np.ndarray
    feedback: Feedback | None
    actions: np.ndarray | None = None
    answered: bool = False


class _Exchange:
    """Hands each ``Act`` call (a server thread) to the env (the user's
    thread) and the env's actions back."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._request: _Request | None = None
        self._feedback: Feedback | None = None
        self._closed = False

    # --- the server's side -------------------------------------------------

    def observe(self, feedback: Feedback) -> None:
        with self._cond:
            self._feedback = feedback

    def act(self, slot: int, ids: list[int], observations: Any) -> np.ndarray:
        with self._cond:
            if self._closed:
                raise PolicyUnavailable("the environment is closed")
            request = _Request(slot, list(ids), np.asarray(observations, dtype=np.float32), self._feedback)
            self._feedback = None
            self._request = request
            self._cond.notify_all()
            self._cond.wait_for(lambda: request.answered or self._closed)
            if request.actions is None:
                raise PolicyUnavailable("the environment was closed before it acted")
            return request.actions

    # --- the env's side ----------------------------------------------------

    def next_request(self, after: _Request | None, timeout_s: float) -> _Request:
        """The first unanswered request other than ``after``, waiting up to ``timeout_s``."""
        with self._cond:
            ok = self._cond.wait_for(
                lambda: self._request is not None and self._request is not after and not self._request.answered,
                timeout_s,
            )
            if not ok or self._request is None:
                raise TimeoutError(
                    f"no Act call from an agent-node within {timeout_s} s: is a node running with "
                    "--policy remote:<this env's url>, and is its market clearing?"
                )
            return self._request

    def answer(self, request: _Request, actions: np.ndarray) -> None:
        with self._cond:
            request.actions = actions
            request.answered = True
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()


class ParallelEnv(_PettingZooParallelEnv):  # type: ignore[misc]
    """The prosumers of one agent-node as a PettingZoo parallel environment.

    Args:
        prosumers: how many prosumers the node hosts (its ``--prosumers``);
            a node with another count is refused.
        port, host, token, tls_cert, tls_key: where and how to serve the
            node's calls (as for :class:`~peergrid.PolicyServer`).
        episode_slots: slots per episode (truncation after that many steps).
        wait_s: longest wait, in :meth:`reset` and :meth:`step`, for the
            node's next call (raises ``TimeoutError`` naming it).
    """

    metadata = {"name": "peergrid_v0", "render_modes": []}

    def __init__(
        self,
        *,
        prosumers: int,
        port: int = 0,
        host: str = "127.0.0.1",
        token: str | None = None,
        tls_cert: str | os.PathLike[str] | None = None,
        tls_key: str | os.PathLike[str] | None = None,
        episode_slots: int = 24,
        wait_s: float = 120.0,
    ) -> None:
        if prosumers < 1:
            raise ConfigError(f"prosumers: must be at least 1, got {prosumers}")
        if episode_slots < 1:
            raise ConfigError(f"episode_slots: must be at least 1, got {episode_slots}")
        self.prosumers = prosumers
        self.episode_slots = episode_slots
        self.wait_s = wait_s
        self.possible_agents: list[int] = []
        self.agents: list[int] = []
        self._exchange = _Exchange()
        self._request: _Request | None = None
        self._steps = 0
        self._server = PolicyServer(
            self._exchange.act,
            observe=self._exchange.observe,
            port=port,
            host=host,
            token=token,
            tls_cert=tls_cert,
            tls_key=tls_key,
            numpy=True,
        ).start()

    @property
    def url(self) -> str:
        """What to pass the node: ``--policy remote:<url>``."""
        return self._server.url

    @functools.lru_cache(maxsize=None)  # noqa: B019 (one space object per agent, as PettingZoo asks)
    def observation_space(self, agent: int) -> gymnasium.spaces.Box:
        return gymnasium.spaces.Box(-MAX_ABS_OBSERVATION, MAX_ABS_OBSERVATION, shape=(OBS_DIM,), dtype=np.float32)

    @functools.lru_cache(maxsize=None)  # noqa: B019
    def action_space(self, agent: int) -> gymnasium.spaces.Box:
        return gymnasium.spaces.Box(-1.0, 1.0, shape=(ACT_DIM,), dtype=np.float32)

    def _take(self, after: _Request | None) -> _Request:
        request = self._exchange.next_request(after, self.wait_s)
        if len(request.ids) != self.prosumers:
            raise ConfigError(f"prosumers: the node hosts {len(request.ids)} prosumers, this env was made for {self.prosumers}")
        return request

    @staticmethod
    def _observations(request: _Request) -> dict[int, np.ndarray]:
        return {pid: request.observations[i].copy() for i, pid in enumerate(request.ids)}

    def reset(self, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[dict[int, Any], dict[int, Any]]:
        """Starts an episode at the node's next unanswered slot (waiting for it)."""
        request = self._request if self._request is not None and not self._request.answered else self._take(None)
        self._request = request
        self._steps = 0
        self.agents = list(request.ids)
        if not self.possible_agents:
            self.possible_agents = list(request.ids)
        return self._observations(request), {pid: {"slot": request.slot} for pid in self.agents}

    def step(
        self, actions: dict[int, Any]
    ) -> tuple[dict[int, Any], dict[int, float], dict[int, bool], dict[int, bool], dict[int, Any]]:
        """Plays ``actions`` (one per agent; a missing agent idles and offers
        nothing) and returns the next slot's observations with this slot's
        rewards. Actions for an unknown agent, of another shape than 3
        numbers, or not finite raise ``ValueError`` naming the agent; nothing
        is played then, and the step can be retried."""
        request = self._request
        if request is None or request.answered or not self.agents:
            raise RuntimeError("step() needs an episode in progress: call reset() first")
        played = np.zeros((len(request.ids), ACT_DIM), dtype=np.float32)
        played[:, 1] = -1.0  # offer nothing unless told
        index = {pid: i for i, pid in enumerate(request.ids)}
        for pid, action in actions.items():
            if pid not in index or pid not in self.agents:
                raise ValueError(f"actions[{pid!r}]: not an agent of this episode (agents: {self.agents})")
            try:
                a = np.asarray(action, dtype=np.float32)
            except (TypeError, ValueError):
                raise ValueError(f"actions[{pid}]: must be {ACT_DIM} numbers, got {action!r}") from None
            if a.size != ACT_DIM:
                raise ValueError(f"actions[{pid}]: expected {ACT_DIM} numbers (battery, quantity, price), got shape {a.shape}")
            if not (np.all(np.isfinite(a)) and np.all(np.abs(a) <= MAX_ABS_ACTION)):
                raise ValueError(f"actions[{pid}]: {a.reshape(-1).tolist()} must be finite and within ±{MAX_ABS_ACTION:g}")
            played[index[pid]] = a.reshape(ACT_DIM)
        self._exchange.answer(request, played)
        started = time.monotonic()
        following = self._take(request)
        self._request = following
        self._steps += 1
        feedback = following.feedback if following.feedback is not None and following.feedback.slot == request.slot else None
        rewards = dict.fromkeys(self.agents, 0.0)
        infos: dict[int, Any] = {pid: {"slot": following.slot, "feedback": feedback is not None} for pid in self.agents}
        if feedback is not None:
            for i, pid in enumerate(feedback.prosumer_ids):
                if pid in rewards:
                    rewards[pid] = float(feedback.rewards[i])
                    infos[pid].update(
                        cost=feedback.costs[i],
                        grid_import_kwh=feedback.grid_import_kwh[i],
                        end_of_day=feedback.dones[i],
                        settled_by_market=feedback.settled_by_market[i],
                        remote_actions=feedback.remote_actions,
                    )
        for info in infos.values():
            info["wait_s"] = time.monotonic() - started
        observations = self._observations(following)
        truncated = self._steps >= self.episode_slots or following.ids != request.ids
        terminations = dict.fromkeys(self.agents, False)
        truncations = dict.fromkeys(self.agents, truncated)
        observations = {pid: observations.get(pid, request.observations[i]) for i, pid in enumerate(request.ids)}
        if truncated:
            self.agents = []
        return observations, rewards, terminations, truncations, infos

    def close(self) -> None:
        """Stops serving; the node falls back to its rule-based action."""
        self._exchange.close()
        self._server.stop()
