"""Raw queries: rows of many series in time order, with field predicates, LIMIT/OFFSET read
from the wanted end."""

from __future__ import annotations


import numpy as np

from rusts.errors import QueryError
from rusts.model import Column
from rusts.query.model import Query
from rusts.query.control import charge, checkpoint
from rusts.query.rowset import RowSet, concat_column
from rusts.query.reading import read_series
from rusts.query.result import ResultSet, Snapshot


# --------------------------------------------------------------------------- raw queries

def _matching(rs: RowSet, preds, want: int | None, desc: bool, fields) -> RowSet:
    """The rows of ``rs`` satisfying every field predicate (SQL: NULL never matches a comparison),
    at most ``want`` from the wanted end, with only ``fields`` (None: all)."""
    n = len(rs)
    keep = np.ones(n, bool)
    for p in preds:
        keep &= predicate_mask(rs, p)
    idx = np.flatnonzero(keep)
    if want is not None and len(idx) > want:
        idx = idx[len(idx) - want:] if desc else idx[:want]
    cols = {}
    for name, c in rs.columns.items():
        if fields is not None and name not in fields:
            continue
        cc = c.take(idx)
        if cc.mask is None or cc.mask.any():
            cols[name] = cc
    return RowSet(rs.timestamps[idx], cols, True)


def predicate_mask(rs: RowSet, p: tuple) -> np.ndarray:
    """Rows of ``rs`` where field predicate ``p`` holds: ``(field, op, value)`` or an AND/OR tree
    ``("and" | "or", None, (p, ...))`` (SQL: a comparison with NULL is not true)."""
    from rusts.sql.vector import _predicate

    f, op, value = p
    n = len(rs)
    if op is None and f in ("and", "or"):
        masks = [predicate_mask(rs, q) for q in value]
        out = masks[0]
        for m in masks[1:]:
            out = (out & m) if f == "and" else (out | m)
        return out
    c = rs.columns.get(f)
    if c is None:
        return np.full(n, op == "isnull")
    return _predicate(f, op, value, None, c.values, c.mask, n)


def _fields_of(p: tuple) -> list[str]:
    return [x for q in p[2] for x in _fields_of(q)] if p[1] is None and p[0] in ("and", "or") else [p[0]]


def _read_filtered(snap: Snapshot, sid: int, q: Query, fields, want: int | None, desc: bool) -> RowSet:
    """:func:`read_series` with the query's field predicates applied; with a limit, blocks are
    read from the wanted end of time, doubling the rows read until enough rows match."""
    preds = q.predicates
    need = None if fields is None else tuple(dict.fromkeys([*fields, *(f for p in preds for f in _fields_of(p))]))
    limit = want
    while True:
        rs = read_series(snap, sid, q.start, q.end, need, limit, desc, q.measurement)
        out = _matching(rs, preds, want, desc, fields)
        if want is None or len(out) >= want or limit is None or len(rs) < limit:
            return out
        limit *= 4


def execute_raw(snap: Snapshot, q: Query, sids: np.ndarray, tags_of, field_types: dict) -> ResultSet:
    fields = q.fields
    if fields is not None:
        for f in fields:
            if f not in field_types:
                raise QueryError(f'unknown field "{f}" in measurement "{q.measurement}"',
                                 sqlstate="42703")
    want = None if q.limit is None else q.limit + q.offset
    desc = q.order == "Desc"
    results: list[tuple[int, RowSet]] = []
    for gi, sid in enumerate(sids.tolist()):
        checkpoint()
        if q.predicates:
            rs = _read_filtered(snap, sid, q, fields, want, desc)
        else:
            rs = read_series(snap, sid, q.start, q.end, fields, want, desc, q.measurement)
        if len(rs) == 0:
            continue
        charge(len(rs) * 8 * (1 + len(rs.columns)))
        if want is not None and len(rs) > want:
            rs = RowSet(*_trim(rs, want, desc))
        results.append((gi, rs))
    group_tags = [tags_of(int(s)) for s in sids.tolist()]
    names: list[str] = list(fields) if fields is not None else []
    if fields is None:
        seen = set()
        for _, rs in results:
            for n in rs.columns:
                if n not in seen:
                    seen.add(n)
        names = sorted(seen)
    if not results:
        return ResultSet(q.measurement, np.empty(0, np.int64), np.empty(0, np.int64), group_tags, {},
                         names, False, {n: field_types[n] for n in names if n in field_types})
    ts = np.concatenate([rs.timestamps for _, rs in results])
    grp = np.concatenate([np.full(len(rs), gi, dtype=np.int64) for gi, rs in results])
    lengths = [len(rs) for _, rs in results]
    cols = {}
    for n in names:
        ft = field_types.get(n)
        if ft is None:
            continue
        cols[n] = concat_column([rs.columns.get(n) for _, rs in results], lengths, ft)
    names = [n for n in names if n in cols]
    if len(results) > 1:
        order = np.lexsort((grp, ts))
    else:
        order = None
    if desc:
        # newest first; equal timestamps keep series order ascending
        order = np.arange(len(ts))[::-1] if order is None else np.lexsort((grp, -ts))
    if order is not None:
        lo = q.offset
        hi = None if q.limit is None else q.offset + q.limit
        order = order[lo:hi]
        ts = ts[order]
        grp = grp[order]
        cols = {n: c.take(order) for n, c in cols.items()}
    else:
        lo = q.offset
        hi = None if q.limit is None else q.offset + q.limit
        sl = slice(lo, hi)
        ts, grp = ts[sl], grp[sl]
        cols = {n: Column(c.type, c.values[sl], None if c.mask is None else c.mask[sl])
                for n, c in cols.items()}
    return ResultSet(q.measurement, ts, grp, group_tags, cols, names, False,
                     {n: field_types[n] for n in names})


def _trim(rs: RowSet, want: int, desc: bool):
    sl = slice(len(rs) - want, None) if desc else slice(0, want)
    cols = {}
    for n, c in rs.columns.items():
        m = None if c.mask is None else c.mask[sl]
        if m is not None and not m.any():
            continue
        cols[n] = Column(c.type, c.values[sl], m)
    return rs.timestamps[sl], cols, True
