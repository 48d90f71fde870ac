"""CPU per row of each stage of an import, in one process, on the trips shape (perf/trips.py).

Runs the stages of ``rusts-import`` and of the server's write path one after the other on the
same Parquet file, single-threaded, and prints one JSON object of CPU microseconds per row
(process time, best of ``--repeat``):

- ``read_normalise``: Parquet record batches read and normalised (rusts.importer.pipeline);
- ``to_write_batch``: a normalised batch grouped by series into a columnar WriteBatch;
- ``arrow_ipc_decode``: the server's ``/api/v1/write/arrow`` decode of the importer's body
  (Arrow IPC stream to WriteBatch, rusts.importer.arrow_ingest);
- ``wal_record``: the WAL payload of each batch (REST only: direct mode has the WAL off);
- ``memtable_insert``: appending the batches to a memtable without sealing (direct mode);
- ``memtable_seal``: sealing them every 32k rows, as a server does for queries of fresh data;
- ``flush_payload``: the table's columns for the flush worker, and their pickling (both sides);
- ``table_partitions``: the payload cut into per-partition, per-series data (in the worker);
- ``segment_encode``: the segments written (rusts.storage.segment_writer.write_segments).

    python perf/import_stages.py [--rows 1250000] [--repeat 2] [--parquet FILE]
"""

from __future__ import annotations

import argparse
import importlib
import io
import json
import os
import pathlib
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import trips  # noqa: E402

from rusts.importer import arrow_ingest  # noqa: E402
from rusts.importer.mapping import to_write_batch  # noqa: E402
from rusts.importer.pipeline import Options, units  # noqa: E402
from rusts.memory.sealed import table_partitions  # noqa: E402
from rusts.memory.tables import Table  # noqa: E402
from rusts.storage import flushproc  # noqa: E402
from rusts.storage.segment_writer import write_segments  # noqa: E402
from rusts.storage.walrecord import encode_batch  # noqa: E402

DAY = 86_400 * 10**9


def best(fn, repeat: int):
    out, t = None, float("inf")
    for _ in range(repeat):
        c0 = time.process_time()
        out = fn()
        t = min(t, time.process_time() - c0)
    return out, t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_250_000)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--parquet", help="reuse this Parquet file (written first if missing)")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="rusts-import-stages-") as tmp:
        path = pathlib.Path(a.parquet) if a.parquet else pathlib.Path(tmp) / "trips.parquet"
        if not path.exists():
            importlib.import_module("import").write_parquet(path, a.rows)  # perf/import.py's file
        opts = Options("parquet", (str(path),), measurement="trips", tags=tuple(trips.TAGS))
        us: dict[str, float] = {}
        got, t = best(lambda: list(units(opts)), a.repeat)
        rows = sum(u.rows for u in got)
        us["read_normalise"] = t
        batches, t = best(lambda: [to_write_batch(u.norm.batch, u.plan, u.norm.rows) for u in got], a.repeat)
        us["to_write_batch"] = t
        import pyarrow as pa

        bodies = []
        for u in got:
            sink = pa.BufferOutputStream()
            with pa.ipc.new_stream(sink, u.norm.batch.schema) as w:
                w.write_batch(u.norm.batch)
            bodies.append(sink.getvalue().to_pybytes())
        args = {"measurement": "trips", "tags": ",".join(trips.TAGS)}
        _, us["arrow_ipc_decode"] = best(lambda: [arrow_ingest.decode(b, args) for b in bodies], a.repeat)
        _, us["wal_record"] = best(lambda: [encode_batch(b) for b in batches], a.repeat)
        keys = sorted({k for b in batches for f in b.frames for k in f.keys})
        sid_of = {k: i + 1 for i, k in enumerate(keys)}

        def fill(seal: bool) -> Table:
            t = Table(1)
            if not seal:
                t.seal_rows = 2**62
            for seq, b in enumerate(batches, 1):
                sids = np.array([sid_of[k] for f in b.frames for k in f.keys], dtype=np.uint64)
                t.insert_frames(b.frames, sids, seq)
            return t

        table, us["memtable_insert"] = best(lambda: fill(False), a.repeat)
        _, t_seal = best(lambda: fill(True), a.repeat)
        us["memtable_seal"] = max(0.0, t_seal - us["memtable_insert"])

        def payload():  # built, sent through the worker pipe's framing, received
            pipe = io.BytesIO()
            flushproc._send(pipe, table.flush_payload())
            pipe.seek(0)
            return flushproc._recv(pipe)

        p, us["flush_payload"] = best(payload, a.repeat)
        parts, us["table_partitions"] = best(lambda: table_partitions(p, DAY), a.repeat)
        items = [(os.path.join(tmp, f"{k}.seg"), v) for k, v in sorted(parts.items())]
        opts_seg = dict(compression="default", tier="hot", block_rows=4096, block_time_ns=3600 * 10**9,
                        stats_interval_ns=3600 * 10**9)
        _, us["segment_encode"] = best(lambda: write_segments(items, **opts_seg), a.repeat)
        out = {"rows": rows, "cpu_us_per_row": {k: round(v / rows * 1e6, 3) for k, v in us.items()}}
        direct = ("read_normalise", "to_write_batch", "memtable_insert", "flush_payload", "table_partitions",
                  "segment_encode")
        rest = ("arrow_ipc_decode", "wal_record", "memtable_insert", "memtable_seal", "flush_payload",
                "table_partitions", "segment_encode")
        out["direct_sum"] = round(sum(out["cpu_us_per_row"][k] for k in direct), 3)
        out["rest_server_sum"] = round(sum(out["cpu_us_per_row"][k] for k in rest), 3)
        out["rest_client_sum"] = round(out["cpu_us_per_row"]["read_normalise"], 3)
        print(json.dumps(out))


if __name__ == "__main__":
    main()
