"""Sorting a memtable's rows: flush payloads, sealed blocks and flush partitions.

Pure numpy functions of immutable arrays, so they run in a worker thread or another process:
:func:`payload_of` turns a table's chunks into a few big arrays (cheap to pickle);
:func:`seal_payload` sorts them by (series, time), one row per timestamp with each field's last
value, into :class:`Sealed` blocks (what queries read); :func:`table_partitions` does the same cut
by time partition into :class:`~rusts.storage.segment.SeriesData` (what a flush writes).
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs
import numpy as np

from rusts.memory import sealmerge
from rusts.model import Column, FieldType
from rusts.query.rowset import RowSet


def array_nbytes(a: np.ndarray) -> int:
    """Memory of an array; for strings (object arrays) the references plus an estimate of the
    string objects from a sample of 64."""
    if a.dtype != object:
        return a.nbytes
    n = len(a)
    return 16 * n + sum(len(s) for s in a[:64]) * max(1, n // 64)


@attrs.frozen(eq=False)
class FlushParts:
    """What a table's flush writes, captured in the loop thread (``Table.flush_parts``):
    measurement -> its sealed blocks (oldest first), the unsealed writes (``Chunk``s), and the
    series keys of the sealed rows. Immutable; :func:`flush_payload` turns it into a payload."""

    blocks: dict
    chunks: tuple
    keys: dict


def flush_payload(parts: FlushParts) -> dict:
    """A flush payload (:func:`payload_of`'s shape) of a table's blocks and unsealed writes:
    each measurement's blocks merged into one (in-order writes merge without a sort,
    :meth:`Sealed.merged_with`), as a group of chunk number 0; the writes follow from 1 on.
    Pure, for a worker thread."""
    groups = []
    for m, lst in parts.blocks.items():
        if not lst:
            continue
        blk = lst[-1]
        for older in reversed(lst[:-1]):
            blk = older.merged_with(blk)
        groups.append(([m], None, np.repeat(blk.usid, np.diff(blk.starts)), blk.ts, blk.cols, 0))
    keys = parts.keys
    if parts.chunks:
        tail = payload_of(parts.chunks, first_no=1)
        groups.extend(tail["groups"])
        keys = {**keys, **tail["keys"]}
    return {"groups": groups, "keys": keys}


def payload_of(chunks: Sequence, first_no: int = 0) -> dict:
    """Chunks (``Chunk``: a write's frame and series ids) as a few big arrays, cheap to pickle,
    for :func:`table_partitions` and :func:`seal_payload`.

    ``{"groups": [(measurement names, row measurement codes or None, row series ids,
    timestamps, {field: (type, values, mask)}, row chunk numbers)], "keys": {sid: series
    key}}``: the chunks of one field layout are concatenated into one group, in arrival
    order; the chunk number of each row (from ``first_no`` on; a group may give one number for
    all its rows) orders rows of different groups.
    """
    by_sig: dict[tuple, list] = {}
    chunk_no: dict[int, int] = {}
    for i, ch in enumerate(chunks, first_no):
        chunk_no[id(ch)] = i
        by_sig.setdefault(ch.frame.layout(), []).append(ch)
    groups = []
    all_sids, all_keys = [], []
    for (m0, sig), group in by_sig.items():
        frames = [c.frame for c in group]
        counts = _counts([f.starts for f in frames])
        sids = np.concatenate([c.sids for c in group])
        all_sids.append(sids)
        for f in frames:
            all_keys.extend(f.keys)
        row_sid = np.repeat(sids, counts)
        row_chunk = np.repeat(np.array([chunk_no[id(c)] for c in group], dtype=np.int64),
                              [len(f.timestamps) for f in frames])
        ts = _cat([f.timestamps for f in frames])
        cols = {}
        for name, t, has_mask in sig:
            vals = _cat([f.columns[name].values for f in frames])
            mask = _cat([f.columns[name].mask for f in frames]) if has_mask else None
            cols[name] = (t, vals, mask)
        if m0 is not None:
            names, row_meas = [m0], None
        else:
            meas = [m for f in frames for m in f.measurements]
            names = list(dict.fromkeys(meas))
            code = {m: i for i, m in enumerate(names)}
            row_meas = np.repeat(np.fromiter(map(code.__getitem__, meas), np.int32, len(meas)),
                                 counts)
        groups.append((names, row_meas, row_sid, ts, cols, row_chunk))
    keys: dict[int, str] = {}
    if all_sids:
        _, first = np.unique(np.concatenate(all_sids), return_index=True)
        flat = np.concatenate(all_sids)
        keys = {int(flat[i]): all_keys[i] for i in first.tolist()}
    return {"groups": groups, "keys": keys}


def _counts(starts: list) -> np.ndarray:
    """Rows per series of many frames (each ``starts`` is ``[0, ..., rows]``) in one pass."""
    if len(starts) == 1:
        return np.diff(starts[0])
    allst = np.concatenate(starts)
    d = np.diff(allst)
    ends = np.cumsum([len(x) for x in starts]) - 1  # the last entry of each frame's starts
    return np.delete(d, ends[:-1])  # drop the jumps from one frame's end to the next's 0


def _cat(arrays: list) -> np.ndarray:
    return arrays[0] if len(arrays) == 1 else np.concatenate(arrays)


def partitions_of(payload: dict, partition_ns: int) -> list[int]:
    """The time partitions the rows of a flush payload fall in (sorted)."""
    parts: set[int] = set()
    for _, _, _, ts, _, _ in payload["groups"]:
        if len(ts):
            lo, hi = int(ts.min()) // partition_ns, int(ts.max()) // partition_ns
            if lo == hi:
                parts.add(lo)
            else:
                parts.update(np.unique(ts // partition_ns).tolist())
    return sorted(parts)


def _dedup_last(sid: np.ndarray, ts: np.ndarray, cols: dict) -> tuple:
    """Rows sorted by (sid, ts), arrival order kept within ties: keep one row per (sid, ts) with
    each field's last present value."""
    n = len(ts)
    new = np.empty(n, dtype=bool)
    new[0] = True
    np.logical_or(sid[1:] != sid[:-1], ts[1:] != ts[:-1], out=new[1:])
    if new.all():
        return sid, ts, cols
    starts = np.flatnonzero(new)
    ng = len(starts)
    gid = np.cumsum(new) - 1
    ends = np.append(starts[1:], n) - 1
    pos = np.arange(n)
    out = {}
    for name, (ft, values, mask) in cols.items():
        if mask is None:
            out[name] = (ft, values[ends], None)
            continue
        cand = np.where(mask, pos, -1)
        last = np.full(ng, -1, dtype=np.int64)
        np.maximum.at(last, gid, cand)
        present = last >= 0
        out[name] = (ft, values[np.where(present, last, 0)], None if present.all() else present)
    return sid[starts], ts[starts], out


@attrs.frozen(eq=False)
class Sealed:
    """Rows of one measurement from a run of writes, sorted by (series, time), one row per
    (series, time) with each field's last written value: an in-memory block. Immutable.

    ``usid`` are the distinct series (sorted), series ``usid[k]`` owns rows
    ``starts[k]:starts[k + 1]``; ``present[field]`` counts its values per series (None: every row).
    """

    usid: np.ndarray
    starts: np.ndarray
    ts: np.ndarray
    cols: dict  # field -> (FieldType, values, mask or None)
    present: dict
    own_bytes: int = attrs.field(default=0, eq=False)  # memory it holds (count_bytes)

    def count_bytes(self) -> None:
        """Record :meth:`nbytes` (once, when the block is made: before anyone reads it)."""
        object.__setattr__(self, "own_bytes", self.nbytes())

    @classmethod
    def of_rows(cls, sid: np.ndarray, ts: np.ndarray, cols: dict) -> "Sealed":
        """From rows sorted by (series, time) with unique (series, time) pairs."""
        n = len(ts)
        first = np.empty(n, dtype=bool)
        first[:1] = True
        np.not_equal(sid[1:], sid[:-1], out=first[1:])
        starts = np.flatnonzero(first)
        present = {name: None if m is None else np.add.reduceat(m.astype(np.int64), starts)
                   for name, (_, _, m) in cols.items()}
        return cls(sid[starts], np.append(starts, n), ts, cols, present)

    def __len__(self) -> int:
        return len(self.ts)

    def rowset(self, k: int, fields=None, lo: int = 0, hi: int | None = None) -> RowSet:
        """Rows ``lo:hi`` of series ``usid[k]`` (views), the ``fields`` asked (None: all);
        fields without a value there are left out."""
        a, b = int(self.starts[k]), int(self.starts[k + 1])
        n = b - a
        hi = n if hi is None else hi
        whole = lo == 0 and hi == n
        a, b = a + lo, a + hi
        cd = {}
        cols = self.cols
        for name in (cols if fields is None else fields):
            col = cols.get(name)
            if col is None:
                continue
            ft, v, m = col
            pc = self.present[name]
            if pc is None:
                cd[name] = Column(ft, v[a:b])
                continue
            c = int(pc[k])
            if not c:
                continue
            if whole:
                cd[name] = Column(ft, v[a:b], None if c == n else m[a:b])
                continue
            mk = m[a:b]
            if mk.all():
                cd[name] = Column(ft, v[a:b])
            elif mk.any():
                cd[name] = Column(ft, v[a:b], mk)
        return RowSet(self.ts[a:b], cd, True)

    def hits(self, sids: np.ndarray) -> np.ndarray:
        """Positions in :attr:`usid` of those of ``sids`` (uint64) held here."""
        usid = self.usid
        if not len(usid) or not len(sids):
            return np.zeros(0, np.int64)
        if len(sids) <= 64:
            pos = np.searchsorted(usid, sids)
            pos[pos >= len(usid)] = 0
            return np.unique(pos[usid[pos] == sids])
        return np.flatnonzero(np.isin(usid, sids))

    def rowsets_of(self, sids: np.ndarray, out: dict) -> None:
        """Append the row set of each of ``sids`` held here to ``out[sid]``."""
        usid = self.usid
        for k in self.hits(sids).tolist():
            out.setdefault(int(usid[k]), []).append(self.rowset(k))

    def nbytes(self) -> int:
        """Memory held by this block's arrays (:func:`array_nbytes`)."""
        return sum(array_nbytes(a) for a in (self.usid, self.starts, self.ts,
                                              *(x for _, v, m in self.cols.values() for x in (v, m)))
                   if a is not None)

    def merged_with(self, newer: "Sealed") -> "Sealed":
        """One block of this block's rows and ``newer``'s (whose values win on equal times)."""
        if len(self.usid) + len(newer.usid) <= 64:
            runs = sealmerge.append_runs(self, newer)
            if runs is not None:  # in-order writes of few series: one copy of each column
                return Sealed.of_rows(*sealmerge.concat_runs(self, newer, runs))
        n1, n2 = len(self.ts), len(newer.ts)
        sid = np.concatenate([np.repeat(self.usid, np.diff(self.starts)), np.repeat(newer.usid, np.diff(newer.starts))])
        ts = np.concatenate([self.ts, newer.ts])
        cols = {}
        for name in dict.fromkeys([*self.cols, *newer.cols]):
            ft = (self.cols.get(name) or newer.cols[name])[0]
            vals, masks = [], []
            for blk, n in ((self, n1), (newer, n2)):
                c = blk.cols.get(name)
                if c is None:
                    vals.append(ft.zeros(n))
                    masks.append(np.zeros(n, bool))
                else:
                    vals.append(c[1])
                    masks.append(c[2])
            mask = None if all(m is None for m in masks) else np.concatenate(
                [np.ones(len(v), bool) if m is None else m for v, m in zip(vals, masks)])
            cols[name] = (ft, np.concatenate(vals), mask)
        order = sealmerge.append_order(self, newer)
        if order is not None:  # every series' newer rows come after its older ones (in-order writes)
            sid, ts = sid[order], ts[order]
            cols = {k: (t, v[order], None if m is None else m[order]) for k, (t, v, m) in cols.items()}
            return Sealed.of_rows(sid, ts, cols)
        order = np.lexsort((ts, sid))  # stable: this block's rows before newer's on ties
        if not np.all(order[1:] > order[:-1]):
            sid, ts = sid[order], ts[order]
            cols = {k: (t, v[order], None if m is None else m[order]) for k, (t, v, m) in cols.items()}
        sid, ts, cols = _dedup_last(sid, ts, cols)
        return Sealed.of_rows(sid, ts, cols)


def seal_payload(payload: dict) -> dict[str, Sealed]:
    """Measurement -> :class:`Sealed` block of the rows of a flush payload."""
    return {m: Sealed.of_rows(sid, ts, cols) for m, sid, ts, cols in _sorted_rows(payload)}


def table_partitions(payload: dict, partition_ns: int) -> dict[int, list]:
    """Partition -> :class:`~rusts.storage.segment.SeriesData` sorted by series id, from a flush payload.

    Per measurement: the rows of every group are concatenated (fields a group lacks are masked),
    sorted by (series, time) with a stable lexsort so later writes follow earlier ones, reduced
    to one row per timestamp (last present value per field), and cut by partition and series.
    """
    from rusts.storage.segment import SeriesData

    keys = payload["keys"]
    parts: dict[int, list] = {}
    for m, sid, ts, cols in _sorted_rows(payload, partition_ns):
        p = ts // partition_ns
        if not np.all(p[1:] >= p[:-1]):  # (sorted by partition first already: kept as a guard)
            po = np.argsort(p, kind="stable")  # (partition, series, time)
            sid, ts, p = sid[po], ts[po], p[po]
            cols = {n: (t, v[po], None if k is None else k[po]) for n, (t, v, k) in cols.items()}
        n = len(ts)
        brk = np.empty(n, dtype=bool)
        brk[0] = True
        np.logical_or(sid[1:] != sid[:-1], p[1:] != p[:-1], out=brk[1:])
        gs = np.flatnonzero(brk)
        ge = np.append(gs[1:], n)
        # per (group, field): how many rows have a value (0: leave the column out of the series)
        present = {}
        for name, (ft, v, k) in cols.items():
            present[name] = None if k is None else np.add.reduceat(k.astype(np.int64), gs)
        gl, el = gs.tolist(), ge.tolist()
        sl_ = sid[gs].tolist()
        pl = p[gs].tolist()
        items = list(cols.items())
        for g, (a, b) in enumerate(zip(gl, el)):
            cd = {}
            for name, (ft, v, k) in items:
                pc = present[name]
                if pc is None:
                    cd[name] = Column(ft, v[a:b])
                else:
                    c = int(pc[g])
                    if c == 0:
                        continue
                    cd[name] = Column(ft, v[a:b], None if c == b - a else k[a:b])
            s = sl_[g]
            parts.setdefault(pl[g], []).append(SeriesData(s, keys[s], ts[a:b], cd))
    for lst in parts.values():
        lst.sort(key=lambda d: d.series_id)
    return parts


def _is_sorted(keys: tuple) -> bool:
    """Whether rows are already in ``np.lexsort(keys)`` order (the last key most significant):
    a pass per key over the rows not decided by the more significant ones."""
    n = len(keys[0])
    if n < 2:
        return True
    undecided = None
    for k in reversed(keys):
        a, b = k[:-1], k[1:]
        down = b < a if undecided is None else (b < a) & undecided
        if down.any():
            return False
        up = b > a
        undecided = ~up if undecided is None else undecided & ~up
        if not undecided.any():
            return True
    return True


def _sorted_rows(payload: dict, partition_ns: int | None = None):
    """Per measurement of a flush payload: ``(measurement, sid, ts, cols)`` sorted by (series,
    time), one row per (series, time), each field's last present value (later writes win).
    With ``partition_ns``, sorted by (partition, series, time): one sort and one reordering of
    the columns for :func:`table_partitions`, instead of a second pass by partition."""
    by_meas: dict[str, list] = {}
    for names, row_meas, row_sid, ts, cols, row_chunk in payload["groups"]:
        if not len(ts):
            continue
        if row_meas is None:
            by_meas.setdefault(names[0], []).append((row_sid, ts, cols, row_chunk))
            continue
        for code, m in enumerate(names):
            sel = np.flatnonzero(row_meas == code)
            if len(sel):
                sub = {n: (t, v[sel], None if k is None else k[sel]) for n, (t, v, k) in cols.items()}
                by_meas.setdefault(m, []).append((row_sid[sel], ts[sel], sub, row_chunk[sel]))

    for m, pieces in by_meas.items():
        ftypes: dict[str, int] = {}
        for _, _, cols, _ in pieces:
            for n, (t, _, _) in cols.items():
                ftypes.setdefault(n, t)
        sid = np.concatenate([p[0] for p in pieces]) if len(pieces) > 1 else pieces[0][0]
        ts = np.concatenate([p[1] for p in pieces]) if len(pieces) > 1 else pieces[0][1]
        cols = {}
        for name, t in ftypes.items():
            ft = FieldType(t)
            vals, masks, need = [], [], False
            for psid, pts, pcols, _ in pieces:
                c = pcols.get(name)
                if c is None:
                    vals.append(np.zeros(len(pts), dtype=ft.dtype) if ft != FieldType.STRING
                                else np.full(len(pts), "", dtype=object))
                    masks.append(np.zeros(len(pts), dtype=bool))
                    need = True
                else:
                    v = c[1] if c[1].dtype == ft.dtype else c[1].astype(ft.dtype)
                    vals.append(v)
                    masks.append(c[2])
                    need = need or c[2] is not None
            values = np.concatenate(vals) if len(vals) > 1 else vals[0]
            mask = None
            if need:
                mask = np.concatenate([np.ones(len(v), dtype=bool) if k is None else k
                                       for v, k in zip(vals, masks)])
            cols[name] = (ft, values, mask)
        keys = (ts, sid) if partition_ns is None else (ts, sid, ts // partition_ns)
        if len(pieces) > 1:  # arrival order across groups: by chunk number (stable within one)
            keys = (np.concatenate([np.broadcast_to(p[3], len(p[1])) for p in pieces]), *keys)
        if _is_sorted(keys):  # (one sealed block of one partition: no sort)
            order = None
        else:
            order = np.lexsort(keys)
        if order is not None and not (len(order) < 2 or np.all(order[1:] > order[:-1])):
            sid, ts = sid[order], ts[order]
            cols = {n: (t, v[order], None if k is None else k[order]) for n, (t, v, k) in cols.items()}
        sid, ts, cols = _dedup_last(sid, ts, cols)
        yield m, sid, ts, cols
