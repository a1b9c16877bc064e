"""Typed results of the client's calls: plain frozen dataclasses.

Each is built from its wire message by a ``from_pb`` class method, the one
place that knows the generated types' field names; fields keep the proto's
names and units (documented per field, and in ``proto/peergrid``). Prices on
the wire are integer micro-currency per kWh; they are kept exact (``*_micros``)
with a float ``*_per_kwh`` property beside them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

MICROS_PER_UNIT = 1_000_000


@dataclass(frozen=True)
class ControlReply:
    """What the market did after a control call.

    Attributes:
        message: the market's own words (``stepping 3 slot(s) from slot 0``).
        slot: the next slot the market will open.
    """

    message: str
    slot: int

    @classmethod
    def from_pb(cls, pb: Any) -> ControlReply:
        return cls(message=pb.message, slot=pb.slot)


@dataclass(frozen=True)
class Kpis:
    """Episode KPIs of the settled slots so far (definitions:
    ``services/core/src/kpi.rs``). Energy in kWh, power in kW, money in the
    tariff's currency, CO2 in kg."""

    slots: int
    prosumers: int
    load_kwh: float
    pv_kwh: float
    grid_import_kwh: float
    grid_export_kwh: float
    #: Highest community grid import of any slot, kW.
    peak_import_kw: float
    #: What the community paid (grid, P2P, penalties), currency.
    community_cost: float
    #: What the same households would have paid with the grid alone, currency.
    grid_only_cost: float
    #: Energy traded peer to peer, kWh.
    p2p_kwh: float
    self_sufficiency_pct: float
    self_consumption_pct: float
    co2_kg: float
    #: Equivalent full battery cycles per battery.
    battery_cycles: float
    #: Gini coefficient of the households' savings against grid-only, 0..1.
    gini_savings: float
    p2p_losses_kwh: float
    battery_losses_kwh: float
    ev_shortfall_kwh: float
    #: Energy beyond the feeder limits, kWh.
    overload_kwh: float
    mean_reward: float
    #: Demand charge on each period's peak net import (included in
    #: ``community_cost``), currency; 0 without one.
    demand_charge: float = 0.0

    @classmethod
    def from_pb(cls, pb: Any) -> Kpis:
        return cls(**{f.name: getattr(pb, f.name) for f in dataclasses.fields(cls)})


@dataclass(frozen=True)
class MarketStatus:
    """A market-node's run status (``MarketService.Status``).

    Attributes:
        slot: the next slot to open.
        prosumers: prosumers of the agent-nodes connected now.
        nodes: agent-nodes connected now.
        mode: ``"fast"`` or ``"real-time"``.
        paused: whether the market is paused (a market starts paused until an
            operator starts it or its ``--min-prosumers`` have joined).
        slot_period_ms: real-time mode's slot period, ms.
        energy_balance_error_kwh: ``|Σ supply − Σ demand|`` over all settled
            slots, kWh (0 up to rounding).
        money_balance_error: ``|Σ P2P paid − Σ P2P received|``, currency
            (exactly 0).
        kpis: KPIs of the settled slots so far.
        missing_reports: prosumer-slots of connected nodes without a report.
        absent_reports: prosumer-slots of nodes gone but within their lease.
        absent_prosumers: prosumers of disconnected nodes within their lease.
        holds: slots held open for nodes waiting on the learner.
        holds_expired: holds cut short at the market's ``max_hold_ms``.
        batches_refused: order batches refused in-stream (late, invalid…).
        leases_expired: registrations whose lease expired.
    """

    slot: int
    prosumers: int
    nodes: int
    mode: str
    paused: bool
    slot_period_ms: int
    energy_balance_error_kwh: float
    money_balance_error: float
    kpis: Kpis
    missing_reports: int
    absent_reports: int
    absent_prosumers: int
    holds: int
    holds_expired: int
    batches_refused: int
    leases_expired: int

    @classmethod
    def from_pb(cls, pb: Any) -> MarketStatus:
        values = {f.name: getattr(pb, f.name) for f in dataclasses.fields(cls) if f.name != "kpis"}
        return cls(kpis=Kpis.from_pb(pb.kpis), **values)


@dataclass(frozen=True)
class SlotSummary:
    """One cleared slot, as ``Market.watch`` yields it.

    Attributes:
        slot: the run's slot counter (0, 1, 2, …).
        data_slot: the index into the dataset of the slot played.
        clearing_price_micros: the uniform clearing price, micro-currency per
            kWh (exact), or ``None`` when nothing matched.
        matched_kwh: energy traded peer to peer, kWh.
        grid_import_kwh, grid_export_kwh, load_kwh, pv_kwh: the community's
            energy flows in the slot, kWh.
        reported: prosumers whose report arrived.
        missing: prosumers of connected nodes without a report.
        clearing_latency_ms: time the market took to clear, ms.
        absent: prosumers of nodes gone but within their lease.
        held_ms: how long the slot was held open for nodes waiting on the
            learner, ms.
    """

    slot: int
    data_slot: int
    clearing_price_micros: int | None
    matched_kwh: float
    grid_import_kwh: float
    grid_export_kwh: float
    load_kwh: float
    pv_kwh: float
    reported: int
    missing: int
    clearing_latency_ms: float
    absent: int
    held_ms: float

    @property
    def clearing_price_per_kwh(self) -> float | None:
        """The clearing price, currency per kWh, or ``None`` when nothing matched."""
        if self.clearing_price_micros is None:
            return None
        return self.clearing_price_micros / MICROS_PER_UNIT

    @classmethod
    def from_pb(cls, pb: Any) -> SlotSummary:
        values = {f.name: getattr(pb, f.name) for f in dataclasses.fields(cls) if f.name != "clearing_price_micros"}
        price = pb.clearing_price_micros if pb.HasField("clearing_price_micros") else None
        return cls(clearing_price_micros=price, **values)


@dataclass(frozen=True)
class Notice:
    """A human-readable market event (a node joined, a control call…), as
    ``Market.watch(notices=True)`` yields it."""

    text: str


@dataclass(frozen=True)
class TrainerStatus:
    """The trainer's learning progress (``LearnerService.Status``).

    Attributes:
        version: the newest published policy version (1 = the initial policy).
        updates_done: PPO updates completed.
        samples_per_s: samples per second of the last update.
        policy_lag: mean over accepted samples of (current version − the
            sample's version) at ingestion, versions.
        mode: ``"sync"`` or ``"async"``.
        samples_total: samples accepted in all.
        batches_stale: experience batches dropped as too old.
        subscribers: agent-nodes subscribed to the policy stream now.
        mean_episode_return: mean episode return of the last update's
            rollouts (NaN before any).
    """

    version: int
    updates_done: int
    samples_per_s: float
    policy_lag: float
    mode: str
    samples_total: int
    batches_stale: int
    subscribers: int
    mean_episode_return: float

    @classmethod
    def from_pb(cls, pb: Any) -> TrainerStatus:
        return cls(**{f.name: getattr(pb, f.name) for f in dataclasses.fields(cls)})
