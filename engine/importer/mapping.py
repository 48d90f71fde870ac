"""Arrow record batches -> rusts columnar write batches, vectorised (no Python step per row).

Two steps, so that the REST client and the server share the rules:

1. :func:`normalise` (client side, or in-process in direct mode): the timestamp column becomes
   int64 nanoseconds, tag columns strings (empty -> absent), field columns one of the five storable
   Arrow types; rows without a timestamp or without any field value are dropped and counted.
2. :func:`to_write_batch` (server side of ``POST /api/v1/write/arrow``, or in-process): groups the
   rows by tag set into one :class:`~rusts.model.Frame` and wraps it in a
   :class:`~rusts.model.WriteBatch` (nulls become the columns' masks).

A :class:`Plan`, made once per file from its schema by :func:`make_plan`, says which column is
the timestamp, which are tags and which fields of which type. docs/import.md states the rules.
"""

from __future__ import annotations

import attrs
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from rusts.importer.errors import ImportInputError
from rusts.model import Column, FieldType, Frame, WriteBatch, series_key

UNIT_NS = {"s": 1_000_000_000, "ms": 1_000_000, "us": 1_000, "ns": 1}
DAY_NS = 86_400 * 1_000_000_000
TIME_FALLBACKS = ("time", "ts")
"""Columns tried, like the original, when the default ``timestamp`` column is absent."""

_TARGET = {FieldType.FLOAT: pa.float64(), FieldType.INTEGER: pa.int64(), FieldType.UNSIGNED: pa.uint64(),
           FieldType.BOOLEAN: pa.bool_(), FieldType.STRING: pa.string()}
_ZERO = {FieldType.FLOAT: 0.0, FieldType.INTEGER: 0, FieldType.UNSIGNED: 0, FieldType.BOOLEAN: False,
         FieldType.STRING: ""}
_TYPE_WORDS = {FieldType.FLOAT: "float", FieldType.INTEGER: "integer", FieldType.UNSIGNED: "unsigned",
               FieldType.BOOLEAN: "boolean", FieldType.STRING: "string"}

REJECT_NO_TIME = "null timestamp"
REJECT_NO_FIELDS = "every field null"


def _value_type(t: pa.DataType) -> pa.DataType:
    return t.value_type if pa.types.is_dictionary(t) else t


_is_string_view = getattr(pa.types, "is_string_view", lambda t: False)  # pyarrow >= 16


def _is_text(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t) or _is_string_view(t)


def storable_type(t: pa.DataType) -> FieldType | None:
    """The field type an Arrow column is stored as; None when rusts cannot store it.

    Floats (and decimals, converted to float64) -> float; signed ints -> integer; unsigned ints ->
    unsigned; bool -> boolean; strings -> string; timestamps, dates and durations -> integer
    nanoseconds."""
    t = _value_type(t)
    if pa.types.is_floating(t) or pa.types.is_decimal(t):
        return FieldType.FLOAT
    if pa.types.is_signed_integer(t):
        return FieldType.INTEGER
    if pa.types.is_unsigned_integer(t):
        return FieldType.UNSIGNED
    if pa.types.is_boolean(t):
        return FieldType.BOOLEAN
    if _is_text(t):
        return FieldType.STRING
    if pa.types.is_timestamp(t) or pa.types.is_date(t) or pa.types.is_duration(t):
        return FieldType.INTEGER
    return None


def _time_type_ok(t: pa.DataType) -> bool:
    t = _value_type(t)
    return (pa.types.is_timestamp(t) or pa.types.is_date(t) or pa.types.is_integer(t) or _is_text(t))


def _tag_type_ok(t: pa.DataType) -> bool:
    t = _value_type(t)
    return _is_text(t) or pa.types.is_integer(t) or pa.types.is_boolean(t)


@attrs.frozen
class Plan:
    """How the columns of one schema map to a measurement's tags and fields."""

    measurement: str
    time_column: str
    tags: tuple[str, ...]  # sorted by name (the order of a series key)
    fields: tuple[tuple[str, FieldType], ...]  # in file order
    skipped: tuple[str, ...] = ()
    int_unit: str = "ns"  # unit of an integer timestamp column

    def role(self, name: str) -> str:
        """What a column becomes, in words (for --schema-only)."""
        if name == self.time_column:
            return "timestamp"
        if name in self.tags:
            return "tag"
        for f, ft in self.fields:
            if f == name:
                return f"{_TYPE_WORDS[ft]} field"
        return "skipped"


def make_plan(schema: pa.Schema, *, measurement: str, timestamp_column: str = "timestamp",
              tags=(), skip=(), int_unit: str = "ns", strict: bool = True) -> Plan:
    """The plan of ``schema``; raises :class:`ImportInputError` naming what does not fit.

    ``strict=False`` (for --schema-only) reports unstorable columns as skipped instead."""
    if not measurement:
        raise ImportInputError("the measurement name must not be empty")
    names = list(schema.names)
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ImportInputError(f"the file has more than one column named {dup[0]!r}")
    avail = ", ".join(names)
    time_col = timestamp_column
    if time_col not in names:
        fallback = [n for n in TIME_FALLBACKS if n in names] if timestamp_column == "timestamp" else []
        if not fallback:
            raise ImportInputError(f"timestamp column {timestamp_column!r} not found (columns: {avail}); "
                                   "name it with -t/--timestamp-column")
        time_col = fallback[0]
    tt = schema.field(time_col).type
    if not _time_type_ok(tt):
        raise ImportInputError(f"timestamp column {time_col!r} has type {tt}: expected a timestamp, "
                               "date, integer (nanoseconds, or --timestamp-unit) or ISO 8601 string column")
    if int_unit not in UNIT_NS:
        raise ImportInputError(f"unknown timestamp unit {int_unit!r} (expected one of s, ms, us, ns)")
    tags = [t for t in dict.fromkeys(tags) if t]
    for t in tags:
        if t not in names:
            raise ImportInputError(f"tag column {t!r} not found (columns: {avail})")
        if t == time_col:
            raise ImportInputError(f"column {t!r} is the timestamp column; it cannot also be a tag")
        if not _tag_type_ok(schema.field(t).type):
            raise ImportInputError(f"tag column {t!r} has type {schema.field(t).type}: tags must be "
                                   "string, integer or boolean columns")
    for s in skip:
        if s not in names:
            raise ImportInputError(f"--skip-column {s!r} not found (columns: {avail})")
    skipped = [s for s in dict.fromkeys(skip)]
    fields, bad = [], []
    for f in schema:
        if f.name == time_col or f.name in tags or f.name in skipped:
            continue
        if pa.types.is_null(f.type):  # a column of nulls only: nothing to store
            skipped.append(f.name)
            continue
        ft = storable_type(f.type)
        if ft is None:
            bad.append(f)
            continue
        fields.append((f.name, ft))
    if bad and strict:
        which = ", ".join(f"{f.name!r} ({f.type})" for f in bad)
        flags = " ".join(f"--skip-column {f.name}" for f in bad)
        raise ImportInputError(f"rusts cannot store column {which}; leave it out with {flags}")
    skipped.extend(f.name for f in bad)
    if not fields and strict:
        raise ImportInputError(f"no field columns to import (columns: {avail}; timestamp: {time_col!r}, "
                               f"tags: {', '.join(tags) or 'none'})")
    return Plan(measurement, time_col, tuple(sorted(tags)), tuple(fields), tuple(skipped), int_unit)


def timestamps_ns(arr: pa.Array, int_unit: str = "ns", name: str = "timestamp") -> pa.Array:
    """Int64 nanoseconds since the epoch (nulls kept) of a timestamp, date, integer or string column.

    Time-zone-aware timestamps are stored as UTC instants (Arrow keeps them as UTC already)."""
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    t = arr.type
    try:
        if _is_text(t):
            arr = _parse_times(arr, name)
            t = arr.type
        if pa.types.is_timestamp(t):
            base, mult = arr.cast(pa.int64()), UNIT_NS[t.unit]
        elif pa.types.is_date32(t):
            base, mult = arr.cast(pa.int32()).cast(pa.int64()), DAY_NS
        elif pa.types.is_date64(t):
            base, mult = arr.cast(pa.int64()), 1_000_000
        elif pa.types.is_duration(t):
            base, mult = arr.cast(pa.int64()), UNIT_NS[t.unit]
        elif pa.types.is_integer(t):
            base, mult = arr.cast(pa.int64()), UNIT_NS[int_unit]
        else:
            raise ImportInputError(f"column {name!r} of type {t} cannot hold timestamps")
        return base if mult == 1 else pc.multiply_checked(base, mult)
    except (pa.ArrowInvalid, OverflowError) as e:
        raise ImportInputError(f"column {name!r}: timestamps out of the range of int64 nanoseconds "
                               f"(1677-09-21..2262-04-11) or not convertible: {e}") from None


def _parse_times(arr: pa.Array, name: str) -> pa.Array:
    """ISO 8601 strings -> timestamp[ns]; with a zone offset they are converted to UTC."""
    for target in (pa.timestamp("ns"), pa.timestamp("ns", "UTC")):
        try:
            return arr.cast(target)
        except pa.ArrowInvalid:
            continue
    raise ImportInputError(f"timestamp column {name!r}: strings that are not ISO 8601 timestamps "
                           f"(e.g. {_first_valid(arr)!r})")


def _first_valid(arr: pa.Array):
    valid = arr.drop_null()
    return valid[0].as_py() if len(valid) else None


def field_array(arr: pa.Array, ftype: FieldType, name: str) -> pa.Array:
    """``arr`` as the Arrow type of ``ftype`` (nulls kept); a dictionary of strings stays a
    dictionary (of ``string``) for a string field: its values are not materialised."""
    if pa.types.is_dictionary(arr.type):
        vt = arr.type.value_type
        if ftype is FieldType.STRING and (pa.types.is_string(vt) or pa.types.is_large_string(vt)):
            return arr if pa.types.is_string(vt) else arr.cast(pa.dictionary(arr.type.index_type, pa.string()))
        arr = arr.dictionary_decode()
    t = arr.type
    if pa.types.is_timestamp(t) or pa.types.is_date(t) or pa.types.is_duration(t):
        return timestamps_ns(arr, "ns", name)
    target = _TARGET[ftype]
    if t == target:
        return arr
    try:
        return arr.cast(target)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
        raise ImportInputError(f"column {name!r}: cannot convert {t} to {target}: {e}") from None


def tag_array(arr: pa.Array) -> pa.Array:
    """A tag column as strings; empty strings become nulls (a tag without a value is absent)."""
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    if arr.type != pa.string():
        arr = arr.cast(pa.string())
    if arr.null_count < len(arr):
        empty = pc.equal(arr, "")
        if pc.any(empty).as_py():
            arr = pc.if_else(empty, pa.scalar(None, pa.string()), arr)
    return arr


@attrs.frozen
class Normalised:
    """A normalised record batch, the 1-based source row number of each of its rows, and the
    rows dropped on the way, by reason."""

    batch: pa.RecordBatch
    rows: np.ndarray
    rejected: dict

    def filter(self, keep: np.ndarray) -> "Normalised":
        if keep.all():
            return self
        return Normalised(self.batch.filter(pa.array(keep)), self.rows[keep], self.rejected)


def normalise(rb: pa.RecordBatch, plan: Plan, first_row: int = 1) -> Normalised:
    """``rb`` in the storable types of ``plan``, with unwritable rows dropped and counted."""
    n = rb.num_rows
    ts = timestamps_ns(rb.column(plan.time_column), plan.int_unit, plan.time_column)
    cols, names = [ts], [plan.time_column]
    for t in plan.tags:
        cols.append(tag_array(rb.column(t)))
        names.append(t)
    any_field, full = None, False
    for name, ftype in plan.fields:
        a = field_array(rb.column(name), ftype, name)
        if not a.null_count:
            full = True  # this column has every row: so has every row a field
        elif not full:
            v = a.is_valid()
            any_field = v if any_field is None else pc.or_(any_field, v)
        cols.append(a)
        names.append(name)
    out = pa.RecordBatch.from_arrays(cols, names=names)
    rows = np.arange(first_row, first_row + n, dtype=np.int64)
    rejected = {}
    keep = None
    if ts.null_count:
        keep = ts.is_valid().to_numpy(zero_copy_only=False)
        rejected[REJECT_NO_TIME] = int(n - keep.sum())
    if any_field is not None and not full:
        has = any_field.to_numpy(zero_copy_only=False)
        empty = ~has if keep is None else (~has & keep)
        if empty.any():
            rejected[REJECT_NO_FIELDS] = int(empty.sum())
            keep = has if keep is None else (keep & has)
    norm = Normalised(out, rows, rejected)
    return norm if keep is None else norm.filter(keep)


def _group(b: pa.RecordBatch, plan: Plan):
    """Rows grouped by tag set: (order or None, starts, tag tuples per series)."""
    n = b.num_rows
    codes, vocab = [], []
    for t in plan.tags:
        a = b.column(t)
        if a.null_count == n:
            continue
        d = a.dictionary_encode()
        idx = d.indices
        if idx.null_count:
            idx = idx.fill_null(len(d.dictionary))
        codes.append(idx.to_numpy(zero_copy_only=False).astype(np.int64, copy=False))
        vocab.append((t, d.dictionary.to_pylist() + [None]))
    if not codes:
        return None, np.array([0, n], dtype=np.int64), [()]
    combined, card = codes[0], len(vocab[0][1])
    for c, (_, words) in zip(codes[1:], vocab[1:]):
        if card * len(words) >= 1 << 62:  # re-number before the product overflows
            combined = np.unique(combined, return_inverse=True)[1].astype(np.int64)
            card = int(combined.max()) + 1
        combined = combined * len(words) + c
        card *= len(words)
    if card <= 1 << 16:  # few tag sets: counting, and numpy's radix sort for small ints
        counts = np.bincount(combined, minlength=card)
        present = np.flatnonzero(counts)
        remap = np.zeros(card, dtype=np.uint16)
        remap[present] = np.arange(len(present), dtype=np.uint16)
        inv, counts = remap[combined], counts[present]
    else:
        uniq, inv = np.unique(combined, return_inverse=True)
        counts = np.bincount(inv, minlength=len(uniq))
    if len(counts) == 1:
        order, starts, first = None, np.array([0, n], dtype=np.int64), np.zeros(1, dtype=np.int64)
    else:
        order = np.argsort(inv, kind="stable")
        starts = np.zeros(len(counts) + 1, dtype=np.int64)
        np.cumsum(counts, out=starts[1:])
        first = order[starts[:-1]]
    per_tag = [(t, [words[i] for i in c[first].tolist()]) for c, (t, words) in zip(codes, vocab)]
    tag_sets = []
    for s in range(len(counts)):  # one step per series, not per row
        tag_sets.append(tuple((t, vals[s]) for t, vals in per_tag if vals[s] is not None))
    return order, starts, tag_sets


def _strings(a: pa.Array) -> np.ndarray:
    """A string column as a numpy object array. Columns with few distinct values (flags, codes)
    go through their dictionary, so each distinct string becomes one Python object, not one per
    row."""
    n = len(a)
    if n >= 64:
        d = a.dictionary_encode()
        if len(d.dictionary) * 4 <= n:
            words = np.asarray(d.dictionary.to_pylist() + [""], dtype=object)
            return words[d.indices.to_numpy(zero_copy_only=False)]
    return a.to_numpy(zero_copy_only=False)


def to_write_batch(b: pa.RecordBatch, plan: Plan, line_numbers: np.ndarray | None = None) -> WriteBatch:
    """A normalised batch as a :class:`WriteBatch` of one frame (rows grouped by series)."""
    n = b.num_rows
    if n == 0:
        return WriteBatch.from_frames(())
    ln = np.arange(1, n + 1, dtype=np.int64) if line_numbers is None else np.asarray(line_numbers, np.int64)
    order, starts, tag_sets = _group(b, plan)
    ts = b.column(plan.time_column).to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
    if order is not None:
        ts, ln = ts[order], ln[order]
    cols = {}
    for name, ftype in plan.fields:
        a = b.column(name)
        nulls = a.null_count
        if nulls == n:
            continue
        mask = None
        if nulls:
            mask = a.is_valid().to_numpy(zero_copy_only=False)
            a = a.fill_null(_ZERO[ftype])
        values = _strings(a) if ftype is FieldType.STRING else a.to_numpy(zero_copy_only=False)
        if values.dtype != ftype.dtype:
            values = values.astype(ftype.dtype)
        if order is not None:
            values = values[order]
            mask = None if mask is None else mask[order]
        cols[name] = Column(ftype, values, mask)
    if not cols:
        return WriteBatch.from_frames(())
    m = plan.measurement
    frame = Frame([m] * len(tag_sets), tag_sets, [series_key(m, t) for t in tag_sets], starts, ts, cols, ln)
    return WriteBatch.from_frames((frame,))


def value_count(b: pa.RecordBatch, plan: Plan) -> int:
    """Field values in a normalised batch (non-null cells of the field columns)."""
    return sum(b.num_rows - b.column(name).null_count for name, _ in plan.fields)
