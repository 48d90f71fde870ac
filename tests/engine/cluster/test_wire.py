"""Shard message encoding (rusts.cluster.wire): round trips into frames, the previous encoding
still read, the shard WAL reading stored messages, corruption refused."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rusts.cluster import wire
from rusts.cluster.sharding import Sharder
from rusts.errors import CorruptionError
from rusts.model import Column, FieldType, SeriesRows, WriteBatch, series_key
from rusts.protocols.line_protocol import parse
from rusts.storage.walrecord import decode_batch, encode_batch
from tests.engine.storage.test_walrecord import i64, text, values_of

name = st.text(min_size=1, max_size=6)


def _column(draw, ftype: FieldType, n: int, masked: bool) -> Column:
    vals = values_of(draw, ftype, n)
    mask = None
    if masked:
        mask = np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n)), dtype=bool)
        mask[0] = True
    return Column(ftype, vals, mask)


@st.composite
def batches(draw) -> WriteBatch:
    """Series of a few measurements, each with its own field layout (some fields masked)."""
    series = []
    for _ in range(draw(st.integers(1, 3))):
        meas = draw(name)
        layout = draw(st.dictionaries(name, st.tuples(st.sampled_from(list(FieldType)), st.booleans()),
                                      min_size=1, max_size=4))
        for tags in draw(st.lists(st.dictionaries(name, text, max_size=3), min_size=1, max_size=4,
                                  unique_by=lambda d: tuple(sorted(d.items())))):
            n = draw(st.integers(1, 5))
            ts = np.array(draw(st.lists(i64, min_size=n, max_size=n)), dtype=np.int64)
            cols = {f: _column(draw, t, n, m) for f, (t, m) in layout.items()}
            tag_pairs = tuple(sorted(tags.items()))
            series.append(SeriesRows(meas, tag_pairs, ts, cols, np.zeros(n, dtype=np.int64)))
    series = list({s.key: s for s in series}.values())  # one entry per series
    return WriteBatch.from_frames(WriteBatch(series).frames)


def _same_values(a: Column, b: Column) -> None:
    """Equal where the value is present (masked-out slots are not data)."""
    assert a.type == b.type
    def present(c):
        return np.ones(len(c.values), dtype=bool) if c.mask is None else np.asarray(c.mask, dtype=bool)

    np.testing.assert_array_equal(present(a), present(b))
    if a.type is FieldType.FLOAT:
        np.testing.assert_array_equal(a.valid(), b.valid())  # NaN == NaN here
    else:
        assert a.valid().tolist() == b.valid().tolist()
    assert b.values.dtype == a.type.dtype


def assert_same_frames(got: WriteBatch, want: WriteBatch) -> None:
    assert len(got.frames) == len(want.frames)
    for g, w in zip(got.frames, want.frames):
        assert list(g.measurements) == list(w.measurements)
        assert [tuple(t) for t in g.tags] == [tuple(t) for t in w.tags]
        assert list(g.keys) == list(w.keys)
        assert g.starts.tolist() == w.starts.tolist()
        assert g.timestamps.tolist() == w.timestamps.tolist()
        assert list(g.columns) == list(w.columns)
        for c in w.columns:
            _same_values(g.columns[c], w.columns[c])


def assert_same_series(got: WriteBatch, want: WriteBatch) -> None:
    """The same points per series (whatever the frame grouping)."""
    def rows(b):
        out = {}
        for s in b.series:
            for i, t in enumerate(s.timestamps.tolist()):
                for f, c in s.columns.items():
                    if c.mask is None or c.mask[i]:
                        v = c.values[i]
                        out.setdefault((s.key, t, f), []).append(
                            (c.type, "nan" if isinstance(v, float) and v != v else v))
        return out

    assert rows(got) == rows(want)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches())
def test_round_trip_gives_the_same_frames(batch):
    data = wire.encode(batch)
    assert data[0] == wire.VERSION
    got = wire.decode(data)
    assert_same_frames(got, batch)
    assert not got.errors
    # the arrays are writable (the write path may reuse them) and do not alias the message
    for f in got.frames:
        f.timestamps[:] = 0
    assert_same_frames(wire.decode(data), batch)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches())
def test_the_previous_encoding_and_the_wal_read_both(batch):
    # messages already in a stream (version 1: the WAL record payload) still decode
    assert_same_series(wire.decode(encode_batch(batch)), batch)
    # a shard WAL stores a version-2 message as it is: replay decodes it
    assert_same_frames(decode_batch(wire.encode(batch)), batch)


def test_line_protocol_split_by_shard_round_trips():
    body = "\n".join(
        [f"cpu,host=h{i % 7},region=r{i % 3} usage={i * 0.5},count={i}i,ok={str(i % 2 == 0).lower()} {1000 + i}"
         for i in range(200)]
        + [f'log,host=h{i % 5} msg="a \\"quoted\\" é {i}",code={i}u {2000 + i}' for i in range(50)]
        + [f"cpu,host=h{i} usage={i}.0 {3000 + i}" for i in range(10)]  # a second layout of cpu
    ).encode()
    batch = parse(body)
    assert not batch.errors
    parts = Sharder("BySeries", 4, 10**9).split(batch)
    for part in parts.values():
        got = wire.decode(wire.encode(part))
        assert_same_frames(got, part)
    merged = WriteBatch.from_frames([f for p in parts.values() for f in wire.decode(wire.encode(p)).frames])
    assert_same_series(merged, batch)
    keys = {k for f in merged.frames for k in f.keys}
    assert series_key("log", (("host", "h3"),)) in keys


def _sample() -> bytes:
    return wire.encode(parse(b'm,t=a f=1.5,s="x",b=true,i=2i 1\nm,t=b f=2.5,s="y",b=false,i=3i 2\n'))


def test_every_truncation_and_trailing_bytes_are_refused():
    data = _sample()
    for n in range(len(data)):
        with pytest.raises(CorruptionError):
            wire.decode(data[:n])
    with pytest.raises(CorruptionError, match="bytes more"):
        wire.decode(data + bytes(8))


def test_unknown_version_and_flags_are_refused():
    data = bytearray(_sample())
    data[0] = 3
    with pytest.raises(CorruptionError, match="version 3"):
        wire.decode(bytes(data))
    data[0] = 2
    data[1] = 1
    with pytest.raises(CorruptionError, match="flags"):
        wire.decode(bytes(data))


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_damaged_messages_decode_or_raise_corruption_only(data):
    raw = bytearray(_sample())
    for _ in range(data.draw(st.integers(1, 3))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    try:
        got = wire.decode(bytes(raw))
    except CorruptionError:
        return
    for f in got.frames:  # whatever decoded is self-consistent
        assert int(f.starts[-1]) == len(f.timestamps)
        for c in f.columns.values():
            assert len(c.values) == len(f.timestamps)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(batches(), min_size=1, max_size=4))
def test_concatenated_messages_decode_to_their_frames_in_order(parts):
    got = wire.decode(wire.concat([wire.encode(b) for b in parts]))
    assert_same_frames(got, WriteBatch.from_frames([f for b in parts for f in b.frames]))
