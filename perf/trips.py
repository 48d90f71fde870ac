"""The trips workload of the original RusTs benchmark, synthesised (seeded).

Shape (as the original README describes its NYC FHVHV November 2025 data): 1,250,000 rows of
measurement ``trips``, 2 series (tags ``hvfhs_license_num``, ``dispatching_base_num``: HV0003/B03404
about 72 % of rows, HV0005/B03406 the rest), 30 days, 17 fields: 10 float, 2 integer, 5 string.
Values follow plausible distributions (log-normal miles, fares tied to miles, mostly-zero tolls and
airport fees, Y/N flags) so filters such as ``trip_miles > 0`` select realistic fractions.

``python perf/trips.py --out /tmp/trips.lp`` writes line protocol and prints a JSON summary; other
perf scripts import :func:`generate` (columnar numpy arrays) and :func:`lines`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

START = 1761955200 * 10**9  # 2025-11-01T00:00:00Z
DAYS = 30
SERIES = (("HV0003", "B03404", 0.72), ("HV0005", "B03406", 0.28))
FLOAT_FIELDS = ["trip_miles", "trip_time", "base_passenger_fare", "tolls", "bcf", "sales_tax",
                "congestion_surcharge", "airport_fee", "tips", "driver_pay"]
INT_FIELDS = ["PULocationID", "DOLocationID"]
STRING_FIELDS = ["originating_base_num", "shared_request_flag", "shared_match_flag", "access_a_ride_flag",
                 "wav_request_flag"]
TAGS = ["dispatching_base_num", "hvfhs_license_num"]


def generate(rows: int = 1_250_000, seed: int = 11) -> dict:
    """Columnar data: ``time`` (int64 ns, sorted within a series), tags and fields per row.

    Returns a dict of numpy arrays (strings as object arrays); rows are grouped by series.
    """
    rng = np.random.default_rng(seed)
    span = DAYS * 86400 * 10**9
    parts = []
    for lic, base, share in SERIES:
        n = int(round(rows * share)) if lic == SERIES[0][0] else rows - int(round(rows * SERIES[0][2]))
        t = START + np.unique(rng.integers(0, span, n + 1000))[:n]  # sorted, unique (dups ~ never)
        miles = np.round(rng.lognormal(1.3, 0.8, n), 2)
        miles[rng.random(n) < 0.01] = 0.0
        ttime = np.round(miles * rng.uniform(120, 300, n) + rng.uniform(60, 400, n), 0)
        fare = np.round(2.5 + miles * rng.uniform(1.6, 2.6, n) + rng.normal(0, 2, n).clip(-2, None), 2)
        tolls = np.where(rng.random(n) < 0.08, np.round(rng.uniform(3, 15, n), 2), 0.0)
        bcf = np.round(fare * 0.0275, 2)
        tax = np.round(fare * 0.08875, 2)
        cong = np.where(rng.random(n) < 0.6, 2.75, 0.0)
        airport = np.where(rng.random(n) < 0.07, 2.5, 0.0)
        tips = np.where(rng.random(n) < 0.2, np.round(rng.exponential(4, n), 2), 0.0)
        pay = np.round(fare * rng.uniform(0.6, 0.85, n) + tips, 2)
        pu = rng.integers(1, 266, n)
        do = rng.integers(1, 266, n)
        flags = {f: np.where(rng.random(n) < p, "Y", "N").astype(object)
                 for f, p in zip(STRING_FIELDS[1:], (0.05, 0.02, 0.01, 0.03))}
        origin = np.full(n, base, dtype=object)
        parts.append({
            "time": t.astype(np.int64), "hvfhs_license_num": np.full(n, lic, dtype=object),
            "dispatching_base_num": np.full(n, base, dtype=object),
            "trip_miles": miles, "trip_time": ttime, "base_passenger_fare": fare, "tolls": tolls, "bcf": bcf,
            "sales_tax": tax, "congestion_surcharge": cong, "airport_fee": airport, "tips": tips,
            "driver_pay": pay, "PULocationID": pu.astype(np.int64), "DOLocationID": do.astype(np.int64),
            "originating_base_num": origin, **flags,
        })
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def lines(data: dict) -> list[bytes]:
    """Line protocol, one line per row (floats as written by repr, ints with ``i``)."""
    n = len(data["time"])
    cols = []
    for f in FLOAT_FIELDS:
        cols.append([f"{f}={x!r}" for x in data[f].tolist()])
    for f in INT_FIELDS:
        cols.append([f"{f}={x}i" for x in data[f].tolist()])
    for f in STRING_FIELDS:
        cols.append([f'{f}="{x}"' for x in data[f].tolist()])
    lic = data["hvfhs_license_num"].tolist()
    base = data["dispatching_base_num"].tolist()
    ts = data["time"].tolist()
    out = []
    for k in range(n):
        out.append(f"trips,dispatching_base_num={base[k]},hvfhs_license_num={lic[k]} "
                   f"{','.join(c[k] for c in cols)} {ts[k]}".encode())
    return out


def cached_lines(rows: int = 1_250_000, path: str | None = None) -> list[bytes]:
    path = path or f"/tmp/rusts-trips-{rows}.lp"
    if os.path.exists(path):
        with open(path, "rb") as f:
            return f.read().split(b"\n")
    ls = lines(generate(rows))
    with open(path + ".tmp", "wb") as f:
        f.write(b"\n".join(ls))
    os.replace(path + ".tmp", path)
    return ls


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, default=1_250_000)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    t = time.perf_counter()
    ls = cached_lines(a.rows, a.out)
    print(json.dumps({"lines": len(ls), "bytes": sum(len(x) + 1 for x in ls),
                      "seconds": round(time.perf_counter() - t, 2)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
