"""Segment encoding CPU on the trips shape (perf/trips.py): hourly time-aligned blocks of ~1,250
rows, 2 series, 17 fields; batch-encoded (the segment writer's default: rusts.codecs.encode_blocks
over every block of a column), per block with codec hints (the writer before), and per block
with the full codec search.

    python perf/segment_trips.py [--days 3]

Prints one JSON object: rows, CPU microseconds per row (best of 3, process time) and the
segment's bytes, for each mode.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import trips  # noqa: E402

from rusts import codecs  # noqa: E402
from rusts.model import Column, FieldType  # noqa: E402
from rusts.storage import segment_writer  # noqa: E402
from rusts.storage.segment import SeriesData, write_segment  # noqa: E402


def series(days: int) -> list[SeriesData]:
    d = trips.generate(1_250_000)
    n1 = int(round(1_250_000 * trips.SERIES[0][2]))
    lim = trips.START + days * 86_400 * 10**9
    out = []
    for sid, (a, b) in enumerate([(0, n1), (n1, 1_250_000)], 1):
        keep = d["time"][a:b] < lim
        cols = {}
        for names, ft in ((trips.FLOAT_FIELDS, FieldType.FLOAT), (trips.INT_FIELDS, FieldType.INTEGER),
                          (trips.STRING_FIELDS, FieldType.STRING)):
            for f in names:
                cols[f] = Column(ft, d[f][a:b][keep])
        out.append(SeriesData(sid, f"trips,s={sid}", d["time"][a:b][keep], cols))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--days", type=int, default=3)
    a = ap.parse_args()
    data = series(a.days)
    rows = sum(len(s) for s in data)
    opts = dict(compression="default", tier="hot", block_rows=4096, block_time_ns=3600 * 10**9)
    out: dict = {"rows": rows}
    real_hint = codecs.Hint
    real_pre = segment_writer.pre_encode
    with tempfile.TemporaryDirectory() as tmp:
        for mode in ("batch", "hints", "full_search"):
            if mode != "batch":  # no batch: every block through codecs.encode
                segment_writer.pre_encode = lambda series, **kw: [None] * len(series)
            if mode == "full_search":
                codecs.Hint = lambda: None  # the writer then asks for the full search per block
            try:
                best = float("inf")
                for _ in range(3):
                    c0 = time.process_time()
                    info = write_segment(os.path.join(tmp, f"{mode}.seg"), data, **opts)
                    best = min(best, time.process_time() - c0)
            finally:
                codecs.Hint = real_hint
                segment_writer.pre_encode = real_pre
            out[mode] = {"cpu_us_per_row": round(best / rows * 1e6, 3), "bytes": info.size}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
