"""Codec benchmark: encode/decode speed and bytes per value per codec and data set (seeded).

``python perf/codecs.py`` prints one JSON object per line:

* ``{"dataset", "codec", "blocks", "values", "bytes_per_value", "encode_values_per_s",
  "decode_values_per_s", "chosen"}`` for each data set with ``codec: "auto"`` (what
  ``rusts.codecs.encode`` picks, ``chosen`` counts the tags it picked) and for every codec that
  applies to the data set, forced;
* ``{"dataset", "codec": "auto", "block_size", "blocks", "encode_us_per_block",
  "decode_us_per_block", "bytes_per_value"}`` for small blocks (``--small-sizes``, default 3
  and 16 values: the fixed cost per call that segments of many small series and queries over
  many small blocks pay);
* one ``{"dataset": "tsbs_cpu_whole", ...}`` line: the TSBS-shaped cpu data (100 hosts x 24 h at
  10 s, 10 float fields with 2 decimals, timestamps included) through ``encode()`` in 4,096-value
  blocks per series with ``compression=default``, bytes per field value.

Speeds are single-threaded, best of ``--repeat`` runs, over ``--blocks`` blocks of
``--block-size`` values. Block bytes include the framing (header and CRC).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import pathlib
import sys
import time

import numpy as np

from rusts.codecs import Tag, decode, encode
from rusts.errors import CodecError

T0 = 1_451_606_400_000_000_000
STEP = 10_000_000_000


def _tsbs_module():
    """perf/tsbs.py (the generator the peer comparison loads), if present."""
    path = pathlib.Path(__file__).with_name("tsbs.py")
    if not path.exists():
        return None
    spec = importlib.util.spec_from_file_location("rusts_perf_tsbs", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def tsbs_walks(n_hosts: int, n_steps: int, seed: int = 7, decimals: int | None = 2) -> np.ndarray:
    """Clamped random walks in [0, 100] (steps, hosts, 10 fields), as perf/tsbs.py makes them."""
    mod = _tsbs_module()
    if mod is not None and decimals == 2:
        return mod.values(n_hosts, n_steps, seed)
    rng = np.random.default_rng(seed)
    steps = rng.normal(0, 1.5, size=(n_steps, n_hosts, 10))
    start = rng.uniform(0, 100, size=(1, n_hosts, 10))
    walk = np.clip(start + np.cumsum(steps, axis=0), 0, 100)
    return walk if decimals is None else np.round(walk, decimals)


def datasets(n: int, seed: int) -> dict[str, tuple[np.ndarray, dict]]:
    """name -> (values, encode options); each a concatenation of independent series."""
    rng = np.random.default_rng(seed)
    ts = T0 + np.arange(n, dtype=np.int64) * STEP
    hosts = max(1, n // 8640 + 1)
    walks2 = tsbs_walks(hosts, 8640, seed).transpose(1, 2, 0).reshape(-1)[:n]
    walks = tsbs_walks(hosts, 8640, seed, decimals=None).transpose(1, 2, 0).reshape(-1)[:n]
    change = rng.random(n) < 0.05
    gauge = np.round(21.5 + np.cumsum(np.where(change, rng.choice([-0.1, 0.1], n), 0.0)), 1)
    counter = np.cumsum(rng.poisson(1500, n)).astype(np.int64)
    statuses = np.array(["ok", "warn", "crit", "unknown", "maintenance", "degraded", "starting",
                         "stopping", "paused", "error"], dtype=object)
    low = statuses[rng.integers(0, len(statuses), n)]
    high = np.array([f"req-{x:016x}" for x in rng.integers(0, 2 ** 63, n)], dtype=object)
    return {
        "ts_regular_10s": (ts, dict(timestamps=True)),
        "ts_jitter_10s": (ts + rng.normal(0, 2e6, n).astype(np.int64), dict(timestamps=True)),
        "cpu_walk_2dec": (walks2, {}),
        "cpu_walk_full": (walks, {}),
        "gauge_slow": (gauge, {}),
        "counter_int": (counter, {}),
        "strings_low_card": (low, {}),
        "strings_high_card": (high, {}),
        "bools": (rng.random(n) < 0.5, {}),
    }


CODECS = {
    "int": [Tag.RAW, Tag.FOR, Tag.DELTA_FOR, Tag.DOD_FOR, Tag.ZIGZAG_VARINT,
            Tag.DELTA_ZIGZAG_VARINT, Tag.DELTA_ZERORUN, Tag.ZIGZAG_RICE],
    "float": [Tag.RAW, Tag.ALP, Tag.GORILLA],
    "str": [Tag.STR_DICT, Tag.STR_RAW],
    "bool": [Tag.BOOL_BITS],
}


def _kind(values: np.ndarray) -> str:
    return {"i": "int", "u": "int", "f": "float", "b": "bool", "O": "str"}[values.dtype.kind]


def measure(name: str, values: np.ndarray, opts: dict, codec, block: int, repeat: int) -> dict:
    chunks = [values[i:i + block] for i in range(0, len(values), block)]
    kw = dict(opts)
    if codec is not None:
        kw["codec"] = codec
    try:
        blocks = [encode(c, **kw) for c in chunks]
    except CodecError as exc:
        return {"dataset": name, "codec": Tag(codec).name, "skipped": str(exc)}
    enc_t = dec_t = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        for c in chunks:
            encode(c, **kw)
        enc_t = min(enc_t, time.perf_counter() - t)
        t = time.perf_counter()
        for b in blocks:
            decode(b)
        dec_t = min(dec_t, time.perf_counter() - t)
    for c, b in zip(chunks, blocks):  # the figures only count if the data come back
        out = decode(b)
        ok = (out.view(np.uint64) == c.view(np.uint64)).all() if c.dtype.kind == "f" else \
            out.tolist() == c.tolist()
        assert ok, f"{name}/{codec}: round trip failed"
    chosen: dict[str, int] = {}
    for b in blocks:
        chosen[Tag(b[0]).name] = chosen.get(Tag(b[0]).name, 0) + 1
    nbytes = sum(len(b) for b in blocks)
    return {"dataset": name, "codec": "auto" if codec is None else Tag(codec).name,
            "blocks": len(blocks), "values": len(values),
            "bytes_per_value": round(nbytes / len(values), 4),
            "encode_values_per_s": round(len(values) / enc_t),
            "decode_values_per_s": round(len(values) / dec_t),
            "chosen": chosen}


def measure_small(name: str, values: np.ndarray, opts: dict, size: int, count: int,
                  repeat: int) -> dict:
    """Per-call cost of ``encode`` / ``decode`` on ``count`` blocks of ``size`` values."""
    chunks = [values[i:i + size] for i in range(0, min(len(values), count * size), size)]
    blocks = [encode(c, **opts) for c in chunks]
    enc_t = dec_t = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        for c in chunks:
            encode(c, **opts)
        enc_t = min(enc_t, time.perf_counter() - t)
        t = time.perf_counter()
        for b in blocks:
            decode(b)
        dec_t = min(dec_t, time.perf_counter() - t)
    for c, b in zip(chunks, blocks):
        out = decode(b)
        ok = (out.view(np.uint64) == c.view(np.uint64)).all() if c.dtype.kind == "f" else \
            out.tolist() == c.tolist()
        assert ok, f"{name}/small {size}: round trip failed"
    nvalues = sum(len(c) for c in chunks)
    return {"dataset": name, "codec": "auto", "block_size": size, "blocks": len(chunks),
            "encode_us_per_block": round(enc_t / len(chunks) * 1e6, 2),
            "decode_us_per_block": round(dec_t / len(chunks) * 1e6, 2),
            "bytes_per_value": round(sum(len(b) for b in blocks) / nvalues, 3)}


def tsbs_whole(n_hosts: int, hours: float, block: int, seed: int) -> dict:
    """The TSBS cpu data set as a whole: per host, the timestamp column and 10 field columns."""
    n_steps = int(hours * 360)
    vals = tsbs_walks(n_hosts, n_steps, seed)  # (steps, hosts, fields)
    ts = T0 + np.arange(n_steps, dtype=np.int64) * STEP
    ts_bytes = field_bytes = 0
    t = time.perf_counter()
    nblocks = 0
    for h in range(n_hosts):
        for i in range(0, n_steps, block):
            ts_bytes += len(encode(ts[i:i + block], timestamps=True, compression="default"))
            nblocks += 1
        for f in range(vals.shape[2]):
            col = np.ascontiguousarray(vals[:, h, f])
            for i in range(0, n_steps, block):
                field_bytes += len(encode(col[i:i + block], compression="default"))
                nblocks += 1
    enc_s = time.perf_counter() - t
    n_values = n_steps * n_hosts * vals.shape[2]
    return {"dataset": "tsbs_cpu_whole", "hosts": n_hosts, "hours": hours, "block": block,
            "compression": "default", "field_values": n_values, "blocks": nblocks,
            "bytes_total": ts_bytes + field_bytes, "bytes_timestamps": ts_bytes,
            "bytes_per_value": round((ts_bytes + field_bytes) / n_values, 4),
            "bytes_per_value_fields_only": round(field_bytes / n_values, 4),
            "encode_seconds": round(enc_s, 2),
            "encode_values_per_s": round((n_values + n_steps * n_hosts) / enc_s)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--block-size", type=int, default=4096)
    ap.add_argument("--blocks", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--only", default=None, help="comma-separated data set names")
    ap.add_argument("--auto-only", action="store_true", help="skip the forced-codec rows")
    ap.add_argument("--small-sizes", default="3,16",
                    help="comma-separated small block sizes ('' skips the small-block rows)")
    ap.add_argument("--tsbs-hosts", type=int, default=100, help="0 skips the whole-data-set row")
    ap.add_argument("--tsbs-hours", type=float, default=24)
    a = ap.parse_args()
    n = a.block_size * a.blocks
    only = set(a.only.split(",")) if a.only else None
    for name, (values, opts) in datasets(n, a.seed).items():
        if only and name not in only:
            continue
        print(json.dumps(measure(name, values, opts, None, a.block_size, a.repeat)), flush=True)
        if a.auto_only:
            continue
        for codec in CODECS[_kind(values)]:
            print(json.dumps(measure(name, values, opts, codec, a.block_size, a.repeat)),
                  flush=True)
    sizes = [int(x) for x in a.small_sizes.split(",") if x]
    for size in sizes:
        for name, (values, opts) in datasets(max(n, 300 * size), a.seed).items():
            if only and name not in only:
                continue
            print(json.dumps(measure_small(name, values, opts, size, 300, a.repeat)), flush=True)
    if a.tsbs_hosts:
        print(json.dumps(tsbs_whole(a.tsbs_hosts, a.tsbs_hours, a.block_size, a.seed)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
