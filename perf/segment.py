"""Segment write/read throughput and size on TSBS-cpu-shaped data; open() time of a wide segment.

Run: ``.venv/bin/python perf/segment.py [--hosts 100] [--rows 8640] [--open-series 100000]``.
Prints one JSON object. Seeded.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import numpy as np

from rusts.model import Column, FieldType
from rusts.storage.segment import SegmentReader, SeriesData, write_segment

FIELDS = ["usage_user", "usage_system", "usage_idle", "usage_nice", "usage_iowait", "usage_irq",
          "usage_softirq", "usage_steal", "usage_guest", "usage_guest_nice"]


def tsbs(hosts: int, rows: int, seed: int) -> list[SeriesData]:
    rng = np.random.default_rng(seed)
    t0 = 1_451_606_400_000_000_000
    ts = t0 + np.arange(rows, dtype=np.int64) * 10_000_000_000
    out = []
    for h in range(hosts):
        cols = {}
        for f in FIELDS:
            walk = np.clip(50 + np.cumsum(rng.normal(0, 1, rows)), 0, 100)
            cols[f] = Column(FieldType.FLOAT, np.round(walk, 2))
        out.append(SeriesData(h + 1, f"cpu,hostname=host_{h},region=eu-west-1", ts, cols))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--hosts", type=int, default=100)
    ap.add_argument("--rows", type=int, default=8640)
    ap.add_argument("--open-series", type=int, default=100_000)
    ap.add_argument("--compression", default="default")
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    series = tsbs(a.hosts, a.rows, a.seed)
    values = a.hosts * a.rows * len(FIELDS)
    res: dict = {"hosts": a.hosts, "rows": a.rows, "fields": len(FIELDS), "values": values,
                 "compression": a.compression}
    with tempfile.TemporaryDirectory() as d:
        p = os.path.join(d, "tsbs.seg")
        t = time.perf_counter()
        info = write_segment(p, series, compression=a.compression)
        dt = time.perf_counter() - t
        res["write_s"] = round(dt, 3)
        res["write_values_per_s"] = round(values / dt)
        res["file_bytes"] = info.size
        res["bytes_per_value"] = round(info.size / values, 4)
        res["bytes_per_value_incl_timestamps"] = round(info.size / (values + a.hosts * a.rows), 4)
        t = time.perf_counter()
        r = SegmentReader.open(p)
        res["open_ms"] = round((time.perf_counter() - t) * 1e3, 3)
        t = time.perf_counter()
        for s in r.series_ids.tolist():
            r.read(s)
        dt = time.perf_counter() - t
        res["read_all_fields_values_per_s"] = round(values / dt)
        t = time.perf_counter()
        for s in r.series_ids.tolist():
            r.read(s, ["usage_user"])
        dt = time.perf_counter() - t
        res["read_one_field_values_per_s"] = round(a.hosts * a.rows / dt)
        t = time.perf_counter()
        for s in r.series_ids.tolist():
            r.field_stats(s, "usage_user")
        res["field_stats_us_per_series"] = round((time.perf_counter() - t) / a.hosts * 1e6, 2)
        r.close()

        if a.open_series:
            # wide segment: many series with few rows (high cardinality), 2 fields each
            n = a.open_series
            ts = np.arange(3, dtype=np.int64)
            col = {"a": Column(FieldType.FLOAT, np.array([1.0, 2.0, 3.0])),
                   "b": Column(FieldType.INTEGER, np.array([1, 2, 3]))}
            wide = [SeriesData(i + 1, f"m,host=h{i}", ts, col) for i in range(n)]
            p2 = os.path.join(d, "wide.seg")
            t = time.perf_counter()
            info = write_segment(p2, wide)
            res["wide_series"] = n
            res["wide_write_s"] = round(time.perf_counter() - t, 3)
            res["wide_file_bytes"] = info.size
            times = []
            for _ in range(5):
                t = time.perf_counter()
                r = SegmentReader.open(p2)
                times.append(time.perf_counter() - t)
                r.close()
            res["wide_open_ms"] = round(min(times) * 1e3, 3)
            r = SegmentReader.open(p2)
            t = time.perf_counter()
            r.series_keys()
            res["wide_series_keys_ms"] = round((time.perf_counter() - t) * 1e3, 3)
            r.close()
    print(json.dumps(res))


if __name__ == "__main__":
    main()
