"""``Market`` and ``Trainer``: typed clients of a running market-node and trainer.

Each method is one gRPC call (the same calls ``peergrid ctl`` and ``trainer
status`` make, ``services/cli/src/ctl.rs``): it builds the request, sends it
with the bearer token and the client's timeout, and returns a dataclass of
:mod:`peergrid.results` or raises a :class:`~peergrid.errors.PeergridError`
carrying the server's code and message. This is the only module that names
the generated types.

Control calls (``start`` … ``load_scenario``) need the operator token;
``status`` and ``watch`` accept either token.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Literal, TypeVar

import grpc

from peergrid.connection import Target, auth_metadata
from peergrid.errors import ConfigError, DeadlineExceeded, from_rpc_error
from peergrid.results import ControlReply, MarketStatus, Notice, SlotSummary, TrainerStatus

try:
    from peergrid.control.v1 import control_pb2, control_pb2_grpc
    from peergrid.learner.v1 import learner_pb2, learner_pb2_grpc
    from peergrid.market.v1 import market_pb2, market_pb2_grpc
except ModuleNotFoundError as e:  # pragma: no cover - only in an uninstalled checkout
    raise ImportError(
        "peergrid's gRPC modules are generated when the package is installed: "
        "run `pip install ./clients/python` (from the repository root)"
    ) from e

#: Seconds a unary call may take before it fails with ``DeadlineExceeded``.
DEFAULT_TIMEOUT_S = 10.0

_MODES = {"fast": control_pb2.MODE_FAST, "real-time": control_pb2.MODE_REAL_TIME}

T = TypeVar("T")


def _message(cls: Callable[[], T], path: str, **fields: Any) -> T:
    """``cls(**fields)``, one field at a time, so that a value protobuf
    refuses (a negative count, a str for a float) is a ``ConfigError``
    naming the field instead of protobuf's bare ``Value out of range``."""
    message = cls()
    for name, value in fields.items():
        try:
            setattr(message, name, value)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"{path}{name}: {e}") from None
    return message


class _Client:
    """What both clients share: one channel, the token and the timeout."""

    def __init__(
        self,
        url: str,
        token: str | None,
        tls_ca: str | os.PathLike[str] | None,
        tls_domain: str | None,
        timeout: float,
    ) -> None:
        self.url = url
        self._target = Target.parse(url, tls_ca, tls_domain)
        self._metadata = auth_metadata(token)
        self._timeout = timeout
        self._channel = self._target.channel()

    def _unary(self, method: Callable[..., Any], request: Any) -> Any:
        try:
            return method(request, timeout=self._timeout, metadata=self._metadata)
        except grpc.RpcError as e:
            raise from_rpc_error(e) from None

    def close(self) -> None:
        """Closes the channel (and with it any open ``watch``)."""
        self._channel.close()

    def __enter__(self: T) -> T:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"


class Market(_Client):
    """A client of a market-node's operator API.

    Args:
        url: ``http://HOST:PORT``, or ``https://HOST:PORT`` with ``tls_ca``.
        token: the operator token for control calls (the agent token is
            enough for ``status`` and ``watch``); ``None`` only for a market
            started with ``--insecure-no-auth``. At least 16 visible ASCII
            characters.
        tls_ca: path of the PEM CA file an ``https`` market's certificate
            chains to.
        tls_domain: name to verify in the certificate instead of the URL's host.
        timeout: seconds each unary call may take.

    Nothing is dialled until the first call; use it as a context manager
    (or call :meth:`close`) to release the connection.
    """

    def __init__(
        self,
        url: str,
        token: str | None,
        tls_ca: str | os.PathLike[str] | None = None,
        *,
        tls_domain: str | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        super().__init__(url, token, tls_ca, tls_domain, timeout)
        self._control = control_pb2_grpc.ControlServiceStub(self._channel)
        self._market = market_pb2_grpc.MarketServiceStub(self._channel)

    # ----- reading ----------------------------------------------------------

    def status(self) -> MarketStatus:
        """Slot, membership, balance errors, counters and KPIs so far."""
        return MarketStatus.from_pb(self._unary(self._market.Status, market_pb2.StatusRequest()))

    def watch(self, *, notices: bool = False, timeout: float | None = None) -> Watch:
        """Live slot summaries, one per cleared slot, as an iterator.

        When this returns, the market has subscribed the watcher: every slot
        cleared from then on is delivered (a watcher that falls far behind
        skips summaries: the market never waits for it).

        Args:
            notices: also yield :class:`~peergrid.results.Notice` events
                (nodes joining and leaving, control calls).
            timeout: seconds the whole stream may last; then iterating raises
                ``DeadlineExceeded``. ``None``: until cancelled or the market
                stops.

        Use it as a context manager, or call :meth:`Watch.cancel`, to end
        the stream.
        """
        call = self._market.Watch(market_pb2.WatchRequest(), timeout=timeout, metadata=self._metadata)
        return Watch(call, notices=notices, subscribe_timeout=self._timeout)

    # ----- control (operator token) -----------------------------------------

    def start(self) -> ControlReply:
        """Starts clearing (a market waits for this or its ``--min-prosumers``)."""
        return self._control_call(self._control.Start, control_pb2.Empty())

    def pause(self) -> ControlReply:
        """Stops clearing after the current slot."""
        return self._control_call(self._control.Pause, control_pb2.Empty())

    def resume(self) -> ControlReply:
        """Continues clearing."""
        return self._control_call(self._control.Resume, control_pb2.Empty())

    def step(self, count: int) -> ControlReply:
        """Clears exactly ``count`` slots (1..=100,000), then pauses."""
        return self._control_call(self._control.Step, _message(control_pb2.StepRequest, "", count=count))

    def mode(
        self,
        mode: Literal["fast", "real-time"],
        *,
        slot_period_ms: int = 0,
        deadline_ms: int = 0,
    ) -> ControlReply:
        """Switches the clock between ``"fast"`` (a slot clears when every
        node has reported, or after ``deadline_ms``, 1..=600,000 ms) and
        ``"real-time"`` (one slot every ``slot_period_ms``, 10..=86,400,000
        ms). A period or deadline of 0 keeps the current one."""
        if mode not in _MODES:
            raise ConfigError(f"mode: must be one of {', '.join(map(repr, _MODES))}, got {mode!r}")
        request = _message(
            control_pb2.SetModeRequest, "", mode=_MODES[mode], slot_period_ms=slot_period_ms, deadline_ms=deadline_ms
        )
        return self._control_call(self._control.SetMode, request)

    def inject_scale(
        self,
        first_prosumer_id: int,
        last_prosumer_id: int,
        *,
        slots: int,
        pv_scale: float = 1.0,
        load_scale: float = 1.0,
    ) -> ControlReply:
        """Scales the PV yield and the load of prosumers
        ``first_prosumer_id..=last_prosumer_id`` by ``pv_scale`` and
        ``load_scale`` (factors ≥ 0) for ``slots`` slots (1..=100,000), from
        the next slot opened. ``pv_scale=0.2``: a cloudy day."""
        event = _message(
            control_pb2.ScaleGroup,
            "event.",
            first_prosumer_id=first_prosumer_id,
            last_prosumer_id=last_prosumer_id,
            pv_scale=pv_scale,
            load_scale=load_scale,
            slots=slots,
        )
        return self._inject(scale=event)

    def inject_tariff(self, *, retail_per_kwh: float, feed_in_per_kwh: float, slots: int) -> ControlReply:
        """Overrides the grid's retail and feed-in prices (currency per kWh,
        0 ≤ feed-in ≤ retail ≤ 100) for ``slots`` slots, from the next slot opened."""
        event = _message(
            control_pb2.TariffOverride,
            "event.",
            retail_per_kwh=retail_per_kwh,
            feed_in_per_kwh=feed_in_per_kwh,
            slots=slots,
        )
        return self._inject(tariff=event)

    def set_feeder_limit(self, *, import_limit_kw: float = 0.0, export_limit_kw: float = 0.0) -> ControlReply:
        """Sets the feeder's import and export limits, kW (0 = unlimited),
        from the next slot opened; the change is permanent."""
        event = _message(
            control_pb2.FeederLimit, "event.", import_limit_kw=import_limit_kw, export_limit_kw=export_limit_kw
        )
        return self._inject(feeder=event)

    def take_offline(self, first_prosumer_id: int, last_prosumer_id: int, *, slots: int) -> ControlReply:
        """Takes prosumers ``first_prosumer_id..=last_prosumer_id`` offline
        (they settle with the grid alone) for ``slots`` slots, from the next
        slot opened."""
        event = _message(
            control_pb2.TakeOffline,
            "event.",
            first_prosumer_id=first_prosumer_id,
            last_prosumer_id=last_prosumer_id,
            slots=slots,
        )
        return self._inject(offline=event)

    def load_scenario(self, scenario: str | os.PathLike[str] | Mapping[str, Any]) -> ControlReply:
        """Schedules a scenario: timed events, validated as a whole before
        any is applied (format: ``market-node/README.md``)::

            {"events": [{"at_slot": 10, "scale": {"first_prosumer_id": 0, "last_prosumer_id": 9,
                                                  "pv_scale": 0.3, "slots": 24}}]}

        ``scenario`` is the path of such a JSON file, or the document as a
        dict. Each event's ``at_slot`` must be ≥ the next slot (``status().slot``).
        """
        if isinstance(scenario, Mapping):
            try:
                text = json.dumps(scenario, allow_nan=False)
            except (TypeError, ValueError) as e:
                raise ConfigError(f"scenario: not a JSON document: {e}") from None
        else:
            try:
                with open(scenario, encoding="utf-8") as f:
                    text = f.read()
            except (OSError, UnicodeDecodeError) as e:
                raise ConfigError(f"scenario: cannot read {os.fspath(scenario)}: {e}") from None
        request = control_pb2.LoadScenarioRequest(scenario_json=text)
        return self._control_call(self._control.LoadScenario, request)

    def _inject(self, **event: Any) -> ControlReply:
        return self._control_call(self._control.Inject, control_pb2.InjectRequest(**event))

    def _control_call(self, method: Callable[..., Any], request: Any) -> ControlReply:
        return ControlReply.from_pb(self._unary(method, request))


class Watch(Iterator["SlotSummary | Notice"]):
    """The live event stream of :meth:`Market.watch`: iterates
    :class:`~peergrid.results.SlotSummary` (and, if asked for,
    :class:`~peergrid.results.Notice`) until cancelled or the market stops."""

    def __init__(self, call: Any, *, notices: bool, subscribe_timeout: float) -> None:
        self._call = call
        self._notices = notices
        self._cancelled = False
        self._wait_subscribed(subscribe_timeout)

    def _wait_subscribed(self, timeout: float) -> None:
        # The market's Watch handler subscribes the watcher before it returns
        # the response, and the response headers go out when it returns
        # (market-node/src/grpc.rs): once gRPC's initial_metadata() is back,
        # no later slot is missed. It blocks (until the headers or a
        # failure), so it is waited for on a thread, with a deadline.
        answered = threading.Event()

        def wait() -> None:
            self._call.initial_metadata()
            answered.set()

        threading.Thread(target=wait, name="peergrid-watch-subscribe", daemon=True).start()
        if not answered.wait(timeout):
            self._call.cancel()
            raise DeadlineExceeded(f"the market did not answer Watch within {timeout} s", grpc.StatusCode.DEADLINE_EXCEEDED)
        if self._call.done() and self._call.code() != grpc.StatusCode.OK:
            raise from_rpc_error(self._call)

    def __iter__(self) -> Watch:
        return self

    def __next__(self) -> SlotSummary | Notice:
        while True:
            try:
                event = next(self._call)
            except grpc.RpcError as e:
                if self._cancelled:
                    raise StopIteration from None
                raise from_rpc_error(e) from None
            kind = event.WhichOneof("event")
            if kind == "slot":
                return SlotSummary.from_pb(event.slot)
            if kind == "notice" and self._notices:
                return Notice(event.notice)

    def cancel(self) -> None:
        """Ends the stream; iterating then stops."""
        self._cancelled = True
        self._call.cancel()

    def __enter__(self) -> Watch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cancel()


class Trainer(_Client):
    """A client of the trainer's status.

    Args:
        url: ``http://HOST:PORT``, or ``https://HOST:PORT`` with ``tls_ca``.
        token: the operator or the agent token (``None`` only for a trainer
            started with ``--insecure-no-auth``).
        tls_ca: path of the PEM CA file an ``https`` trainer's certificate
            chains to.
        tls_domain: name to verify in the certificate instead of the URL's host.
        timeout: seconds each call may take.
    """

    def __init__(
        self,
        url: str,
        token: str | None,
        tls_ca: str | os.PathLike[str] | None = None,
        *,
        tls_domain: str | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        super().__init__(url, token, tls_ca, tls_domain, timeout)
        self._learner = learner_pb2_grpc.LearnerServiceStub(self._channel)

    def status(self) -> TrainerStatus:
        """Policy version, updates, throughput, lag and subscribers."""
        return TrainerStatus.from_pb(self._unary(self._learner.Status, learner_pb2.StatusRequest()))
