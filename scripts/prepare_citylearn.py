#!/usr/bin/env python3
"""Turns the CityLearn Challenge 2022 data inside the CityLearn 1.8.0 wheel
into peergrid's one tidy CSV, data/citylearn2022/fontana_hourly.csv.

Owns: reading the wheel as a zip (never installing it), the time alignment,
the consumer rule and the rounding. Must never invent data: every value
written is a measured value, rounded, or a zero for a home declared a
consumer (documented in PROVENANCE.md). Python standard library only.
"""

import argparse
import csv
import io
import json
import zipfile
from pathlib import Path

DATA_DIR = "citylearn/data/citylearn_challenge_2022_phase_all"
LICENSE_MEMBER = "CityLearn-1.8.0.dist-info/LICENSE"
N_BUILDINGS = 17
HOURS_PER_YEAR = 8760

# Below this annual yield a home's PV is a meter artefact, not a PV system:
# Building_15 measures 29 kWh/kWp/yr (~2% of its neighbours), 28 of those in
# the file's last month and the rest scattered noise. Building_14 (about 490 kWh/kWp/yr) is
# small but steady all year, so it stays a prosumer.
CONSUMER_MAX_YIELD_KWH_PER_KWP = 100.0

LOAD_COL = "Equipment Electric Power [kWh]"
SOLAR_COL = "Solar Generation [W/kW]"
PRICE_COL = "Electricity Pricing [$]"
CARBON_COL = "kg_CO2/kWh"

# `building` is the CityLearn number (1..17), not "Building_1": the name is
# repeated on every row and would add 1.3 MB; the loader rebuilds the name.
HEADER = [
    "building", "slot", "month", "day_of_week", "hour",
    "load_kwh", "pv_kwh_per_kwp", "pv_kwp", "price_per_kwh", "carbon_kg_per_kwh",
]


def read_csv(wheel: zipfile.ZipFile, name: str) -> list[dict]:
    with wheel.open(f"{DATA_DIR}/{name}") as raw:
        rows = list(csv.DictReader(io.TextIOWrapper(raw, encoding="utf-8")))
    if len(rows) != HOURS_PER_YEAR:
        raise SystemExit(f"{name}: expected {HOURS_PER_YEAR} rows, found {len(rows)}")
    return rows


def fmt(x: float) -> str:
    """4 decimals, trailing zeros dropped: keeps the file small and exact enough
    (0.1 Wh for energy) and stable across runs."""
    if x != x or x in (float("inf"), float("-inf")):
        raise SystemExit(f"non-finite value {x}")
    s = f"{x:.4f}".rstrip("0").rstrip(".")
    return "0" if s in ("-0", "") else s


def calendar(rows: list[dict]) -> list[tuple[int, int, int]]:
    """(month, day_of_week 0=Mon, hour 0..23 at interval start) per slot.

    CityLearn labels hours 1..24, but the data behave as if hour h is the
    interval *starting* at h o'clock, with hour 24 being 00:00-01:00 of the
    next day (see PROVENANCE.md: PV sunrise/sunset and the 4-9 pm TOU peak).
    So an Hour-24 row takes month and day type from the row after it.
    """
    out = []
    for i, row in enumerate(rows):
        hour = int(float(row["Hour"]))
        label = rows[i + 1] if hour == 24 else row
        if hour == 24 and int(float(label["Hour"])) != 1:
            raise SystemExit(f"row {i}: Hour 24 not followed by Hour 1")
        day_type = int(float(label["Day Type"]))
        if not 1 <= day_type <= 7:
            # 8 (holiday) would hide the weekday; the 2022 data have none.
            raise SystemExit(f"row {i}: Day Type {day_type} not a weekday")
        out.append((int(float(label["Month"])), day_type - 1, hour % 24))
    check_calendar(out)
    return out


def check_calendar(cal: list[tuple[int, int, int]]) -> None:
    """Slots must be consecutive hours starting Monday 00:00."""
    for slot, (_, dow, hour) in enumerate(cal):
        if hour != slot % 24 or dow != (slot // 24) % 7:
            raise SystemExit(f"slot {slot}: hour {hour} dow {dow} breaks the hourly sequence")


def building_series(wheel, schema, b: int, cal) -> tuple[list[float], list[float], float]:
    name = f"Building_{b}"
    rows = read_csv(wheel, f"{name}.csv")
    if calendar(rows) != cal:
        raise SystemExit(f"{name}: calendar differs from Building_1")
    load = [float(r[LOAD_COL]) for r in rows]
    pv = [float(r[SOLAR_COL]) / 1000.0 for r in rows]
    if min(load) < 0 or min(pv) < 0:
        raise SystemExit(f"{name}: negative energy")
    kwp = float(schema["buildings"][name]["pv"]["attributes"]["nominal_power"])
    if sum(pv) < CONSUMER_MAX_YIELD_KWH_PER_KWP:
        print(f"{name}: {sum(pv):.1f} kWh/kWp/yr -> consumer (pv_kwp 0)")
        return load, [0.0] * len(pv), 0.0
    print(f"{name}: load {sum(load):.0f} kWh/yr, PV {sum(pv):.0f} kWh/kWp/yr, {kwp} kWp")
    return load, pv, kwp


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--wheel", required=True, type=Path)
    ap.add_argument("--out", required=True, type=Path)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    with zipfile.ZipFile(args.wheel) as wheel:
        schema = json.loads(wheel.read(f"{DATA_DIR}/schema.json"))
        cal = calendar(read_csv(wheel, "Building_1.csv"))
        price = [float(r[PRICE_COL]) for r in read_csv(wheel, "pricing.csv")]
        carbon = [float(r[CARBON_COL]) for r in read_csv(wheel, "carbon_intensity.csv")]
        (args.out / "LICENSE").write_bytes(wheel.read(LICENSE_MEMBER))

        # newline="\n": the Rust loader reports line numbers; keep one byte per line end.
        with open(args.out / "fontana_hourly.csv", "w", newline="\n", encoding="utf-8") as f:
            w = csv.writer(f, lineterminator="\n")
            w.writerow(HEADER)
            for b in range(1, N_BUILDINGS + 1):
                load, pv, kwp = building_series(wheel, schema, b, cal)
                for slot, (month, dow, hour) in enumerate(cal):
                    w.writerow([
                        b, slot, month, dow, hour,
                        fmt(load[slot]), fmt(pv[slot]), fmt(kwp), fmt(price[slot]), fmt(carbon[slot]),
                    ])


if __name__ == "__main__":
    main()
