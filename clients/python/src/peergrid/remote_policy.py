"""Serve an external policy: a Python callable decides the actions of every
prosumer an agent-node hosts (``agent-node --policy remote:URL``).

    import peergrid

    def act(slot, ids, observations):            # observations: (P, 14) float32 array
        return [[1.0, -1.0, 0.0] for _ in ids]    # charge fully, offer nothing P2P

    server = peergrid.serve_policy(act, port=50071, token=peergrid.load_token("PEERGRID_AGENT_TOKEN"))
    server.wait()                                 # agent-node --policy remote:http://127.0.0.1:50071

The node keeps the households (observation, safety filter, battery,
settlement); once per slot it sends every hosted prosumer's observation in
one ``Act`` call (``proto/peergrid/policy/v1/policy.proto``) and plays the
answer. Observations have the 22 features of :data:`FEATURE_NAMES`;
actions are 3 numbers per prosumer (:data:`ACTION_NAMES`), raw actions
before the node's safety filter, which clamps them to ``[-1, 1]`` and to
what each household can physically do.

Feedback: the same call carries the outcome of the slot the node settled
before (rewards, costs, grid import, day ends) — pass ``observe`` to get it
as a :class:`Feedback` before ``act`` is called for the next slot.

Time: the node asks the market to hold the slot while ``act`` runs, so a
slow policy (a learner updating its networks) slows the market down; a call
that outlasts the node's ``--remote-policy-timeout-ms`` (30 s by default),
fails, or answers wrongly is played with the rule-based action instead and
counted by the node. ``act`` raising an exception or returning the wrong
shape or a non-finite number is logged here (logger ``peergrid.policy``,
naming the field) and answered with ``INTERNAL``: the node falls back for
that slot and calls again the next one.
"""

from __future__ import annotations

import hmac
import logging
import math
import os
import threading
from collections.abc import Callable, Sequence
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from peergrid.connection import MAX_MESSAGE_BYTES, check_token
from peergrid.errors import ConfigError
from peergrid.policy.v1 import policy_pb2, policy_pb2_grpc

#: The observation features, in order (``peergrid_core::observation::FEATURE_NAMES``).
FEATURE_NAMES: tuple[str, ...] = (
    "load_kwh",
    "pv_kwh",
    "soc",
    "battery_capacity_kwh",
    "battery_available",
    "retail_per_kwh",
    "feed_in_per_kwh",
    "time_of_day_sin",
    "time_of_day_cos",
    "last_clearing_price_per_kwh",
    "forecast_next_net_load_kwh",
    "next_retail_per_kwh",
    "weekend",
    "co2_kg_per_kwh",
    "forecast_mean_load_next_6h_kwh",
    "forecast_mean_pv_next_6h_kwh",
    "forecast_mean_net_load_next_24h_kwh",
    "retail_mean_next_24h_per_kwh",
    "retail_max_next_24h_per_kwh",
    "days_until_max_retail",
    "last_p2p_kwh_per_household",
    "last_community_net_kwh_per_household",
)
#: The action components, in order: battery set-point (-1 discharge … +1
#: charge as fast as allowed), share of the position offered P2P (-1 none …
#: +1 all), limit price (-1 feed-in … +1 retail).
ACTION_NAMES: tuple[str, ...] = ("battery", "quantity", "price")
OBS_DIM = len(FEATURE_NAMES)
ACT_DIM = len(ACTION_NAMES)
#: Largest accepted |action component| (the node refuses larger ones).
MAX_ABS_ACTION = 1e3

log = logging.getLogger("peergrid.policy")


class PolicyUnavailable(Exception):
    """Raise from ``act`` to tell the node this policy cannot answer now
    (it is shutting down, say): the call is answered ``UNAVAILABLE`` and
    logged at INFO, and the node plays its rule-based action and backs off
    before calling again — where any other exception is an ``INTERNAL``
    error logged as one."""


@dataclass(frozen=True)
class Feedback:
    """The outcome of one settled slot for the prosumers of one node.

    Per-prosumer tuples are in the order of :attr:`prosumer_ids`.
    """

    #: The agent-node that played the slot.
    node_name: str
    #: The slot settled.
    slot: int
    prosumer_ids: tuple[int, ...]
    #: The slot's reward (minus the weighted bill, degradation, CO2, overload,
    #: demand-charge share, EV shortfall).
    rewards: tuple[float, ...]
    #: Energy cost of the slot (grid and P2P net of revenue, degradation,
    #: overload, demand-charge share).
    costs: tuple[float, ...]
    grid_import_kwh: tuple[float, ...]
    #: True where the slot was the last of a day.
    dones: tuple[bool, ...]
    #: False where the prosumer settled locally with the grid (its report missed the market).
    settled_by_market: tuple[bool, ...]
    #: Whether the prosumers played this policy's actions that slot (False:
    #: the node fell back to the rule-based action).
    remote_actions: bool


#: ``act(slot, prosumer_ids, observations) -> actions``: ``observations`` is a
#: ``(P, 22)`` float32 numpy array (a list of P lists with ``numpy=False``);
#: ``actions`` anything shaped ``(P, 3)``: a numpy array or P sequences of 3 numbers.
ActFn = Callable[[int, Sequence[int], Any], Any]
#: ``observe(feedback)``, called before ``act`` when a call carries feedback.
ObserveFn = Callable[[Feedback], None]


def flatten_actions(actions: Any, prosumers: int) -> list[float]:
    """``actions`` (shaped ``(prosumers, 3)``) as the flat prosumer-major
    list the wire carries; raises :class:`ValueError` naming the first bad
    field (``actions[2][1]: nan is not finite``)."""
    if hasattr(actions, "tolist"):  # numpy
        actions = actions.tolist()
    try:
        rows = list(actions)
    except TypeError:
        raise ValueError(f"actions: must be {prosumers} rows of {ACT_DIM} numbers, got {type(actions).__name__}") from None
    if len(rows) != prosumers:
        raise ValueError(f"actions: expected {prosumers} rows (one per prosumer) of {ACT_DIM} numbers, got {len(rows)} rows")
    flat: list[float] = []
    for i, row in enumerate(rows):
        try:
            values = list(row)
        except TypeError:
            raise ValueError(f"actions[{i}]: must be {ACT_DIM} numbers, got {type(row).__name__}") from None
        if len(values) != ACT_DIM:
            raise ValueError(f"actions[{i}]: expected {ACT_DIM} numbers ({', '.join(ACTION_NAMES)}), got {len(values)}")
        for j, v in enumerate(values):
            try:
                x = float(v)
            except (TypeError, ValueError):
                raise ValueError(f"actions[{i}][{j}]: must be a number, got {v!r}") from None
            if not math.isfinite(x):
                raise ValueError(f"actions[{i}][{j}]: {x} is not finite")
            if abs(x) > MAX_ABS_ACTION:
                raise ValueError(f"actions[{i}][{j}]: {x} is outside [-{MAX_ABS_ACTION:g}, {MAX_ABS_ACTION:g}]")
            flat.append(x)
    return flat


def _feedback(node_name: str, f: Any) -> Feedback:
    return Feedback(
        node_name=node_name,
        slot=f.slot,
        prosumer_ids=tuple(f.prosumer_ids),
        rewards=tuple(f.rewards),
        costs=tuple(f.costs),
        grid_import_kwh=tuple(f.grid_import_kwh),
        dones=tuple(f.dones),
        settled_by_market=tuple(f.settled_by_market),
        remote_actions=f.remote_actions,
    )


def _has_numpy() -> bool:
    try:
        import numpy  # noqa: F401
    except ImportError:
        return False
    return True


class _Servicer(policy_pb2_grpc.PolicyServiceServicer):
    """The ``PolicyService`` over the user's callables."""

    def __init__(self, act: ActFn, observe: ObserveFn | None, token: str | None, use_numpy: bool) -> None:
        self._act = act
        self._observe = observe
        self._expected = None if token is None else f"Bearer {token}".encode()
        self._numpy = use_numpy

    def _authorised(self, context: grpc.ServicerContext) -> bool:
        if self._expected is None:
            return True
        given = dict(context.invocation_metadata()).get("authorization", "")
        return hmac.compare_digest(str(given).encode(), self._expected)

    def Act(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802 (the gRPC method name)
        if not self._authorised(context):
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "a valid bearer token is required")
        ids = list(request.prosumer_ids)
        n = len(ids)
        if len(request.observations) != n * OBS_DIM:
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"invalid observations: expected {n * OBS_DIM} values (prosumers × {OBS_DIM}), got {len(request.observations)}",
            )
        try:
            if self._observe is not None and request.HasField("previous"):
                self._observe(_feedback(request.node_name, request.previous))
            if self._numpy:
                import numpy as np

                observations: Any = np.asarray(request.observations, dtype=np.float32).reshape(n, OBS_DIM)
            else:
                flat = list(request.observations)
                observations = [flat[i * OBS_DIM : (i + 1) * OBS_DIM] for i in range(n)]
            actions = flatten_actions(self._act(request.slot, ids, observations), n)
        except PolicyUnavailable as e:
            log.info("policy for node %s, slot %d: unavailable: %s", request.node_name, request.slot, e)
            context.abort(grpc.StatusCode.UNAVAILABLE, f"the policy is unavailable: {e}")
        except Exception as e:  # the user's code: report it, never crash the server
            log.error("policy for node %s, slot %d: %s: %s", request.node_name, request.slot, type(e).__name__, e)
            context.abort(grpc.StatusCode.INTERNAL, f"the policy failed: {type(e).__name__}: {e}")
        return policy_pb2.ActResponse(slot=request.slot, prosumer_ids=ids, actions=actions)


class PolicyServer:
    """A gRPC ``PolicyService`` serving ``act`` (and ``observe``) to agent-nodes.

    Args:
        act: the policy, ``act(slot, prosumer_ids, observations) -> actions``
            (see :data:`ActFn`).
        observe: called with each call's :class:`Feedback` (the previous
            slot's outcome) before ``act``; optional.
        port: TCP port to listen on (0: any free port, see :attr:`port`).
        host: address to listen on (default loopback only).
        token: the bearer token callers must send — the agent-nodes' agent
            token (``PEERGRID_AGENT_TOKEN``); ``None`` accepts any caller (only
            for nodes run with ``--insecure-no-auth``).
        tls_cert, tls_key: PEM files to serve TLS with (both or neither);
            the nodes then need ``--remote-policy-tls-ca``.
        numpy: pass observations as a numpy array (default: when numpy is installed).
        max_workers: calls served at once. With the default 1, ``act`` is
            never called concurrently (one node calls once per slot; several
            nodes sharing a server wait for each other).

    Start it with :meth:`start` (or use :func:`serve_policy`); it is a
    context manager that stops on exit.
    """

    def __init__(
        self,
        act: ActFn,
        *,
        observe: ObserveFn | None = None,
        port: int = 0,
        host: str = "127.0.0.1",
        token: str | None = None,
        tls_cert: str | os.PathLike[str] | None = None,
        tls_key: str | os.PathLike[str] | None = None,
        numpy: bool | None = None,
        max_workers: int = 1,
    ) -> None:
        if not callable(act):
            raise ConfigError(f"act: must be callable, got {type(act).__name__}")
        if observe is not None and not callable(observe):
            raise ConfigError(f"observe: must be callable, got {type(observe).__name__}")
        if not 0 <= port <= 65535:
            raise ConfigError(f"port: must lie in 0..=65535, got {port}")
        if max_workers < 1:
            raise ConfigError(f"max_workers: must be at least 1, got {max_workers}")
        if (tls_cert is None) != (tls_key is None):
            raise ConfigError("tls_cert, tls_key: give both or neither")
        if token is not None:
            check_token(token)
        use_numpy = _has_numpy() if numpy is None else numpy
        if use_numpy and not _has_numpy():
            raise ConfigError("numpy: numpy=True but numpy is not installed")
        self._host = host
        self._requested_port = port
        self._credentials = None
        if tls_cert is not None and tls_key is not None:
            try:
                pair = (Path(tls_key).read_bytes(), Path(tls_cert).read_bytes())
            except OSError as e:
                raise ConfigError(f"tls_cert/tls_key: cannot read {e.filename}: {e.strerror}") from None
            self._credentials = grpc.ssl_server_credentials([pair])
        self._servicer = _Servicer(act, observe, token, use_numpy)
        self._max_workers = max_workers
        self._server: grpc.Server | None = None
        self._port = 0
        self._stopped = threading.Event()

    def start(self) -> PolicyServer:
        """Binds the port and starts serving (in background threads); returns self."""
        if self._server is not None:
            raise ConfigError("start: the server is already started")
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=self._max_workers, thread_name_prefix="peergrid-policy"),
            options=[
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                # Rebinding a port a stopped server just left must work.
                ("grpc.so_reuseport", 0),
            ],
        )
        policy_pb2_grpc.add_PolicyServiceServicer_to_server(self._servicer, server)
        address = f"{self._host}:{self._requested_port}"
        try:
            if self._credentials is None:
                port = server.add_insecure_port(address)
            else:
                port = server.add_secure_port(address, self._credentials)
        except RuntimeError as e:
            raise ConfigError(f"port: cannot listen on {address}: {e}") from None
        if port == 0:
            raise ConfigError(f"port: cannot listen on {address}")
        server.start()
        self._server, self._port = server, port
        self._stopped.clear()
        log.info("serving the policy on %s", self.url)
        return self

    @property
    def port(self) -> int:
        """The bound port (0 before :meth:`start`)."""
        return self._port

    @property
    def url(self) -> str:
        """What to pass the node: ``--policy remote:<url>``."""
        scheme = "http" if self._credentials is None else "https"
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"{scheme}://{host}:{self._port}"

    def stop(self, grace: float | None = None) -> None:
        """Stops serving: calls in progress get ``grace`` seconds (``None``:
        they are cancelled at once); the port is closed when this returns."""
        if self._server is not None:
            self._server.stop(grace).wait()
            self._server = None
        self._stopped.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Blocks until :meth:`stop` (from another thread) or ``timeout``
        seconds; True if stopped."""
        return self._stopped.wait(timeout)

    def __enter__(self) -> PolicyServer:
        if self._server is None:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"serving {self.url}" if self._server is not None else "stopped"
        return f"PolicyServer({state})"


def serve_policy(
    act: ActFn,
    *,
    observe: ObserveFn | None = None,
    port: int = 0,
    host: str = "127.0.0.1",
    token: str | None = None,
    tls_cert: str | os.PathLike[str] | None = None,
    tls_key: str | os.PathLike[str] | None = None,
    numpy: bool | None = None,
    max_workers: int = 1,
) -> PolicyServer:
    """Starts a :class:`PolicyServer` serving ``act`` and returns it (it
    serves in background threads: call :meth:`PolicyServer.wait` to block,
    :meth:`PolicyServer.stop` to end). Arguments as for :class:`PolicyServer`."""
    return PolicyServer(
        act,
        observe=observe,
        port=port,
        host=host,
        token=token,
        tls_cert=tls_cert,
        tls_key=tls_key,
        numpy=numpy,
        max_workers=max_workers,
    ).start()
