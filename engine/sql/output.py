"""The columnar answer of a SQL statement and its renderings (``/sql`` JSON, pgwire).

A :class:`SqlOutput` is what both planners (the query-model fast path and the DuckDB path) produce:
one numpy array per output column plus a validity mask, the PostgreSQL type name of each column
and its *kind* (``time``, ``tag`` or ``field``), which decides where a value lands in the
``/query``-shaped JSON row ``{"timestamp", "tags", "fields"}``.

Value representation per pg type: ``timestamp`` int64 ns since the epoch (UTC); ``float8``
float64; ``int8``/``int4`` int64; ``bool`` bool; ``text`` (and ``numeric``) object arrays.
Where ``mask`` is False the value is SQL NULL and the array entry is meaningless.
"""

from __future__ import annotations

import itertools
import math

import attrs
import numpy as np

KIND_TIME = "time"
KIND_TAG = "tag"
KIND_FIELD = "field"


@attrs.frozen
class SqlColumn:
    """One output column: its name, PostgreSQL type name and kind (time/tag/field)."""

    name: str
    type: str
    kind: str = KIND_FIELD


@attrs.frozen(eq=False)
class SqlOutput:
    """Columnar statement result shared by ``POST /sql`` and pgwire.

    ``masks[i]`` is None when column i has no NULLs, else a bool array (True = present).
    ``measurement`` names the (first) measurement read, or ``_tables`` etc. for SHOW statements.
    """

    columns: tuple[SqlColumn, ...]
    values: tuple[np.ndarray, ...]
    masks: tuple[np.ndarray | None, ...]
    command_tag: str = "SELECT 0"
    measurement: str = ""
    show: bool = False
    path: str = ""  # which executor answered: "fast", "duckdb" or "show" (tests, EXPLAIN-like logs)
    # GROUP BY tag keys that are not output columns: ((key, values, mask), ...). They go to each
    # JSON row's ``tags`` (the original's shape), never to the columns (pgwire does not see them).
    row_tags: tuple = ()

    def __len__(self) -> int:
        return len(self.values[0]) if self.values else 0

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    def column(self, name: str) -> tuple[np.ndarray, np.ndarray | None]:
        """Values and mask of the first column called ``name``."""
        for c, v, m in zip(self.columns, self.values, self.masks):
            if c.name == name:
                return v, m
        raise KeyError(name)

    def to_pylists(self) -> list[list]:
        """Each column as a Python list, NULL as None (floats NaN/inf kept)."""
        out = []
        for v, m in zip(self.values, self.masks):
            lst = v.tolist()
            if m is not None:
                lst = [x if ok else None for x, ok in zip(lst, m.tolist())]
            out.append(lst)
        return out


def make_output(columns, values, masks, measurement: str = "", show: bool = False, path: str = "") -> SqlOutput:
    """Build a :class:`SqlOutput`, normalising all-true masks to None."""
    ms = []
    for m in masks:
        if m is not None and bool(np.all(m)):
            m = None
        ms.append(m)
    n = len(values[0]) if values else 0
    return SqlOutput(tuple(columns), tuple(values), tuple(ms), f"SELECT {n}", measurement, show,
                     path or ("show" if show else ""))


def _json_list(v: np.ndarray, m: np.ndarray | None, text: bool = False) -> tuple[list, bool]:
    """A column as JSON values (NULL, NaN and infinities as None) and whether any is None
    (``text``: a column of strings, which cannot hold a NaN)."""
    lst = v.tolist()
    none = False
    if v.dtype.kind == "f":
        if len(v) and not np.isfinite(v).all():
            lst = [x if math.isfinite(x) else None for x in lst]
            none = True
    elif v.dtype == object and text:
        none = None in lst  # (a scan in C, where the check below is a Python step per value)
    elif v.dtype == object:
        lst = [None if (isinstance(x, float) and not math.isfinite(x)) else x for x in lst]
        none = True  # (maybe): rows drop their None entries
    if m is not None:
        lst = [x if ok else None for x, ok in zip(lst, m.tolist())]
        none = True
    return lst, none


def _dicts(names: list[str], lists: list[list], none: bool, n: int) -> list[dict] | itertools.repeat:
    """Per row ``{name: value}`` without None values (one shared empty dict when no columns)."""
    if not names:
        return itertools.repeat({}, n)
    if none:
        return [{k: x for k, x in zip(names, r) if x is not None} for r in zip(*lists)]
    if len(names) == 1:
        k = names[0]
        return [{k: x} for x in lists[0]]
    return [dict(zip(names, r)) for r in zip(*lists)]


def _shared_dicts(names: list[str], lists: list[list], none: bool, n: int) -> list[dict] | itertools.repeat:
    """:func:`_dicts` for tags: rows with the same values share one dict (a series' rows all
    carry its tags; building a dict per row was most of a large raw answer's cost)."""
    if not names:
        return itertools.repeat({}, n)
    cache: dict = {}
    get = cache.get
    out = []
    try:
        for r in zip(*lists):
            d = get(r)
            if d is None:
                d = cache[r] = {k: x for k, x in zip(names, r) if x is not None} if none else dict(zip(names, r))
            out.append(d)
    except TypeError:  # an unhashable value: one dict per row
        return _dicts(names, lists, none, n)
    return out


def to_json(out: SqlOutput, elapsed_ms: float) -> dict:
    """The ``/sql`` response body: ``/query``-shaped rows plus ``columns`` in select order.

    The first ``time`` column becomes the row ``timestamp`` (null when there is none); ``tag``
    columns go to ``tags`` and everything else (including further time columns, as ns) to
    ``fields``. NULL tags and fields are omitted from the row, like ``/query`` omits missing values.
    """
    n = len(out)
    lists, nones = [], []
    for c, v, m in zip(out.columns, out.values, out.masks):
        lst, none = _json_list(v, m, c.type == "text")
        lists.append(lst)
        nones.append(none)
    if out.show:
        names = [c.name for c in out.columns]
        rows = [{"fields": {k: x for k, x in zip(names, vals) if x is not None}} for vals in zip(*lists)]
        return {"measurement": out.measurement, "results": rows, "total_rows": n,
                "execution_time_ms": round(elapsed_ms, 3)}
    ts_idx = next((i for i, c in enumerate(out.columns) if c.kind == KIND_TIME), None)
    tag_idx = [i for i, c in enumerate(out.columns) if c.kind == KIND_TAG]
    fld_idx = [i for i, c in enumerate(out.columns) if i != ts_idx and c.kind != KIND_TAG]
    ts = lists[ts_idx] if ts_idx is not None else itertools.repeat(None, n)
    tag_names = [out.columns[i].name for i in tag_idx]
    tag_lists = [lists[i] for i in tag_idx]
    tag_none = any(nones[i] for i in tag_idx)
    for key, v, m in out.row_tags:
        if key not in tag_names:
            lst, none = _json_list(v, m, True)  # (tag values: strings)
            tag_names.append(key)
            tag_lists.append(lst)
            tag_none = tag_none or none
    if not tag_names and len(fld_idx) == 1 and not nones[fld_idx[0]]:  # one value per row (trends)
        k, none = out.columns[fld_idx[0]].name, {}
        rows = [{"timestamp": t, "tags": none, "fields": {k: x}} for t, x in zip(ts, lists[fld_idx[0]])]
    else:
        tags = _shared_dicts(tag_names, tag_lists, tag_none, n)
        fields = _dicts([out.columns[i].name for i in fld_idx], [lists[i] for i in fld_idx],
                        any(nones[i] for i in fld_idx), n)
        rows = [{"timestamp": t, "tags": tg, "fields": f} for t, tg, f in zip(ts, tags, fields)]
    return {"measurement": out.measurement,
            "columns": [{"name": c.name, "type": c.type} for c in out.columns],
            "results": rows, "total_rows": n, "execution_time_ms": round(elapsed_ms, 3)}
