"""The columnar many-series write path: frames from the parser to the memtable and the flush.

Every fast form is compared with the per-series form it replaces: ``Frame.series_rows``,
``encode_batch`` of series, the per-series schema check, and ``rowset.merge`` per series for
the flush's vectorised sort and last-write-wins.
"""

from __future__ import annotations

import numpy as np
import pytest

import rusts
from rusts.storage import flushproc
from rusts.memory.sealed import partitions_of, table_partitions
from rusts.memory.tables import Table
from rusts.model import Column, FieldType, SeriesRows, WriteBatch, frames_of_series
from rusts.protocols.line_protocol import parse
from rusts.query.rowset import merge
from rusts.storage.schema import SchemaRegistry
from rusts.storage.walrecord import decode_batch, encode_batch

F, I, S, B = FieldType.FLOAT, FieldType.INTEGER, FieldType.STRING, FieldType.BOOLEAN
T0 = 1_700_000_000_000_000_000
SEC = 1_000_000_000
DAY = 86_400 * SEC


def _norm_series(series) -> dict:
    out = {}
    for s in series:
        cols = {}
        for n, c in s.columns.items():
            m = None if c.mask is None else c.mask.tolist()
            v = c.values.tolist() if c.mask is None else [x if k else None for x, k in zip(c.values.tolist(), m)]
            cols[n] = (int(c.type), v)
        out[(s.measurement, s.tags)] = (s.timestamps.tolist(), cols)
    return out


def _norm_rowset(rs) -> tuple:
    cols = {}
    for n, c in rs.columns.items():
        vals = c.values.tolist()
        if c.mask is not None:
            vals = [v if k else None for v, k in zip(vals, c.mask.tolist())]
        if any(v is not None for v in vals):
            cols[n] = vals
    return rs.timestamps.tolist(), cols


def _random_series(rng, n_series: int, measurement: str, fields: dict, *, masks: bool,
                   dup: bool, span: int, step: int = SEC) -> list[SeriesRows]:
    out = []
    for i in range(n_series):
        n = int(rng.integers(1, 4))
        ts = T0 + rng.integers(0, span, n) * step
        if dup and n > 1:
            ts[-1] = ts[0]
        cols = {}
        for name, ft in fields.items():
            if ft == F:
                v = rng.random(n).round(3)
            elif ft == I:
                v = rng.integers(-5, 5, n)
            elif ft == B:
                v = rng.random(n) < 0.5
            else:
                v = np.array([f"s{x}" for x in rng.integers(0, 9, n)], dtype=object)
            mk = None
            if masks:
                mk = rng.random(n) < 0.7
                if not mk.any():
                    continue
                if mk.all():
                    mk = None
            cols[name] = Column(ft, v, mk)
        if not cols:
            cols["f"] = Column(F, np.ones(n))
        out.append(SeriesRows(measurement, (("host", f"h{i}"), ("z", "a b")), ts.astype(np.int64), cols,
                              np.arange(n, dtype=np.int64)))
    return out


# ---------------------------------------------------------------------------------- parser


def test_parser_gives_frames_with_the_same_rows_as_the_per_series_form():
    lines = [f"m,host=h{i % 7},dc=d{i % 3} a={i}.5,b={i}i {T0 + (i // 7) * SEC}" for i in range(50)]
    lines += [f"n,host=h{i} x=\"s{i}\",y=true {T0}" for i in range(5)]
    body = "\n".join(lines).encode() * 2  # every point twice: later rows follow earlier ones
    body = body.replace(b"}", b"")
    batch = parse(body)
    assert batch.has_frames
    old = WriteBatch(tuple(batch.series))  # per-series form derived from the frames
    assert _norm_series(old.series) == _norm_series(
        [s for f in batch.frames for s in f.series_rows()])
    # first-line order, as the per-series parser returns it
    firsts = [int(s.line_numbers[0]) for s in batch.series]
    assert firsts == sorted(firsts)


def test_parser_falls_back_to_series_when_a_series_has_two_layouts():
    body = b"m,h=a x=1 1\nm,h=a y=2 2\nm,h=b x=3 3\n" * 40
    batch = parse(body)
    (s_a,) = [s for s in batch.series if s.tags == (("h", "a"),)]
    assert len(s_a) == 80 and s_a.columns["x"].mask is not None
    # the frames derived from it group by layout
    assert sum(f.series_count for f in batch.frames) == 2


# ---------------------------------------------------------------------------------- WAL


@pytest.mark.parametrize("masks", [False, True])
def test_wal_record_of_frames_decodes_to_the_same_series(masks):
    rng = np.random.default_rng(3)
    series = _random_series(rng, 40, "m", {"a": F, "b": I, "c": S, "d": B}, masks=masks, dup=True,
                            span=100)
    series += _random_series(rng, 3, "other", {"a": F}, masks=False, dup=False, span=5)
    by_frames = WriteBatch.from_frames(frames_of_series(series))
    got = decode_batch(encode_batch(by_frames))
    assert _norm_series(got.series) == _norm_series(series)
    assert _norm_series(decode_batch(encode_batch(WriteBatch(series))).series) == _norm_series(series)


def test_wal_record_of_one_row_series_frames():
    body = b"".join(b"m,h=%d a=%d,b=%di,c=\"x\" %d\n" % (i, i, i, i) for i in range(300))
    batch = parse(body)
    assert batch.has_frames
    got = decode_batch(encode_batch(batch))
    assert _norm_series(got.series) == _norm_series(batch.series)


# ---------------------------------------------------------------------------------- schema


def test_schema_check_of_frames_registers_new_fields_and_falls_back_on_conflict():
    reg = SchemaRegistry()
    b1 = parse(b"".join(b"m,h=%d a=1,b=2i %d\n" % (i, i) for i in range(100)))
    assert reg.check(b1) is b1
    assert reg.fields("m") == {"a": F, "b": I}
    body = b"".join(b"m,h=%d a=1,b=2 %d\n" % (i, i) for i in range(100))  # b: float, registered int
    out = reg.check(parse(body), lambda n: f"line {n}")
    assert out.point_count == 0 and len(out.errors) == 100
    assert "field type conflict" in out.errors[0].error_message


# ---------------------------------------------------------------------------------- memtable


def _reference_partitions(chunks: list, partition_ns: int) -> dict:
    """The per-series algorithm the vectorised flush replaced: merge the chunks of each series."""
    out = {}
    series: dict[int, list] = {}
    for ch in chunks:  # per chunk and series, in arrival order
        for sid, rs in ch.rowsets():
            series.setdefault(sid, []).append(rs)
    for sid, parts in sorted(series.items()):
        rs = merge(parts)
        p = rs.timestamps // partition_ns
        for part in np.unique(p).tolist():
            sel = np.flatnonzero(p == part)
            piece = rs.slice_rows(int(sel[0]), int(sel[-1]) + 1)
            out.setdefault(part, {})[sid] = _norm_rowset(piece)
    return out


@pytest.mark.parametrize("seed", range(6))
def test_flush_partitions_match_the_per_series_merge(seed):
    rng = np.random.default_rng(seed)
    table = Table(1)
    ids: dict[tuple, int] = {}
    written = []
    for w in range(8):
        layout = [{"a": F, "b": I}, {"a": F}, {"b": I, "c": S}][w % 3]
        series = _random_series(rng, int(rng.integers(1, 12)), "m", layout, masks=bool(w % 2),
                                dup=True, span=6, step=DAY // 2)
        if w % 4 == 3:  # a frame of two measurements sharing one layout
            series += _random_series(rng, 3, "n", layout, masks=False, dup=False, span=10)
        if w % 2:
            frames = frames_of_series(series)
        else:
            frames = parse("\n".join(_lp(s) for s in series).encode()).frames
        sids = [ids.setdefault((m, t), len(ids) + 1) for f in frames
                for m, t in zip(f.measurements, f.tags)]
        table.insert_frames(frames, np.array(sids, dtype=np.uint64), w + 1)
        written.extend(table.chunks[len(table.chunks) - len(frames):])
        if seed % 2 == 0 and w in (2, 5):  # some writes sealed into blocks (and dropped) first
            table.seal()
            assert not table.chunks
    payload = table.flush_payload()
    parts = table_partitions(payload, DAY)
    assert sorted(parts) == partitions_of(payload, DAY)
    got = {p: {d.series_id: _norm_rowset(d) for d in lst} for p, lst in parts.items()}
    for lst in parts.values():
        assert [d.series_id for d in lst] == sorted(d.series_id for d in lst)
        for d in lst:
            assert d.key == _key_of(ids, d.series_id)
    assert got == _reference_partitions(written, DAY)


def _key_of(ids, sid):
    from rusts.model import series_key

    for (m, t), s in ids.items():
        if s == sid:
            return series_key(m, t)
    raise KeyError(sid)


def _lp(s: SeriesRows) -> str:
    from rusts.model import series_key

    lines = []
    for r in range(len(s)):
        fs = []
        for n, c in s.columns.items():
            if c.mask is not None and not c.mask[r]:
                continue
            v = c.values[r]
            fs.append(f"{n}={_val(c.type, v)}")
        if fs:
            lines.append(f"{series_key(s.measurement, s.tags)} {','.join(fs)} {int(s.timestamps[r])}")
    return "\n".join(lines)


def _val(ft, v):
    if ft == I:
        return f"{int(v)}i"
    if ft == S:
        return f'"{v}"'
    if ft == B:
        return "true" if v else "false"
    return repr(float(v))


def test_snapshot_sees_each_write_at_once_and_keeps_last_write_wins():
    t = Table(1)
    body1 = b"".join(b"m,h=%d a=%d %d\n" % (i, i, T0) for i in range(20))
    body2 = b"".join(b"m,h=%d a=%d %d\n" % (i, 100 + i, T0) for i in range(0, 20, 2))
    from rusts.memory.tables import MemtableState

    st = MemtableState(t)
    for seq, body in enumerate((body1, body2), 1):
        b = parse(body)
        sids = [int(k.split("=")[1]) + 1 for f in b.frames for k in f.keys]
        t.insert_frames(b.frames, np.array(sids, dtype=np.uint64), seq)
        snap = st.snapshot(np.arange(1, 21, dtype=np.uint64))
        assert len(snap) == 20
    assert sum(len(p) for p in snap[1]) >= 1 and len(snap[2]) == 1  # sealed pieces may be merged
    assert merge(snap[1]).columns["a"].values.tolist() == [100.0]
    assert merge(snap[2]).columns["a"].values.tolist() == [1.0]
    assert st.statistics()["active_series"] == 20


# ---------------------------------------------------------------------------------- database


@pytest.mark.parametrize("mode", ["always", "never"])
async def test_flush_in_worker_process_or_thread_keeps_every_point(data_dir, monkeypatch, mode):
    monkeypatch.setenv("RUSTS_FLUSH_PROCESS", mode)
    body = "\n".join(f"m,h=h{i},g=g{i % 3} a={i},b={i}i,s=\"v{i}\" {T0 + (i % 2) * DAY}"
                     for i in range(600))
    again = "\n".join(f"m,h=h{i},g=g{i % 3} a={-i} {T0 + (i % 2) * DAY}"
                      for i in range(0, 600, 3))  # overwrites one field of every third point
    q = {"measurement": "m", "time_range": {"start": 0, "end": 2**63 - 1}}
    async with rusts.open(data_dir) as db:
        assert (await db.write(body)).points == 600
        assert (await db.write(again)).points == 200
        before = (await db.query(q)).to_rows()
        await db.flush()
        assert db.statistics()["segments"]["count"] == 2  # two daily partitions
        after = (await db.query(q)).to_rows()
        assert after == before
    async with rusts.open(data_dir) as db:
        assert (await db.query(q)).to_rows() == before
    assert len(before) == 600
    by_host = {r["tags"]["h"]: r["fields"] for r in before}
    assert by_host["h3"] == {"a": -3.0, "b": 3, "s": "v3"}
    assert by_host["h4"] == {"a": 4.0, "b": 4, "s": "v4"}
    if mode == "always":
        assert flushproc.running()  # the flush went through the worker process
        flushproc.shutdown()
