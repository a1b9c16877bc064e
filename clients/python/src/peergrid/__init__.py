"""peergrid: a Python client of the peergrid market-node and trainer.

    from peergrid import Market

    with Market("http://127.0.0.1:50051", token) as market:
        market.step(3)
        print(market.status().kpis.community_cost)

:class:`Market` operates a running market (status, watch, pause, resume,
step, mode, scenario injection), :class:`Trainer` reads the trainer's
status, :func:`serve_policy` serves a Python policy to agent-nodes run with
``--policy remote:URL`` (:mod:`peergrid.remote_policy`), and
:class:`ParallelEnv` (:mod:`peergrid.parallel_env`, needs the ``env`` extra:
``pettingzoo`` and ``gymnasium``) makes one node's prosumers a PettingZoo
environment; results are the
dataclasses of :mod:`peergrid.results`, failures raise
:class:`PeergridError` subclasses (:mod:`peergrid.errors`). The gRPC
modules generated from the repository's ``proto/`` at install time live
beside this one, named as the proto packages: ``peergrid.market.v1``,
``peergrid.control.v1``, ``peergrid.learner.v1``, ``peergrid.common.v1``,
``peergrid.policy.v1``.
"""

from peergrid.client import DEFAULT_TIMEOUT_S, Market, Trainer, Watch
from peergrid.connection import MIN_TOKEN_LEN, load_token
from peergrid.errors import (
    ConfigError,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    PeergridError,
    PermissionDenied,
    ResourceExhausted,
    RpcError,
    Unauthenticated,
    Unavailable,
)
from peergrid.remote_policy import (
    ACTION_NAMES,
    FEATURE_NAMES,
    Feedback,
    PolicyServer,
    PolicyUnavailable,
    flatten_actions,
    serve_policy,
)
from peergrid.results import ControlReply, Kpis, MarketStatus, Notice, SlotSummary, TrainerStatus



def __getattr__(name: str) -> object:
    # ParallelEnv needs pettingzoo and gymnasium (the ``env`` extra): imported
    # on first use, so the rest of the package works without them.
    if name == "ParallelEnv":
        from peergrid.parallel_env import ParallelEnv

        return ParallelEnv
    raise AttributeError(f"module 'peergrid' has no attribute {name!r}")


__all__ = [
    "ACTION_NAMES",
    "DEFAULT_TIMEOUT_S",
    "FEATURE_NAMES",
    "MIN_TOKEN_LEN",
    "ConfigError",
    "ControlReply",
    "DeadlineExceeded",
    "FailedPrecondition",
    "Feedback",
    "InvalidArgument",
    "Kpis",
    "Market",
    "MarketStatus",
    "Notice",
    "PeergridError",
    "ParallelEnv",
    "PermissionDenied",
    "PolicyServer",
    "PolicyUnavailable",
    "ResourceExhausted",
    "RpcError",
    "SlotSummary",
    "Trainer",
    "TrainerStatus",
    "Unauthenticated",
    "Unavailable",
    "Watch",
    "flatten_actions",
    "load_token",
    "serve_policy",
]
