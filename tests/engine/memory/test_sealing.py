"""Memtable sealing: many small writes become a few sorted pieces per series (a query after a
load of small writes merges O(log rows) pieces, not one per write), with last write wins."""

from __future__ import annotations

import random

import numpy as np

from rusts.memory.tables import MemtableState, Table
from rusts.protocols.line_protocol import parse
from rusts.query.rowset import merge

T0 = 1_700_000_000_000_000_000


def test_small_writes_seal_into_few_pieces_with_last_write_wins():
    rng = random.Random(3)
    t = Table(1)
    st = MemtableState(t)
    truth: dict[tuple[int, int], dict] = {}
    for seq in range(1, 400):
        lines = []
        for _ in range(rng.randint(1, 12)):
            h, ts = rng.randrange(5), T0 + rng.randrange(300) * 10**9
            fields = {k: rng.randint(0, 999) for k in ("a", "b") if rng.random() < 0.7} or {"a": 1}
            truth.setdefault((h, ts), {}).update(fields)
            lines.append(f"m,h={h} " + ",".join(f"{k}={v}i" for k, v in fields.items()) + f" {ts}")
        b = parse("\n".join(lines).encode())
        sids = [int(k.split("=")[1]) + 1 for f in b.frames for k in f.keys]
        t.insert_frames(b.frames, np.array(sids, dtype=np.uint64), seq)
        if seq % 50 == 0:  # queries now and then, as a dashboard would
            st.snapshot(np.arange(1, 6, dtype=np.uint64))
    snap = st.snapshot(np.arange(1, 6, dtype=np.uint64))
    for h in range(5):
        pieces = snap[h + 1]
        rows = sum(len(p) for p in pieces)
        assert len(pieces) <= 2 + int(np.log2(max(rows, 1))), len(pieces)
        rs = merge(pieces)
        want = sorted((ts, f) for (hh, ts), f in truth.items() if hh == h)
        assert rs.timestamps.tolist() == [ts for ts, _ in want]
        for k in ("a", "b"):
            c = rs.columns[k]
            got = [int(v) if (c.mask is None or m) else None
                   for v, m in zip(c.values.tolist(), c.mask.tolist() if c.mask is not None else [True] * len(rs))]
            assert got == [f.get(k) for _, f in want], (h, k)


def _write(t: Table, seq: int, n: int, t0: int) -> None:
    b = parse("\n".join(f"m,h=1 a={i}i {t0 + i}" for i in range(n)).encode())
    t.insert_frames(b.frames, np.array([1], dtype=np.uint64), seq, seal=False)


def test_a_seal_job_done_off_the_loop_is_installed_unless_a_query_sealed_first():
    t = Table(1)
    _write(t, 1, 100, T0)
    token, compute = t.seal_job()
    _write(t, 2, 50, T0 + 1000)  # arrives while the job runs: not part of it
    assert t.install_sealed(token, compute())
    assert sum(len(b) for b in t._sealed["m"]) == 100 and t.needs_seal() is False
    token2, compute2 = t.seal_job()  # the 50 new rows
    t.seal()  # a query sealed them first
    assert not t.install_sealed(token2, compute2())  # stale: dropped, nothing sealed twice
    assert sum(len(b) for b in t._sealed["m"]) == 150 and t.seal_job() is None


def test_a_query_reads_a_few_unsealed_writes_as_they_are_and_seals_many():
    from rusts.memory.tables import DIRECT_TAIL_CHUNKS

    t = Table(1)
    st = MemtableState(t)
    _write(t, 1, 100, T0)
    t.seal()
    _write(t, 2, 5000, T0 + 50)  # one big write, overlapping the sealed rows: it wins where it overlaps
    snap = st.snapshot(np.array([1], dtype=np.uint64))
    assert t._sealed_upto == 1 and len(t.chunks) == 1  # read as it is, not sealed by the query
    rs = merge(snap[1])
    assert len(rs) == 5050 and rs.columns["a"].values[:52].tolist() == list(range(50)) + [0, 1]
    for seq in range(3, 3 + DIRECT_TAIL_CHUNKS):
        _write(t, seq, 3, T0 + 10_000 + 10 * seq)
    snap = st.snapshot(np.array([1], dtype=np.uint64))
    assert t._sealed_upto == 2 + DIRECT_TAIL_CHUNKS and not t.chunks  # many small writes: sealed first
    assert t.raw_bytes == 0  # ... and dropped: the sealed blocks are the only copy
    assert len(merge(snap[1])) == 5050 + 3 * DIRECT_TAIL_CHUNKS


def _lp(rng: random.Random, seq: int, hosts: int = 50, steps: int = 10) -> bytes:
    t0 = T0 + seq * steps * 10**9
    return "\n".join(f"cpu,host=h{h} a={rng.random()},b={rng.random()},c={rng.randint(0, 99)}i {t0 + s * 10**9}"
                     for s in range(steps) for h in range(hosts)).encode()


def test_a_table_holds_its_rows_once_and_counts_the_memory_it_holds():
    """``storage.memtable`` limits compare against ``Table.bytes``: it must follow the memory the
    table really holds (its sealed blocks, its unsealed writes, the columnar views queries
    build), measured here with tracemalloc (numpy reports its buffers to it). Sealing drops the
    writes it sealed, so the table holds about one copy of its rows, not the writes plus a
    sorted copy plus the query views."""
    import gc
    import tracemalloc

    from rusts.memory.recent import RecentData
    from rusts.memory.tables import _frame_nbytes

    rng = random.Random(5)
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        t = Table(1)
        one_copy = 0
        for seq in range(1, 121):  # 60,000 rows in 120 writes: sealed as they arrive
            b = parse(_lp(rng, seq))
            sids = np.array([int(k.split("=")[1][1:]) + 1 for f in b.frames for k in f.keys], np.uint64)
            one_copy += sum(_frame_nbytes(f) for f in b.frames)
            t.insert_frames(b.frames, sids, seq)
            del b
        recent = RecentData(1 << 30)
        recent.pieces([t], "cpu", T0, T0 + 10**18)  # a many-series query's columnar views
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    assert 0.8 * held <= t.bytes <= 1.3 * held, (t.bytes, held)
    assert t.raw_bytes == 0 and not t.chunks  # every write sealed, and dropped
    assert held < 1.5 * one_copy, (held, one_copy)


def _block(rng, sids, t0, n, fields=("a", "b")):
    from rusts.memory.sealed import Sealed
    from rusts.model import FieldType

    sid = np.sort(rng.choice(np.asarray(sids, np.uint64), n))
    ts = np.empty(n, np.int64)
    for s in np.unique(sid):  # strictly increasing times per series, from t0 on
        k = int((sid == s).sum())
        ts[sid == s] = t0 + np.cumsum(rng.integers(1, 5, k))
    cols = {}
    for f in fields:
        mask = rng.random(n) < 0.8
        cols[f] = (FieldType.INTEGER, rng.integers(0, 99, n), None if mask.all() else mask)
    return Sealed.of_rows(sid, ts, cols)


def test_merging_in_order_blocks_without_sorting_gives_the_sorted_merge(monkeypatch):
    """Blocks whose newer rows come later per series (an import in time order) merge by
    concatenating each series' runs; the result equals the general sort-and-deduplicate merge."""
    from rusts.memory import sealmerge

    rng = np.random.default_rng(4)
    for trial in range(30):
        old = _block(rng, [1, 2, 5, 9], T0, int(rng.integers(1, 200)))
        new = _block(rng, [2, 3, 5] if trial % 3 else [7], T0 + 10**6, int(rng.integers(1, 200)), ("b", "c"))
        concat = old.merged_with(new)  # few series: each column one concatenation of runs
        assert sealmerge.append_runs(old, new) is not None and sealmerge.append_order(old, new) is not None
        with monkeypatch.context() as m:
            m.setattr(sealmerge, "append_runs", lambda old, newer: None)
            gathered = old.merged_with(new)  # many series: one gather by the run order
            m.setattr(sealmerge, "append_order", lambda old, newer: None)
            slow = old.merged_with(new)
        for fast in (concat, gathered):
            assert fast.usid.tolist() == slow.usid.tolist() and fast.starts.tolist() == slow.starts.tolist()
            assert fast.ts.tolist() == slow.ts.tolist()
            assert set(fast.cols) == set(slow.cols)
            for name, (ft, v, mk) in slow.cols.items():
                fv, fm = fast.cols[name][1], fast.cols[name][2]
                m1 = np.ones(len(v), bool) if mk is None else mk
                m2 = np.ones(len(fv), bool) if fm is None else fm
                assert m1.tolist() == m2.tolist() and v[m1].tolist() == fv[m2].tolist()
    # a newer block overlapping in time (a rewrite): the general merge, last write wins
    a, b = _block(rng, [2], T0, 100), _block(rng, [2], T0, 100)
    assert sealmerge.append_order(a, b) is None and sealmerge.append_runs(a, b) is None
    merged = a.merged_with(b)
    assert len(merged) == len(np.union1d(a.ts, b.ts))
