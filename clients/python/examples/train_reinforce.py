"""Train a shared Gaussian policy with PyTorch against a live peergrid
market (REINFORCE with a learned baseline; not run in CI).

    market-node --listen 127.0.0.1:50051 --min-prosumers 8 --max-hold-ms 600000 …
    agent-node --market http://127.0.0.1:50051 --prosumers 8 --policy remote:http://127.0.0.1:50071 \\
               --remote-policy-timeout-ms 300000
    python examples/train_reinforce.py --port 50071 --prosumers 8 --episodes 200

Every prosumer of the node is an agent sharing one network (as the Rust
trainer's PPO shares one); the action is the network's Gaussian sample
itself, with no rule-based prior (the Rust trainer's default adds one), so
expect it to start well below the rule-based baseline. Between episodes
the update runs while the market holds its slot
for the node (raise the node's --remote-policy-timeout-ms and the market's
--max-hold-ms above an update's duration, or slots fall back to the
rule-based action). Needs ``torch`` (``pip install torch``).
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from torch import nn

import peergrid

OBS, ACT = len(peergrid.FEATURE_NAMES), len(peergrid.ACTION_NAMES)


class Policy(nn.Module):
    def __init__(self, hidden: int = 64) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(OBS, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh())
        self.mean = nn.Linear(hidden, ACT)
        self.value = nn.Linear(hidden, 1)
        self.log_std = nn.Parameter(torch.full((ACT,), -1.0))

    def forward(self, obs: torch.Tensor) -> tuple[torch.distributions.Normal, torch.Tensor]:
        h = self.body(obs)
        return torch.distributions.Normal(self.mean(h), self.log_std.exp()), self.value(h).squeeze(-1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=50071)
    parser.add_argument("--prosumers", type=int, required=True)
    parser.add_argument("--episodes", type=int, default=200)
    parser.add_argument("--episode-slots", type=int, default=24)
    parser.add_argument("--gamma", type=float, default=0.99)
    parser.add_argument("--lr", type=float, default=3e-4)
    args = parser.parse_args()

    torch.manual_seed(0)
    policy = Policy()
    optimiser = torch.optim.Adam(policy.parameters(), lr=args.lr)
    env = peergrid.ParallelEnv(
        prosumers=args.prosumers,
        port=args.port,
        token=peergrid.load_token("PEERGRID_AGENT_TOKEN"),
        episode_slots=args.episode_slots,
        wait_s=600,
    )
    # Raw observations span very different scales: a running normaliser.
    mean, var, count = np.zeros(OBS), np.ones(OBS), 1e-4
    try:
        for episode in range(args.episodes):
            obs, _ = env.reset()
            agents = list(env.agents)
            log_probs, values, rewards = [], [], []
            while env.agents:
                x = np.stack([obs[a] for a in agents]).astype(np.float64)
                batch_mean, batch_var, n = x.mean(0), x.var(0), len(x)
                delta, total = batch_mean - mean, count + n
                mean = mean + delta * n / total
                var = (var * count + batch_var * n + delta**2 * count * n / total) / total
                count = total
                dist, value = policy(torch.as_tensor((x - mean) / np.sqrt(var + 1e-8), dtype=torch.float32))
                action = dist.sample()
                obs, reward, _, _, _ = env.step({a: action[i].numpy() for i, a in enumerate(agents)})
                log_probs.append(dist.log_prob(action).sum(-1))
                values.append(value)
                rewards.append(torch.tensor([reward[a] for a in agents], dtype=torch.float32))
            # Returns-to-go per agent, then the policy-gradient and value losses.
            returns, g = [], torch.zeros(len(agents))
            for r in reversed(rewards):
                g = r + args.gamma * g
                returns.insert(0, g)
            ret, val, lp = torch.stack(returns), torch.stack(values), torch.stack(log_probs)
            advantage = (ret - val).detach()
            advantage = (advantage - advantage.mean()) / (advantage.std() + 1e-8)
            loss = -(lp * advantage).mean() + 0.5 * (ret - val).pow(2).mean()
            optimiser.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(policy.parameters(), 0.5)
            optimiser.step()
            print(f"episode {episode}: return per prosumer {torch.stack(rewards).sum(0).mean():.3f}, loss {loss.item():.3f}")
    finally:
        env.close()


if __name__ == "__main__":
    main()
