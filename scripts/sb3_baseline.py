"""Stable-Baselines3 PPO on a community of battery households, for throughput.

The peer peergrid replaces is a Gymnasium + Stable-Baselines3 prototype; this
script measures what SB3 does on this machine with the same problem size and
PPO settings as `peergrid run`, so the README's speed-up is measured side by
side, never remembered. Run it through `scripts/sb3-baseline.sh`, which
installs SB3 into the project's cache first.

Two shapes of environment (`--env`): `numpy` (the default) is deliberately
favourable to SB3: one `VecEnv` steps every household at once in NumPy (no
per-agent Python loop, no processes); `per-agent` is the prototype's shape,
one Gymnasium env per household stepped by SB3's `DummyVecEnv` (a Python
call per agent and step; the market clears when the last household has
acted). Both play the bundled Fontana data, a battery with SoC and power limits and √η
losses, the time-of-use tariff, a uniform-price P2P auction over every
household's order, and the reward minus the household's bill. The policy
and update match peergrid's defaults: 14 observations, 3 actions, separate
64-64 tanh actor and critic, 168 slots per household per update, 10 epochs
at minibatch 256, learning rate 3e-4, γ 0.99, λ 0.95, clip 0.2.

Prints one table row per community size: agent-steps per second end to end
(rollout and update), and the share of the time spent in the update.
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv
import gymnasium

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "data" / "citylearn2022" / "fontana_hourly.csv"
OBS_DIM, ACT_DIM = 14, 3
CAPACITY_KWH, POWER_KW, EFF = 6.4, 5.0, 0.95


def load_data() -> tuple[np.ndarray, np.ndarray]:
    """Hourly load (kWh) and PV (kWh) per building: arrays [buildings, slots]."""
    load: dict[int, list[float]] = {}
    pv: dict[int, list[float]] = {}
    with DATA.open() as f:
        for row in csv.DictReader(f):
            b = int(row["building"])
            load.setdefault(b, []).append(float(row["load_kwh"]))
            pv.setdefault(b, []).append(float(row["pv_kwh_per_kwp"]) * float(row["pv_kwp"]))
    ids = sorted(load)
    n = min(len(load[b]) for b in ids)
    return np.array([load[b][:n] for b in ids]), np.array([pv[b][:n] for b in ids])


def retail(hour: np.ndarray) -> np.ndarray:
    """Time of use: peak 16-21, shoulder 7-16 and 21-23, off-peak otherwise."""
    peak = (hour >= 16) & (hour < 21)
    shoulder = ((hour >= 7) & (hour < 16)) | ((hour >= 21) & (hour < 23))
    return np.where(peak, 0.45, np.where(shoulder, 0.28, 0.18))


class Community(VecEnv):
    """`n` households stepping together; each is one SB3 "environment"."""

    def __init__(self, n: int, seed: int) -> None:
        self.n = n
        load, pv = load_data()
        rng = np.random.default_rng(seed)
        pick = rng.integers(0, load.shape[0], n)
        scale = rng.uniform(0.8, 1.2, (n, 1))
        self.load, self.pv = load[pick] * scale, pv[pick] * scale
        self.slots = self.load.shape[1]
        self.t = 0
        self.soc = np.full(n, 0.5)
        self.last_price = 0.115
        space = spaces.Box(-np.inf, np.inf, (OBS_DIM,), np.float32)
        action = spaces.Box(-1.0, 1.0, (ACT_DIM,), np.float32)
        super().__init__(n, space, action)
        self.actions = np.zeros((n, ACT_DIM), np.float32)

    def observe(self) -> np.ndarray:
        t, n = self.t, self.n
        hour = t % 24
        angle = 2 * np.pi * hour / 24
        nxt = (t + 1) % self.slots
        r = retail(np.array(hour))
        return np.stack(
            [
                self.load[:, t],
                self.pv[:, t],
                self.soc,
                np.full(n, CAPACITY_KWH),
                np.ones(n),
                np.full(n, r),
                np.full(n, 0.05),
                np.full(n, np.sin(angle)),
                np.full(n, np.cos(angle)),
                np.full(n, self.last_price),
                self.load[:, nxt] - self.pv[:, nxt],
                np.full(n, retail(np.array((hour + 1) % 24))),
                np.full(n, float((t // 24) % 7 >= 5)),
                np.full(n, 0.4),
            ],
            axis=1,
        ).astype(np.float32)

    def reset(self) -> np.ndarray:
        self.t, self.soc[:] = 0, 0.5
        return self.observe()

    def step_async(self, actions: np.ndarray) -> None:
        self.actions = np.clip(actions, -1.0, 1.0)

    def step_wait(self):  # noqa: ANN201 (SB3's VecEnv signature)
        a, t = self.actions, self.t
        r, feed_in = float(retail(np.array(t % 24))), 0.05
        # Battery: set-point within power and SoC limits, √η each way.
        stored = self.soc * CAPACITY_KWH
        kw = a[:, 0] * POWER_KW
        room = (0.95 * CAPACITY_KWH - stored) / np.sqrt(EFF)
        avail = (stored - 0.05 * CAPACITY_KWH) * np.sqrt(EFF)
        bus = np.clip(kw, -avail, room)
        stored += np.where(bus > 0, bus * np.sqrt(EFF), bus / np.sqrt(EFF))
        self.soc = stored / CAPACITY_KWH
        net = self.load[:, t] - self.pv[:, t] + bus
        # Orders: at most the position, priced between feed-in and retail.
        qty = np.abs(net) * (a[:, 1] + 1) / 2
        price = feed_in + (r - feed_in) * (a[:, 2] + 1) / 2
        buy, sell = net > 0, net < 0
        bids, asks = np.sort(price[buy])[::-1], np.sort(price[sell])
        bq, aq = qty[buy][np.argsort(-price[buy])], qty[sell][np.argsort(price[sell])]
        cb, ca = np.cumsum(bq), np.cumsum(aq)
        k = int(np.sum(bids[: min(len(bids), len(asks))] >= asks[: min(len(bids), len(asks))]))
        matched = min(cb[k - 1], ca[k - 1]) if k > 0 else 0.0
        clearing = (bids[k - 1] + asks[k - 1]) / 2 if k > 0 else None
        if clearing is not None:
            self.last_price = clearing
        share_b = np.where(buy, qty, 0) / max(cb[-1] if len(cb) else 1.0, 1e-9)
        share_s = np.where(sell, qty, 0) / max(ca[-1] if len(ca) else 1.0, 1e-9)
        p2p_in, p2p_out = matched * share_b, matched * share_s
        residual = net - p2p_in + p2p_out
        bill = np.maximum(residual, 0) * r - np.maximum(-residual, 0) * feed_in
        bill += (p2p_in - p2p_out) * (clearing or 0.0)
        rewards = (-bill).astype(np.float32)
        self.t = (t + 1) % self.slots
        done = self.t % 168 == 0
        dones = np.full(self.n, done)
        infos = [{} for _ in range(self.n)]
        obs = self.observe()
        if done:
            for i in range(self.n):
                infos[i]["terminal_observation"] = obs[i]
                infos[i]["TimeLimit.truncated"] = True
        return obs, rewards, dones, infos

    def close(self) -> None:
        pass

    def get_attr(self, attr_name, indices=None):  # noqa: ANN001, ANN201
        return [getattr(self, attr_name)] * self.n

    def set_attr(self, attr_name, value, indices=None) -> None:  # noqa: ANN001
        setattr(self, attr_name, value)

    def env_method(self, method_name, *args, indices=None, **kwargs):  # noqa: ANN001, ANN201
        return [getattr(self, method_name)(*args, **kwargs)] * self.n

    def env_is_wrapped(self, wrapper_class, indices=None):  # noqa: ANN001, ANN201
        return [False] * self.n


class Household(gymnasium.Env):
    """One household of a shared `Community`, as its own Gymnasium env: its
    step stores the action; the last household's step steps the community."""

    def __init__(self, community: Community, i: int) -> None:
        self.community, self.i = community, i
        self.observation_space = community.observation_space
        self.action_space = community.action_space
        self._out = None

    def reset(self, *, seed=None, options=None):  # noqa: ANN001, ANN201
        if self.i == 0:
            self.community.obs = self.community.reset()
        return self.community.obs[self.i], {}

    def step(self, action):  # noqa: ANN001, ANN201
        c = self.community
        c.actions[self.i] = np.clip(action, -1.0, 1.0)
        if self.i == c.n - 1:
            c.obs, c.rewards, c.dones, _ = c.step_wait()
        return c.pending(self.i)


def per_agent(n: int, seed: int) -> DummyVecEnv:
    community = Community(n, seed)
    households = [Household(community, i) for i in range(n)]

    def pending(i: int):  # noqa: ANN202
        # DummyVecEnv steps the envs in order, so the community has stepped
        # only once the last one acted: earlier households read the result
        # of the previous step, a one-step lag that costs the same work.
        obs = getattr(community, "obs", community.observe())
        rewards = getattr(community, "rewards", np.zeros(n, np.float32))
        truncated = bool(getattr(community, "dones", np.zeros(n, bool))[i])
        return obs[i], float(rewards[i]), False, truncated, {}

    community.pending = pending
    return DummyVecEnv([lambda h=h: h for h in households])


class UpdateTimer(BaseCallback):
    """Wall time outside the rollouts (the PPO update)."""

    def __init__(self) -> None:
        super().__init__()
        self.rollout_s = 0.0
        self._started = 0.0

    def _on_rollout_start(self) -> None:
        self._started = time.perf_counter()

    def _on_rollout_end(self) -> None:
        self.rollout_s += time.perf_counter() - self._started

    def _on_step(self) -> bool:
        return True


def measure(n: int, updates: int, seed: int, shape: str) -> tuple[float, float]:
    env = Community(n, seed) if shape == "numpy" else per_agent(n, seed)
    model = PPO(
        "MlpPolicy",
        env,
        n_steps=168,
        batch_size=256,
        n_epochs=10,
        learning_rate=3e-4,
        gamma=0.99,
        gae_lambda=0.95,
        clip_range=0.2,
        ent_coef=0.0,
        vf_coef=0.5,
        max_grad_norm=0.5,
        policy_kwargs={"net_arch": {"pi": [64, 64], "vf": [64, 64]}, "activation_fn": torch.nn.Tanh},
        seed=seed,
        device="cpu",
        verbose=0,
    )
    # One update first: imports, allocations and the first graph are not throughput.
    model.learn(168 * n)
    timer = UpdateTimer()
    started = time.perf_counter()
    model.learn(168 * n * updates, callback=timer, reset_num_timesteps=False)
    wall = time.perf_counter() - started
    return 168 * n * updates / wall, 1.0 - timer.rollout_s / wall


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--agents", type=int, nargs="+", default=[4, 16, 64])
    p.add_argument("--updates", type=int, default=10, help="PPO updates timed per size")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--threads", type=int, default=1, help="torch threads (peergrid's learner uses 1)")
    p.add_argument("--env", choices=["numpy", "per-agent"], default="numpy", help="environment shape (see above)")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    print(
        f"stable-baselines3 PPO, torch {torch.__version__}, {a.threads} thread(s), "
        f"{a.updates} updates of 168 slots, {a.env} environment"
    )
    print("| agents | agent-steps/s | update share |")
    print("| -----: | ------------: | -----------: |")
    for n in a.agents:
        rate, update = measure(n, a.updates, a.seed, a.env)
        print(f"| {n} | {rate:,.0f} | {100 * update:.0f} % |", flush=True)


if __name__ == "__main__":
    main()
