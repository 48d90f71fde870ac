"""Shard assignment: stable, complete, per strategy, and splitting keeps every row once."""

from __future__ import annotations

import numpy as np

from rusts.cluster.sharding import Sharder, hash_strings
from rusts.protocols.line_protocol import parse

DAY = 86_400 * 10**9


def _body(n=600):
    return "\n".join(f"cpu,host=h{i % 37},dc=d{i % 3} v={i}i {i * 3_600_000_000_000}" for i in range(n)) + \
        "\n" + "\n".join(f"mem,host=h{i % 5} free={i}.5 {i * 1000}" for i in range(50))


def _rows(batch):
    out = []
    for s in batch.series:
        for t, i in zip(s.timestamps.tolist(), range(len(s))):
            vals = tuple(sorted((k, c.values[i].item()) for k, c in s.columns.items()
                                if c.mask is None or c.mask[i]))
            out.append((s.key, t, vals))
    return sorted(out)


def test_hash_is_stable_across_processes():
    # xxh64 of the UTF-8 bytes, seed 0: fixed values, never Python's salted hash()
    assert hash_strings(["cpu,host=a"]).tolist() == hash_strings(["cpu,host=a"]).tolist()
    assert hash_strings([""]).tolist() == [0xEF46DB3751D8E999]


def test_split_keeps_every_row_exactly_once_for_every_strategy():
    batch = parse(_body().encode())
    for strategy in ("BySeries", "ByMeasurement", "ByTime", "Composite"):
        sh = Sharder(strategy, 16, DAY)
        parts = sh.split(batch)
        assert all(0 <= s < 16 for s in parts)
        got = sorted(r for p in parts.values() for r in _rows(p))
        assert got == _rows(batch), strategy


def test_by_series_puts_a_series_in_one_shard_and_spreads_series():
    sh = Sharder("BySeries", 16, DAY)
    parts = sh.split(parse(_body().encode()))
    where: dict[str, set] = {}
    for s, p in parts.items():
        for ser in p.series:
            where.setdefault(ser.key, set()).add(s)
    assert all(len(v) == 1 for v in where.values())
    assert len(parts) >= 10  # 42 series over 16 shards


def test_by_measurement_and_by_time():
    sh = Sharder("ByMeasurement", 16, DAY)
    parts = sh.split(parse(_body().encode()))
    ms = {s: {ser.measurement for ser in p.series} for s, p in parts.items()}
    assert all(len(v) == 1 for v in ms.values()) and len(parts) <= 2
    assert sh.shards_for("cpu", 0, 10) == [sh.measurement_shard("cpu")]
    st = Sharder("ByTime", 16, DAY)
    for s, p in st.split(parse(_body().encode())).items():
        for ser in p.series:
            assert set(((ser.timestamps // DAY) % 16).tolist()) == {s}
    assert st.shards_for("cpu", 0, DAY - 1) == [0]
    assert st.shards_for("cpu", 3 * DAY, 5 * DAY) == [3, 4, 5]
    assert st.shards_for("cpu", 0, 40 * DAY) == list(range(16))


def test_composite_moves_a_series_to_the_next_shard_each_bucket():
    sh = Sharder("Composite", 16, DAY)
    batch = parse("\n".join(f"cpu,host=a v=1 {d * DAY}" for d in range(20)).encode())
    frame = batch.frames[0]
    shards = sh.frame_row_shards(frame)
    assert np.array_equal(np.diff(shards) % 16, np.ones(19, np.int64))
