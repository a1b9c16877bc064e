"""``peergrid.PolicyServer`` on its own: called by a plain gRPC client as
an agent-node calls it (no peergrid binaries needed)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import grpc
import numpy as np
import pytest

import peergrid
from peergrid.policy.v1 import policy_pb2, policy_pb2_grpc

TOKEN = "agent-token-for-tests-0123456789"


def request(n: int = 3, slot: int = 7, previous: bool = False) -> Any:
    r = policy_pb2.ActRequest(
        node_name="node-a",
        slot=slot,
        prosumer_ids=list(range(10, 10 + n)),
        observations=[float(p * 100 + f) for p in range(n) for f in range(peergrid.remote_policy.OBS_DIM)],
    )
    if previous:
        r.previous.CopyFrom(
            policy_pb2.SlotFeedback(
                slot=slot - 1,
                prosumer_ids=list(range(10, 10 + n)),
                rewards=[-0.5] * n,
                costs=[0.5] * n,
                grid_import_kwh=[1.0] * n,
                dones=[False] * n,
                settled_by_market=[True] * n,
                remote_actions=True,
            )
        )
    return r


class Calls:
    """Records what the policy was given; answers ``answer(n)``."""

    def __init__(self, answer: Any = None) -> None:
        self.acts: list[tuple[int, list[int], Any]] = []
        self.feedback: list[peergrid.Feedback] = []
        self.answer = answer if answer is not None else (lambda n: [[1.0, -1.0, 0.25]] * n)

    def act(self, slot: int, ids: list[int], observations: Any) -> Any:
        self.acts.append((slot, list(ids), observations))
        return self.answer(len(ids))


def stub(server: peergrid.PolicyServer) -> tuple[grpc.Channel, Any]:
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    return channel, policy_pb2_grpc.PolicyServiceStub(channel)


@pytest.fixture
def calls() -> Calls:
    return Calls()


@pytest.fixture
def served(calls: Calls) -> Iterator[tuple[peergrid.PolicyServer, Any]]:
    with peergrid.serve_policy(calls.act, observe=calls.feedback.append, token=TOKEN) as server:
        channel, client = stub(server)
        with channel:
            yield server, client


AUTH = (("authorization", f"Bearer {TOKEN}"),)


def test_act_gets_ids_and_a_numpy_array_and_its_answer_goes_back_flat(served: Any, calls: Calls) -> None:
    server, client = served
    assert server.url == f"http://127.0.0.1:{server.port}" and server.port > 0
    reply = client.Act(request(3, previous=True), metadata=AUTH, timeout=10)
    assert (reply.slot, list(reply.prosumer_ids)) == (7, [10, 11, 12])
    assert list(reply.actions) == [1.0, -1.0, 0.25] * 3
    (slot, ids, obs) = calls.acts[0]
    assert (slot, ids) == (7, [10, 11, 12])
    assert isinstance(obs, np.ndarray) and obs.shape == (3, peergrid.remote_policy.OBS_DIM) and obs.dtype == np.float32
    assert obs[1, 0] == 100.0 and obs[2, 13] == 213.0, "prosumer-major rows"
    [f] = calls.feedback
    assert f == peergrid.Feedback(
        node_name="node-a",
        slot=6,
        prosumer_ids=(10, 11, 12),
        rewards=(-0.5,) * 3,
        costs=(0.5,) * 3,
        grid_import_kwh=(1.0,) * 3,
        dones=(False,) * 3,
        settled_by_market=(True,) * 3,
        remote_actions=True,
    )
    client.Act(request(3, slot=8), metadata=AUTH, timeout=10)
    assert len(calls.feedback) == 1, "observe is called only for calls carrying feedback"


def test_without_numpy_observations_are_lists() -> None:
    calls = Calls(answer=lambda n: np.zeros((n, 3)))
    with peergrid.serve_policy(calls.act, numpy=False) as server:
        channel, client = stub(server)
        with channel:
            reply = client.Act(request(2), timeout=10)
    assert list(reply.actions) == [0.0] * 6
    obs = calls.acts[0][2]
    assert isinstance(obs, list) and len(obs) == 2 and obs[1][:2] == [100.0, 101.0] and len(obs[0]) == peergrid.remote_policy.OBS_DIM


def test_a_caller_without_the_token_is_refused(served: Any, calls: Calls) -> None:
    _, client = served
    for metadata in [(), (("authorization", "Bearer wrong-token-0123456789"),)]:
        with pytest.raises(grpc.RpcError) as e:
            client.Act(request(), metadata=metadata, timeout=10)
        assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert calls.acts == []


def test_a_request_of_the_wrong_shape_is_refused_naming_the_field(served: Any, calls: Calls) -> None:
    _, client = served
    bad = request(3)
    del bad.observations[-1]
    with pytest.raises(grpc.RpcError) as e:
        client.Act(bad, metadata=AUTH, timeout=10)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"observations: expected {3 * peergrid.remote_policy.OBS_DIM} values" in e.value.details()
    assert calls.acts == []


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (lambda n: [[0.0, 0.0, 0.0]] * (n - 1), "actions: expected 3 rows (one per prosumer) of 3 numbers, got 2 rows"),
        (lambda n: np.zeros((n, 2)), "actions[0]: expected 3 numbers (battery, quantity, price), got 2"),
        (lambda n: [[0.0, math.nan, 0.0]] * n, "actions[0][1]: nan is not finite"),
        (lambda n: [[0.0, 0.0, 5e3]] * n, "actions[0][2]: 5000.0 is outside [-1000, 1000]"),
        (lambda n: [[0.0, "x", 0.0]] * n, "actions[0][1]: must be a number, got 'x'"),
        (lambda n: None, "actions: must be 3 rows of 3 numbers, got NoneType"),
    ],
)
def test_a_bad_answer_is_logged_naming_the_field_and_answered_internal(
    answer: Any, message: str, caplog: pytest.LogCaptureFixture
) -> None:
    calls = Calls(answer=answer)
    with peergrid.serve_policy(calls.act) as server:
        channel, client = stub(server)
        with channel, pytest.raises(grpc.RpcError) as e:
            client.Act(request(3), timeout=10)
    assert e.value.code() == grpc.StatusCode.INTERNAL
    assert message in e.value.details()
    assert message in caplog.text and "slot 7" in caplog.text


def test_an_exception_in_act_is_logged_and_answered_internal(caplog: pytest.LogCaptureFixture) -> None:
    def act(slot: int, ids: list[int], obs: Any) -> Any:
        raise RuntimeError("out of GPU memory")

    with peergrid.serve_policy(act) as server:
        channel, client = stub(server)
        with channel, pytest.raises(grpc.RpcError) as e:
            client.Act(request(), timeout=10)
    assert e.value.code() == grpc.StatusCode.INTERNAL
    assert "RuntimeError: out of GPU memory" in e.value.details() and "out of GPU memory" in caplog.text


def test_policy_unavailable_is_answered_unavailable_and_logged_as_info(caplog: pytest.LogCaptureFixture) -> None:
    def act(slot: int, ids: list[int], obs: Any) -> Any:
        raise peergrid.PolicyUnavailable("updating the networks")

    with caplog.at_level("INFO", logger="peergrid.policy"), peergrid.serve_policy(act) as server:
        channel, client = stub(server)
        with channel, pytest.raises(grpc.RpcError) as e:
            client.Act(request(), timeout=10)
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE and "updating the networks" in e.value.details()
    assert [r.levelname for r in caplog.records if "updating the networks" in r.getMessage()] == ["INFO"]


def test_flatten_actions_takes_numpy_and_sequences() -> None:
    assert peergrid.flatten_actions(np.array([[1, 2, 3], [4, 5, 6]], dtype=np.float32), 2) == [1, 2, 3, 4, 5, 6]
    assert peergrid.flatten_actions(((1, 2, 3),), 1) == [1.0, 2.0, 3.0]
    with pytest.raises(ValueError, match=r"actions\[1\]\[0\]: inf is not finite"):
        peergrid.flatten_actions([[0, 0, 0], [math.inf, 0, 0]], 2)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"port": 70000}, "port: must lie in 0..=65535"),
        ({"token": "short"}, "token: must be at least 16 characters"),
        ({"tls_cert": "cert.pem"}, "tls_cert, tls_key: give both or neither"),
        ({"max_workers": 0}, "max_workers: must be at least 1"),
        ({"observe": 3}, "observe: must be callable"),
    ],
)
def test_bad_settings_raise_config_errors_naming_them(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(peergrid.ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        peergrid.PolicyServer(lambda slot, ids, obs: None, **kwargs)
    with pytest.raises(peergrid.ConfigError, match="act: must be callable"):
        peergrid.PolicyServer(None)  # type: ignore[arg-type]


def test_a_taken_port_is_a_config_error() -> None:
    with peergrid.serve_policy(lambda slot, ids, obs: None) as first:
        with pytest.raises(peergrid.ConfigError, match=f"port: cannot listen on 127.0.0.1:{first.port}"):
            peergrid.serve_policy(lambda slot, ids, obs: None, port=first.port)
