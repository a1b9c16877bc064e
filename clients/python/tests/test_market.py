"""Every call of ``peergrid.Market`` against a real market-node with one
agent-node (``conftest.py``). Each test starts from whatever slot the market
is at and checks what its calls change."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from conftest import DEADLINE_MS, PROSUMERS, Cluster
from processes import take_slots

import peergrid

#: Seconds a test's watch may stay open: a bound, never reached when it passes.
WATCH_S = 30.0


def test_status_reports_membership_mode_and_balances(market: peergrid.Market) -> None:
    s = market.status()
    assert isinstance(s, peergrid.MarketStatus)
    assert (s.prosumers, s.nodes) == (PROSUMERS, 1)
    assert s.mode == "fast"
    assert s.missing_reports == 0 and s.absent_prosumers == 0 and s.leases_expired == 0
    assert s.energy_balance_error_kwh < 1e-9 and s.money_balance_error == 0.0
    assert isinstance(s.kpis, peergrid.Kpis) and s.kpis.slots <= s.slot


def test_step_clears_exactly_n_slots_then_pauses(market: peergrid.Market) -> None:
    first = market.status().slot
    with market.watch(timeout=WATCH_S) as watch:
        reply = market.step(3)
        assert reply == peergrid.ControlReply(f"stepping 3 slot(s) from slot {first}", first)
        slots = take_slots(watch, 3, "step(3)")
    assert [s.slot for s in slots] == [first, first + 1, first + 2]
    for s in slots:
        assert (s.reported, s.missing, s.absent) == (PROSUMERS, 0, 0)
        assert s.load_kwh > 0 and s.grid_import_kwh >= 0 and s.matched_kwh >= 0
        if s.clearing_price_micros is not None:
            assert s.clearing_price_per_kwh == s.clearing_price_micros / 1e6
    status = market.status()
    assert status.slot == first + 3 and status.paused
    assert status.kpis.slots >= 3 and status.energy_balance_error_kwh < 1e-9


def test_resume_clears_until_pause(market: peergrid.Market) -> None:
    first = market.status().slot
    with market.watch(timeout=WATCH_S) as watch:
        reply = market.resume()
        assert reply.message == f"resumed; next slot {first}"
        slots = take_slots(watch, 2, "resume()")
        paused = market.pause()
    assert [s.slot for s in slots] == [first, first + 1]
    assert paused.message == f"paused; next slot {paused.slot}" and paused.slot >= first + 2
    assert market.status().paused


def test_start_starts_clearing(market: peergrid.Market) -> None:
    first = market.status().slot
    with market.watch(timeout=WATCH_S) as watch:
        assert market.start().message == f"started; next slot {first}"
        take_slots(watch, 1, "start()")
        market.pause()
    assert market.status().paused


def test_mode_switches_between_real_time_and_fast(market: peergrid.Market) -> None:
    reply = market.mode("real-time", slot_period_ms=50)
    assert reply.message.startswith("mode real-time; slot period 50 ms")
    s = market.status()
    assert (s.mode, s.slot_period_ms) == ("real-time", 50)
    # 0 keeps the current period; the deadline changes.
    reply = market.mode("fast", deadline_ms=DEADLINE_MS + 1)
    assert reply.message == f"mode fast; slot period 50 ms, deadline {DEADLINE_MS + 1} ms"
    assert market.status().mode == "fast"
    market.mode("fast", slot_period_ms=1000, deadline_ms=DEADLINE_MS)


def test_inject_scale_applies_from_the_next_slot_for_its_slots(market: peergrid.Market) -> None:
    first = market.status().slot
    reply = market.inject_scale(0, PROSUMERS - 1, load_scale=0.0, pv_scale=0.0, slots=2)
    assert reply.message == (
        f"prosumers 0..={PROSUMERS - 1}: PV ×0, load ×0 for 2 slot(s) from slot {first}"
    )
    with market.watch(timeout=WATCH_S) as watch:
        market.step(3)
        slots = take_slots(watch, 3, "inject_scale(load 0, PV 0, 2 slots) and step(3)")
    assert [(s.load_kwh, s.pv_kwh) for s in slots[:2]] == [(0.0, 0.0), (0.0, 0.0)]
    assert slots[2].load_kwh > 0, "the scale lasts 2 slots"


def test_take_offline_settles_the_range_without_reports(market: peergrid.Market) -> None:
    first = market.status().slot
    reply = market.take_offline(0, 3, slots=1)
    assert reply.message == f"prosumers 0..=3 offline for 1 slot(s) from slot {first}"
    with market.watch(timeout=WATCH_S) as watch:
        market.step(2)
        slots = take_slots(watch, 2, "take_offline(0..=3, 1 slot) and step(2)")
    assert slots[0].reported == PROSUMERS - 4
    assert slots[1].reported == PROSUMERS


def test_inject_tariff_bounds_the_clearing_price(market: peergrid.Market) -> None:
    # The bundled tariff's retail price is at most 0.45/kWh: a clearing price
    # in [0.5, 0.6] can only come from the override.
    first = market.status().slot
    reply = market.inject_tariff(retail_per_kwh=0.6, feed_in_per_kwh=0.5, slots=24)
    assert reply.message == f"tariff: retail 0.6/kWh, feed-in 0.5/kWh for 24 slot(s) from slot {first}"
    with market.watch(timeout=WATCH_S) as watch:
        market.step(24)
        slots = take_slots(watch, 24, "inject_tariff(24 slots) and step(24)")
    prices = [s.clearing_price_per_kwh for s in slots if s.clearing_price_per_kwh is not None]
    assert prices, "a day of slots has a P2P match"
    assert all(0.5 <= p <= 0.6 for p in prices), prices


def test_set_feeder_limit_counts_overload_until_unlimited_again(market: peergrid.Market) -> None:
    def step_and_overload(what: str) -> float:
        with market.watch(timeout=WATCH_S) as watch:
            market.step(2)
            slots = take_slots(watch, 2, what)
        assert all(s.grid_import_kwh > 0.01 for s in slots), "every slot imports more than the limit"
        return market.status().kpis.overload_kwh

    first = market.status().slot
    before = market.status().kpis.overload_kwh
    reply = market.set_feeder_limit(import_limit_kw=0.001)
    assert reply.message == f"feeder limits: import 0.001 kW, export unlimited from slot {first}"
    limited = step_and_overload("set_feeder_limit(import 0.001 kW) and step(2)")
    assert limited > before
    reply = market.set_feeder_limit()
    assert reply.message == f"feeder limits: import unlimited, export unlimited from slot {first + 2}"
    assert step_and_overload("set_feeder_limit() and step(2)") == limited


def scenario_at(slot: int) -> dict[str, object]:
    """Load 0 for the slot after ``slot``; prosumers 0..=1 offline two slots later."""
    return {
        "events": [
            {"at_slot": slot + 1, "scale": {"first_prosumer_id": 0, "last_prosumer_id": PROSUMERS - 1,
                                            "load_scale": 0.0, "pv_scale": 0.0, "slots": 1}},
            {"at_slot": slot + 3, "offline": {"first_prosumer_id": 0, "last_prosumer_id": 1, "slots": 1}},
        ]
    }


def check_scenario_played(market: peergrid.Market, first: int) -> None:
    with market.watch(timeout=WATCH_S) as watch:
        market.step(4)
        slots = take_slots(watch, 4, "load_scenario and step(4)")
    assert [s.slot for s in slots] == [first, first + 1, first + 2, first + 3]
    assert slots[0].load_kwh > 0 and slots[1].load_kwh == 0.0 and slots[2].load_kwh > 0
    assert [s.reported for s in slots] == [PROSUMERS, PROSUMERS, PROSUMERS, PROSUMERS - 2]


def test_load_scenario_from_a_dict(market: peergrid.Market) -> None:
    first = market.status().slot
    reply = market.load_scenario(scenario_at(first))
    assert reply == peergrid.ControlReply("scheduled 2 event(s)", first)
    check_scenario_played(market, first)


def test_load_scenario_from_a_file(market: peergrid.Market, tmp_path: Path) -> None:
    first = market.status().slot
    path = tmp_path / "scenario.json"
    path.write_text(json.dumps(scenario_at(first)))
    assert market.load_scenario(path).message == "scheduled 2 event(s)"
    check_scenario_played(market, first)


def test_watch_yields_notices_when_asked(market: peergrid.Market) -> None:
    with market.watch(notices=True, timeout=WATCH_S) as watch:
        reply = market.pause()
        notices = (e.text for e in watch if isinstance(e, peergrid.Notice))
        assert reply.message in notices


def test_watch_ends_when_cancelled(market: peergrid.Market) -> None:
    watch = market.watch(timeout=WATCH_S)
    watch.cancel()
    assert list(watch) == []


# ----- refused input: the code, the field and the bound; nothing changes ------


@pytest.mark.parametrize(
    ("call", "field", "words"),
    [
        (lambda m: m.step(0), "count", "must lie in 1..=100000, got 0"),
        (lambda m: m.step(100_001), "count", "must lie in 1..=100000, got 100001"),
        (lambda m: m.mode("real-time", slot_period_ms=5), "slot_period_ms", "must lie in 10..=86400000"),
        (lambda m: m.mode("fast", deadline_ms=600_001), "deadline_ms", "must lie in 1..=600000"),
        (lambda m: m.inject_scale(5, 2, pv_scale=0.5, slots=1), "event.last_prosumer_id", "got 2"),
        (lambda m: m.inject_scale(0, 1, pv_scale=0.5, slots=0), "event.slots", "must lie in 1..=100000, got 0"),
        (lambda m: m.inject_scale(0, 1, pv_scale=math.nan, slots=1), "event.pv_scale", "must be finite"),
        (lambda m: m.inject_scale(0, 1, load_scale=-1.0, slots=1), "event.load_scale", "got -1"),
        (lambda m: m.inject_tariff(retail_per_kwh=0.1, feed_in_per_kwh=0.2, slots=1), "event.feed_in_per_kwh",
         "must be finite and lie in [0, 0.1], got 0.2"),
        (lambda m: m.inject_tariff(retail_per_kwh=101.0, feed_in_per_kwh=0.0, slots=1), "event.retail_per_kwh",
         "lie in [0, 100]"),
        (lambda m: m.set_feeder_limit(import_limit_kw=-5.0), "event.import_limit_kw", "got -5"),
        (lambda m: m.take_offline(3, 1, slots=1), "event.last_prosumer_id", "must be ≥ first_prosumer_id (3)"),
    ],
)
def test_invalid_control_arguments_name_the_field(market: peergrid.Market, call, field: str, words: str) -> None:
    before = market.status()
    with pytest.raises(peergrid.InvalidArgument) as raised:
        call(market)
    e = raised.value
    assert e.code.name == "INVALID_ARGUMENT"
    assert e.field == field, e.message
    assert words in e.message
    after = market.status()
    assert (after.slot, after.mode, after.slot_period_ms) == (before.slot, before.mode, before.slot_period_ms)


#: Stands for a slot before the market's next one.
PAST = "past"


@pytest.mark.parametrize(
    ("event", "field", "words"),
    [
        ({"at_slot": PAST, "feeder": {"import_limit_kw": 1.0}}, "events[1].at_slot", "must be ≥ the next slot"),
        ({"at_slot": 10**9, "feeder": {}, "tariff": {"retail_per_kwh": 1, "feed_in_per_kwh": 0, "slots": 1}},
         "events[1]", "needs exactly one of scale, tariff, feeder, offline"),
        ({"at_slot": 10**9, "scale": {"first_prosumer_id": 0, "last_prosumer_id": 1, "slots": 0}},
         "events[1].scale.slots", "must lie in 1..=100000, got 0"),
        ({"at_slot": 10**9, "rain": {}}, "scenario_json", "unknown field `rain`"),
        ({"at_slot": -1, "feeder": {}}, "scenario_json", "invalid value: integer `-1`"),
    ],
)
def test_bad_scenarios_are_refused_whole(market: peergrid.Market, event: dict, field: str, words: str) -> None:
    if market.status().slot == 0:
        with market.watch(timeout=WATCH_S) as watch:
            market.step(1)
            take_slots(watch, 1, "step(1)")
    first = market.status().slot
    if event["at_slot"] == PAST:
        event = {**event, "at_slot": first - 1}
    # A valid event first: a refused scenario schedules none of its events.
    offline = {"at_slot": first, "offline": {"first_prosumer_id": 0, "last_prosumer_id": PROSUMERS - 1, "slots": 1}}
    with pytest.raises(peergrid.InvalidArgument) as raised:
        market.load_scenario({"events": [offline, event]})
    assert raised.value.field == field, raised.value.message
    assert words in raised.value.message
    with market.watch(timeout=WATCH_S) as watch:
        market.step(1)
        (slot,) = take_slots(watch, 1, "a refused scenario and step(1)")
    assert (slot.slot, slot.reported) == (first, PROSUMERS), "no event of a refused scenario is scheduled"


def test_a_scenario_with_an_unknown_key_is_invalid(market: peergrid.Market) -> None:
    with pytest.raises(peergrid.InvalidArgument) as raised:
        market.load_scenario({"events": [], "extra": 1})
    assert raised.value.field == "scenario_json"
    assert "unknown field `extra`, expected `events`" in raised.value.message


def test_a_scenario_file_that_is_not_json_is_invalid(market: peergrid.Market, tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text('{"events": [')
    with pytest.raises(peergrid.InvalidArgument) as raised:
        market.load_scenario(path)
    assert raised.value.field == "scenario_json"


def test_client_side_refusals_are_config_errors(market: peergrid.Market, tmp_path: Path) -> None:
    with pytest.raises(peergrid.ConfigError, match="scenario: cannot read"):
        market.load_scenario(tmp_path / "missing.json")
    with pytest.raises(peergrid.ConfigError, match="scenario: not a JSON document"):
        market.load_scenario({"events": [{"at_slot": 1, "scale": {"pv_scale": math.inf}}]})
    with pytest.raises(peergrid.ConfigError, match="^count: "):
        market.step(-1)
    with pytest.raises(peergrid.ConfigError, match="^event.pv_scale: "):
        market.inject_scale(0, 1, pv_scale="bright", slots=1)  # type: ignore[arg-type]
    with pytest.raises(peergrid.ConfigError, match="mode: must be one of 'fast', 'real-time', got 'warp'"):
        market.mode("warp")  # type: ignore[arg-type]


# ----- tokens ----------------------------------------------------------------


def test_control_needs_the_operator_token(cluster: Cluster) -> None:
    from processes import AGENT_TOKEN

    with cluster.market(AGENT_TOKEN) as agent:
        assert agent.status().prosumers == PROSUMERS, "either token reads status"
        with agent.watch(timeout=WATCH_S):
            pass
        with pytest.raises(peergrid.PermissionDenied) as raised:
            agent.pause()
        assert raised.value.code.name == "PERMISSION_DENIED"


@pytest.mark.parametrize("token", [None, "not-a-token-of-this-market"])
def test_a_missing_or_unknown_token_is_unauthenticated(cluster: Cluster, token: str | None) -> None:
    with cluster.market(token) as m:
        with pytest.raises(peergrid.Unauthenticated):
            m.status()
        with pytest.raises(peergrid.Unauthenticated):
            m.step(1)
        with pytest.raises(peergrid.Unauthenticated):
            m.watch(timeout=WATCH_S)
