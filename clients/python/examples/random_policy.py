"""Evaluate a random policy on a live peergrid market (run in CI by
``tests/test_examples.py``).

    agent-node --market http://127.0.0.1:50051 --prosumers 4 --policy remote:http://127.0.0.1:50071
    python examples/random_policy.py --port 50071 --prosumers 4 --episodes 2

The token is the agent token (``PEERGRID_AGENT_TOKEN`` or ``…_FILE``), the
one the agent-node sends. Prints each episode's mean return per prosumer
and how many slots the node played with these actions.
"""

from __future__ import annotations

import argparse

import numpy as np

import peergrid


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=50071, help="where the agent-node's --policy remote: URL points")
    parser.add_argument("--prosumers", type=int, required=True, help="the agent-node's --prosumers")
    parser.add_argument("--episodes", type=int, default=1)
    parser.add_argument("--episode-slots", type=int, default=24)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    rng = np.random.default_rng(args.seed)
    token = peergrid.load_token("PEERGRID_AGENT_TOKEN")
    env = peergrid.ParallelEnv(prosumers=args.prosumers, port=args.port, token=token, episode_slots=args.episode_slots)
    try:
        for episode in range(args.episodes):
            obs, infos = env.reset()
            returns = dict.fromkeys(env.agents, 0.0)
            remote_slots = 0
            while env.agents:
                actions = {a: rng.uniform(-1.0, 1.0, size=len(peergrid.ACTION_NAMES)) for a in env.agents}
                obs, rewards, terminations, truncations, infos = env.step(actions)
                for a, r in rewards.items():
                    returns[a] += r
                remote_slots += all(i.get("remote_actions", False) for i in infos.values())
            mean = sum(returns.values()) / len(returns)
            print(f"episode {episode}: mean return {mean:.3f} over {len(returns)} prosumers, "
                  f"{remote_slots}/{args.episode_slots} slots played with these actions")
    finally:
        env.close()


if __name__ == "__main__":
    main()
