"""Wire messages to dataclasses, and gRPC errors to exceptions, without a server."""

from __future__ import annotations

import dataclasses

import grpc
import pytest
from peergrid.market.v1 import market_pb2

import peergrid
from peergrid.errors import from_rpc_error


def test_slot_summary_keeps_a_missing_price_missing() -> None:
    pb = market_pb2.SlotSummary(slot=4, data_slot=100, matched_kwh=1.5, reported=8)
    s = peergrid.SlotSummary.from_pb(pb)
    assert (s.slot, s.data_slot, s.matched_kwh, s.reported) == (4, 100, 1.5, 8)
    assert s.clearing_price_micros is None and s.clearing_price_per_kwh is None
    pb.clearing_price_micros = 0
    assert peergrid.SlotSummary.from_pb(pb).clearing_price_per_kwh == 0.0, "a zero price is a price"
    pb.clearing_price_micros = 145_000
    assert peergrid.SlotSummary.from_pb(pb).clearing_price_per_kwh == 0.145


def test_status_carries_every_field_and_the_kpis() -> None:
    names = {f.name for f in dataclasses.fields(peergrid.MarketStatus)}
    assert names == {f.name for f in market_pb2.StatusResponse.DESCRIPTOR.fields}
    kpi_names = {f.name for f in dataclasses.fields(peergrid.Kpis)}
    assert kpi_names == {f.name for f in market_pb2.StatusResponse.DESCRIPTOR.fields_by_name["kpis"].message_type.fields}
    pb = market_pb2.StatusResponse(slot=9, prosumers=80, nodes=4, mode="fast", leases_expired=1)
    pb.kpis.community_cost = 12.5
    s = peergrid.MarketStatus.from_pb(pb)
    assert (s.slot, s.prosumers, s.nodes, s.mode, s.leases_expired) == (9, 80, 4, "fast", 1)
    assert s.kpis.community_cost == 12.5


def test_summary_and_trainer_status_carry_every_field() -> None:
    from peergrid.learner.v1 import learner_pb2

    assert {f.name for f in dataclasses.fields(peergrid.SlotSummary)} == {
        f.name for f in market_pb2.SlotSummary.DESCRIPTOR.fields
    }
    assert {f.name for f in dataclasses.fields(peergrid.TrainerStatus)} == {
        f.name for f in learner_pb2.StatusResponse.DESCRIPTOR.fields
    }


class FakeCall(grpc.RpcError, grpc.Call):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def initial_metadata(self): ...
    def trailing_metadata(self): ...
    def is_active(self): ...
    def time_remaining(self): ...
    def cancel(self): ...
    def add_callback(self, callback): ...


@pytest.mark.parametrize(
    ("code", "cls"),
    [
        (grpc.StatusCode.INVALID_ARGUMENT, peergrid.InvalidArgument),
        (grpc.StatusCode.FAILED_PRECONDITION, peergrid.FailedPrecondition),
        (grpc.StatusCode.UNAUTHENTICATED, peergrid.Unauthenticated),
        (grpc.StatusCode.PERMISSION_DENIED, peergrid.PermissionDenied),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, peergrid.ResourceExhausted),
        (grpc.StatusCode.UNAVAILABLE, peergrid.Unavailable),
        (grpc.StatusCode.DEADLINE_EXCEEDED, peergrid.DeadlineExceeded),
        (grpc.StatusCode.INTERNAL, peergrid.RpcError),
    ],
)
def test_each_code_maps_to_its_class(code: grpc.StatusCode, cls: type) -> None:
    e = from_rpc_error(FakeCall(code, "something happened"))
    assert type(e) is cls and isinstance(e, peergrid.PeergridError)
    assert (e.code, e.message) == (code, "something happened")
    assert str(e) == f"{code.name}: something happened"


def test_invalid_argument_names_the_field() -> None:
    e = from_rpc_error(FakeCall(grpc.StatusCode.INVALID_ARGUMENT, "invalid events[3].scale.slots: must lie in 1..=100000, got 0"))
    assert isinstance(e, peergrid.InvalidArgument) and e.field == "events[3].scale.slots"
    assert from_rpc_error(FakeCall(grpc.StatusCode.INVALID_ARGUMENT, "bad body")).field is None
