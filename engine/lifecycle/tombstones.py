"""Tombstones: deletes that are visible at once and made physical by compaction.

Design (the full story, with the required Database protocol, is in ``docs/lifecycle.md``):

* **A tombstone is a predicate, not a list of points.** ``DELETE FROM m WHERE time ... AND
  <tags> [AND <fields>]`` becomes one :class:`Tombstone`: measurement, half-open time range
  ``[start, end)``, the series ids the tag predicates resolved to at delete time (``None`` = every
  series of the measurement) and an optional predicate on field values. Queries drop matching
  rows; a compaction that rewrites the affected segments removes them for good.
* **Ordering by lifecycle sequence numbers.** A DELETE removes the points that exist when it is
  recorded, never points written later at the same timestamps. Every segment carries a *data
  sequence* ``seq`` and every tombstone a ``created_seq``, both drawn from one counter that only
  the manifest commits advance (:class:`LifecycleState`, stored in ``manifest.extra``). A
  tombstone applies to a segment iff ``segment seq < created_seq``; it never applies to the
  memtable (:data:`MEMTABLE_SEQ`), because the Database flushes before recording it.
* **Compaction outputs inherit the newest sequence** of their inputs and of the tombstones the
  compaction applied physically, so an applied tombstone stops applying (and can be garbage
  collected) while a tombstone recorded during the compaction still applies to the output.
* **Last write wins, exactly.** A field predicate is evaluated on the merged state as it was when
  the tombstone was recorded: :func:`merge_with_tombstones` merges sources in sequence order and
  applies each tombstone between the sources older and newer than it (one extra merge per
  tombstone boundary, only for series a tombstone touches).
* **Vectorised.** Removal is boolean masks over whole columns; Python work is per tombstone and
  per series, never per row.
"""

from __future__ import annotations

import functools
import json
import operator
from collections.abc import Callable, Iterable, Mapping, Sequence

import attrs
import numpy as np

from rusts.errors import QueryError
from rusts.model import Column
from rusts.query.rowset import EMPTY_TS, RowSet, merge

MIN_TIME = -(2**63)
MAX_TIME = 2**63 - 1
#: Sequence of data not yet in a segment (memtable): newer than every tombstone.
MEMTABLE_SEQ = 2**62

_OPS: dict[str, Callable] = {"=": operator.eq, "==": operator.eq, "!=": operator.ne, "<>": operator.ne,
                             "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}


# ------------------------------------------------------------------------------ field predicates
@attrs.frozen
class FieldPredicate:
    """``field <op> value``; a row lacking the field never matches."""

    field: str
    op: str
    value: float | int | str | bool

    def evaluate(self, rs: RowSet) -> np.ndarray:
        """Boolean mask over the rows of ``rs``."""
        col = rs.columns.get(self.field)
        n = len(rs.timestamps)
        if col is None:
            return np.zeros(n, dtype=bool)
        values = col.values
        v = self.value
        if values.dtype.kind in "fiub" and isinstance(v, str):
            return np.zeros(n, dtype=bool)  # a string never equals/compares with a number
        if values.dtype.kind == "O" and not isinstance(v, str):
            return np.zeros(n, dtype=bool)
        with np.errstate(invalid="ignore"):
            hit = np.asarray(_OPS[self.op](values, v), dtype=bool)
        if hit.shape != (n,):
            return np.zeros(n, dtype=bool)
        return hit if col.mask is None else hit & col.mask


def field_predicate_json(preds: Iterable[FieldPredicate | Mapping]) -> str:
    """Serialise AND-ed field predicates for :attr:`Tombstone.field_predicate`."""
    out = []
    for i, p in enumerate(preds):
        if isinstance(p, Mapping):
            if set(p) != {"field", "op", "value"}:
                raise QueryError(f"field predicate [{i}] must have exactly field, op and value")
            p = FieldPredicate(p["field"], p["op"], p["value"])
        elif not isinstance(p, FieldPredicate):
            raise QueryError(f"field predicate [{i}] must be an object {{field, op, value}}, not {type(p).__name__}")
        out.append({"field": p.field, "op": p.op, "value": p.value})
    text = json.dumps(out, separators=(",", ":"), sort_keys=True)
    parse_field_predicate(text)  # validate
    return text


@functools.lru_cache(maxsize=256)
def parse_field_predicate(text: str) -> tuple[FieldPredicate, ...]:
    """Parse and validate a serialised predicate (JSON list of ``{"field","op","value"}``).

    Raises:
        QueryError: malformed JSON, unknown operator, or a value that is not a scalar.
    """
    try:
        raw = json.loads(text)
    except ValueError as e:
        raise QueryError(f"field predicate is not valid JSON: {e}") from None
    if isinstance(raw, Mapping):
        raw = [raw]
    if not isinstance(raw, list) or not raw:
        raise QueryError("field predicate must be a non-empty list of {field, op, value}")
    preds = []
    for i, p in enumerate(raw):
        if not isinstance(p, Mapping) or set(p) != {"field", "op", "value"}:
            raise QueryError(f"field predicate [{i}] must have exactly field, op and value")
        f, op, v = p["field"], p["op"], p["value"]
        if not isinstance(f, str) or not f:
            raise QueryError(f"field predicate [{i}].field must be a non-empty string")
        if op not in _OPS:
            raise QueryError(f"field predicate [{i}].op: unknown operator {op!r} "
                             f"(expected one of {', '.join(_OPS)})")
        if not isinstance(v, (int, float, str, bool)) or v is None:
            raise QueryError(f"field predicate [{i}].value must be a number, string or boolean")
        preds.append(FieldPredicate(f, op, v))
    return tuple(preds)


# ------------------------------------------------------------------------------------ tombstones
def _series_converter(v: Iterable[int] | None) -> tuple[int, ...] | None:
    if v is None:
        return None
    return tuple(sorted({int(x) for x in v}))


@attrs.frozen
class Tombstone:
    """One recorded delete.

    Attributes:
        id: unique, increasing id.
        measurement: the measurement the delete is about.
        start: first deleted timestamp (inclusive, ns).
        end: end of the deleted range (exclusive, ns).
        series: sorted series ids the tag predicates matched, or None for every series of the
            measurement (tag-less delete, ``DROP TABLE``).
        field_predicate: serialised AND-ed field predicates (:func:`field_predicate_json`), or None.
        created_seq: lifecycle sequence of the commit that recorded it; it applies to segments
            whose data sequence is lower.
    """

    id: int
    measurement: str
    start: int
    end: int
    series: tuple[int, ...] | None = attrs.field(converter=_series_converter)
    field_predicate: str | None = None
    created_seq: int = 0
    _series_arr: np.ndarray | None = attrs.field(init=False, eq=False, repr=False, default=None)

    def __attrs_post_init__(self) -> None:
        if self.end <= self.start:
            raise QueryError(f"delete time range is empty: [{self.start}, {self.end})")
        if self.field_predicate is not None:
            parse_field_predicate(self.field_predicate)
        if self.series is not None:
            object.__setattr__(self, "_series_arr", np.array(self.series, dtype=np.uint64))

    @property
    def predicates(self) -> tuple[FieldPredicate, ...]:
        return () if self.field_predicate is None else parse_field_predicate(self.field_predicate)

    def applies_to_seq(self, data_seq: int | None) -> bool:
        """True when data with sequence ``data_seq`` (None = unknown: assume old) predates it."""
        return data_seq is None or data_seq < self.created_seq

    def covers_series(self, sid: int) -> bool:
        if self._series_arr is None:
            return True
        arr = self._series_arr
        i = int(np.searchsorted(arr, np.uint64(sid)))
        return i < len(arr) and int(arr[i]) == int(sid)

    def overlaps(self, min_time: int, max_time: int) -> bool:
        """Whether the closed interval ``[min_time, max_time]`` meets ``[start, end)``."""
        return self.start <= max_time and min_time < self.end

    def row_mask(self, rs: RowSet) -> np.ndarray:
        """Rows of ``rs`` (one series covered by this tombstone) that it deletes."""
        ts = rs.timestamps
        if rs.sorted_unique:
            hit = np.zeros(len(ts), dtype=bool)
            lo = int(np.searchsorted(ts, self.start, "left"))
            hi = int(np.searchsorted(ts, self.end, "left"))
            hit[lo:hi] = True
        else:
            hit = (ts >= self.start) & (ts < self.end)
        for p in self.predicates:
            if not hit.any():
                break
            hit &= p.evaluate(rs)
        return hit

    def to_json(self) -> dict:
        return {"id": self.id, "measurement": self.measurement, "start": self.start, "end": self.end,
                "series": None if self.series is None else list(self.series),
                "field_predicate": self.field_predicate, "created_seq": self.created_seq}

    @classmethod
    def from_json(cls, d: Mapping) -> "Tombstone":
        return cls(id=int(d["id"]), measurement=str(d["measurement"]), start=int(d["start"]),
                   end=int(d["end"]), series=None if d.get("series") is None else d["series"],
                   field_predicate=d.get("field_predicate"), created_seq=int(d.get("created_seq", 0)))


def tombstones_to_json(stones: Iterable[Tombstone]) -> list[dict]:
    return [t.to_json() for t in stones]


def tombstones_from_json(data: Iterable[Mapping] | None) -> tuple[Tombstone, ...]:
    return tuple(Tombstone.from_json(d) for d in (data or ()))


# ------------------------------------------------------------------------------------ applying
def take_rows(rs: RowSet, keep: np.ndarray) -> RowSet:
    """Rows of ``rs`` where ``keep`` (boolean) is True; columns left without values are dropped."""
    cols: dict[str, Column] = {}
    for name, c in rs.columns.items():
        m = None if c.mask is None else c.mask[keep]
        if m is not None:
            if not m.any():
                continue
            if m.all():
                m = None
        cols[name] = Column(c.type, c.values[keep], m)
    ts = rs.timestamps[keep]
    return RowSet(ts if len(ts) else EMPTY_TS, cols if len(ts) else {}, rs.sorted_unique or len(ts) == 0)


def _relevant(sid: int, stones: Iterable[Tombstone], measurement: str | None,
              data_max_seq: int | None) -> list[Tombstone]:
    return [t for t in stones
            if (measurement is None or t.measurement == measurement)
            and t.applies_to_seq(data_max_seq) and t.covers_series(sid)]


def apply_tombstones(sid: int, rs: RowSet, stones: Sequence[Tombstone], *, data_max_seq: int | None = None,
                     measurement: str | None = None) -> RowSet:
    """Remove from ``rs`` (rows of series ``sid`` from ONE source) the rows the tombstones delete.

    Args:
        sid: the series id.
        rs: its rows from one segment (or any single source of sequence ``data_max_seq``).
        stones: candidate tombstones. When ``measurement`` is None they must already be those of
            the series' measurement (series-less tombstones match any sid).
        data_max_seq: the source's data sequence; tombstones recorded before it (``created_seq <=
            data_max_seq``) do not apply. None applies every tombstone.
        measurement: the series' measurement, to skip tombstones of other measurements.

    Returns ``rs`` itself when nothing is removed. Field predicates are evaluated on this source
    alone; for the exact last-write-wins result across sources use :func:`merge_with_tombstones`.
    """
    if not len(rs):
        return rs
    rel = _relevant(sid, stones, measurement, data_max_seq)
    if not rel:
        return rs
    ts = rs.timestamps
    tmin, tmax = (int(ts[0]), int(ts[-1])) if rs.sorted_unique else (int(ts.min()), int(ts.max()))
    dead = None
    for t in rel:
        if not t.overlaps(tmin, tmax):
            continue
        hit = t.row_mask(rs)
        dead = hit if dead is None else dead | hit
    if dead is None or not dead.any():
        return rs
    return take_rows(rs, ~dead)


def merge_with_tombstones(sid: int, parts: Sequence[tuple[RowSet, int]], stones: Sequence[Tombstone], *,
                          measurement: str | None = None) -> tuple[RowSet, int]:
    """Merge one series' sources (oldest first, last write wins) and apply tombstones exactly.

    Args:
        sid: the series id.
        parts: ``(rows, data sequence)`` per source, in non-decreasing sequence order (segments in
            age order, then memtable chunks with :data:`MEMTABLE_SEQ`).
        stones: candidate tombstones (see :func:`apply_tombstones` for ``measurement``).

    Returns:
        The merged rows (sorted, unique timestamps) and the number of rows the tombstones removed
        (counted on the merged state, so an overwritten duplicate is not counted twice).

    Each tombstone is applied to the merge of the sources older than it, before newer sources are
    merged on top: a field predicate sees the values that were visible when the DELETE ran.
    """
    live = [(rs, seq) for rs, seq in parts if len(rs)]
    rel = [t for t in _relevant(sid, stones, measurement, None)
           if any(t.applies_to_seq(seq) for _, seq in live)]
    if not rel:
        return merge([rs for rs, _ in live]), 0
    rel.sort(key=lambda t: (t.created_seq, t.id))
    removed = 0
    acc = RowSet(EMPTY_TS, {}, True)
    pending: list[RowSet] = []
    si = 0
    for rs, seq in live:
        while si < len(rel) and rel[si].created_seq <= seq:
            acc = merge([acc, *pending])
            pending = []
            n0 = len(acc)
            acc = apply_tombstones(sid, acc, [rel[si]])
            removed += n0 - len(acc)
            si += 1
        pending.append(rs)
    acc = merge([acc, *pending])
    if si < len(rel):
        n0 = len(acc)
        acc = apply_tombstones(sid, acc, rel[si:])
        removed += n0 - len(acc)
    return acc, removed


def blocks_affected(sid: int, stones: Sequence[Tombstone], block_min: np.ndarray, block_max: np.ndarray, *,
                    data_max_seq: int | None, measurement: str | None = None) -> np.ndarray:
    """Per block of one series in one segment: may a tombstone delete rows in it?

    The executor must decode such blocks (never answer them from pre-aggregates).
    """
    out = np.zeros(len(block_min), dtype=bool)
    for t in _relevant(sid, stones, measurement, data_max_seq):
        out |= (block_max >= t.start) & (block_min < t.end)
    return out


class TombstoneSet:
    """Tombstones indexed by measurement, for the query path."""

    def __init__(self, stones: Iterable[Tombstone] = ()) -> None:
        self.stones = tuple(stones)
        self._by_m: dict[str, list[Tombstone]] = {}
        for t in self.stones:
            self._by_m.setdefault(t.measurement, []).append(t)

    def __len__(self) -> int:
        return len(self.stones)

    def __bool__(self) -> bool:
        return bool(self.stones)

    def of_measurement(self, measurement: str) -> tuple[Tombstone, ...]:
        return tuple(self._by_m.get(measurement, ()))

    def for_series(self, measurement: str, sid: int) -> tuple[Tombstone, ...]:
        """Tombstones that may delete rows of series ``sid`` (of ``measurement``)."""
        return tuple(t for t in self._by_m.get(measurement, ()) if t.covers_series(sid))


# ------------------------------------------------------------------------- lifecycle bookkeeping
SEQ_KEY = "lifecycle_seq"
SEGMENT_SEQS_KEY = "segment_seqs"
TOMBSTONES_KEY = "tombstones"
NEXT_TOMBSTONE_KEY = "next_tombstone_id"


@attrs.frozen
class LifecycleState:
    """Sequence numbers and tombstones, kept in ``manifest.state.extra``.

    Immutable; every ``with_*`` method returns a new state. The Database computes the new state
    and commits it with the manifest change it belongs to, serialised by the segment keeper so that no two
    commits derive their ``extra`` from the same old state.
    """

    seq: int = 0
    segment_seqs: Mapping[str, int] = attrs.field(factory=dict)
    tombstones: tuple[Tombstone, ...] = ()
    next_tombstone_id: int = 1

    @classmethod
    def from_extra(cls, extra: Mapping | None) -> "LifecycleState":
        extra = extra or {}
        return cls(seq=int(extra.get(SEQ_KEY, 0)),
                   segment_seqs={str(k): int(v) for k, v in (extra.get(SEGMENT_SEQS_KEY) or {}).items()},
                   tombstones=tombstones_from_json(extra.get(TOMBSTONES_KEY)),
                   next_tombstone_id=int(extra.get(NEXT_TOMBSTONE_KEY, 1)))

    def to_extra(self, base: Mapping | None = None) -> dict:
        """``base`` (the current extra, other keys kept) updated with this state."""
        out = dict(base or {})
        out[SEQ_KEY] = self.seq
        out[SEGMENT_SEQS_KEY] = dict(self.segment_seqs)
        out[TOMBSTONES_KEY] = tombstones_to_json(self.tombstones)
        out[NEXT_TOMBSTONE_KEY] = self.next_tombstone_id
        return out

    def seq_of(self, meta) -> int:
        """Data sequence of a segment (meta or file name); 0 for segments from before lifecycle
        tracking (older than every tombstone)."""
        return self.segment_seqs.get(meta if isinstance(meta, str) else meta.file, 0)

    def age_order(self, metas: Iterable) -> list:
        """``metas`` oldest data first (the merge order for last write wins). Stable for ties."""
        return sorted(metas, key=self.seq_of)

    def with_flush(self, files: Iterable[str]) -> "LifecycleState":
        """New segments written from the memtable: they get a fresh sequence."""
        seq = self.seq + 1
        seqs = dict(self.segment_seqs)
        for f in files:
            seqs[f] = seq
        return attrs.evolve(self, seq=seq, segment_seqs=seqs)

    def with_tombstone(self, measurement: str, start: int, end: int, series: Iterable[int] | None = None,
                       field_predicate: str | None = None) -> tuple["LifecycleState", Tombstone]:
        """Record a delete; it applies to every segment committed before it."""
        seq = self.seq + 1
        t = Tombstone(self.next_tombstone_id, measurement, start, end, series, field_predicate, seq)
        return attrs.evolve(self, seq=seq, tombstones=(*self.tombstones, t),
                            next_tombstone_id=self.next_tombstone_id + 1), t

    def with_replaced(self, removed: Iterable[str], added: Iterable[str], output_seq: int,
                      live: Iterable | None = None) -> "LifecycleState":
        """A compaction replaced ``removed`` by ``added`` (data sequence ``output_seq``).

        With ``live`` (the metas live after the commit) tombstones that no longer apply to any
        live segment are dropped and sequence entries of files no longer live are pruned.
        """
        seqs = dict(self.segment_seqs)
        for f in removed:
            seqs.pop(f if isinstance(f, str) else f.file, None)
        for f in added:
            seqs[f if isinstance(f, str) else f.file] = int(output_seq)
        st = attrs.evolve(self, segment_seqs=seqs)
        if live is not None:
            st = st.collect_garbage(live)
        return st

    def without(self, removed: Iterable) -> "LifecycleState":
        """Segments dropped (retention, quarantine)."""
        seqs = dict(self.segment_seqs)
        for f in removed:
            seqs.pop(f if isinstance(f, str) else f.file, None)
        return attrs.evolve(self, segment_seqs=seqs)

    def collect_garbage(self, live: Iterable) -> "LifecycleState":
        """Drop tombstones that apply to no live segment overlapping their time range, and
        sequence entries of files not in ``live``."""
        live = list(live)
        names = {m.file for m in live}
        seqs = {f: s for f, s in self.segment_seqs.items() if f in names}
        kept = tuple(t for t in self.tombstones
                     if any(t.applies_to_seq(seqs.get(m.file, 0)) and t.overlaps(m.min_time, m.max_time)
                            for m in live))
        return attrs.evolve(self, segment_seqs=seqs, tombstones=kept)
