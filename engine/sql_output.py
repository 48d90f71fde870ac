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


def _json_list(v: np.ndarray, m: np.ndarray | None) -> list:
    lst = v.tolist()
    if v.dtype.kind == "f" and len(v) and not np.isfinite(v).all():
        lst = [x if math.isfinite(x) else None for x in lst]
    elif v.dtype == object:
        lst = [None if (isinstance(x, float) and not math.isfinite(x)) else x for x in lst]
    if m is not None:
        lst = [x if ok else None for x, ok in zip(lst, m.tolist())]
    return lst


def to_json(out: SqlOutput, elapsed_ms: float) -> dict:
    """The ``/sql`` response body: ``/query``-shaped rows plus ``columns`` in select order.

    The first ``time`` column becomes the row ``timestamp`` (null when there is none); ``tag``
    columns go to ``tags`` and everything else (including further time columns, as ns) to
    ``fields``. NULL tags and fields are omitted from the row, like ``/query`` omits missing values.
    """
    n = len(out)
    lists = [_json_list(v, m) for v, m in zip(out.values, out.masks)]
    if out.show:
        names = [c.name for c in out.columns]
        rows = [{"fields": {k: x for k, x in zip(names, vals) if x is not None}} for vals in zip(*lists)]
        return {"measurement": out.measurement, "results": rows, "total_rows": n,
                "execution_time_ms": round(elapsed_ms, 3)}
    ts_idx = next((i for i, c in enumerate(out.columns) if c.kind == KIND_TIME), None)
    tag_idx = [i for i, c in enumerate(out.columns) if c.kind == KIND_TAG]
    fld_idx = [i for i, c in enumerate(out.columns) if i != ts_idx and c.kind != KIND_TAG]
    ts = lists[ts_idx] if ts_idx is not None else [None] * n
    tag_names = [out.columns[i].name for i in tag_idx]
    fld_names = [out.columns[i].name for i in fld_idx]
    tag_lists = [lists[i] for i in tag_idx]
    fld_lists = [lists[i] for i in fld_idx]
    any_null_tags = any(out.masks[i] is not None for i in tag_idx)
    any_null_flds = any(out.masks[i] is not None for i in fld_idx) or any(
        out.values[i].dtype.kind in "fO" for i in fld_idx)
    if tag_lists:
        tag_rows = zip(*tag_lists)
        if any_null_tags:
            tags = [{k: x for k, x in zip(tag_names, r) if x is not None} for r in tag_rows]
        else:
            tags = [dict(zip(tag_names, r)) for r in tag_rows]
    else:
        tags = [{} for _ in range(n)]
    if fld_lists:
        fld_rows = zip(*fld_lists)
        if any_null_flds:
            fields = [{k: x for k, x in zip(fld_names, r) if x is not None} for r in fld_rows]
        else:
            fields = [dict(zip(fld_names, r)) for r in fld_rows]
    else:
        fields = [{} for _ in range(n)]
    rows = [{"timestamp": t, "tags": tg, "fields": f} for t, tg, f in zip(ts, tags, fields)]
    return {"measurement": out.measurement,
            "columns": [{"name": c.name, "type": c.type} for c in out.columns],
            "results": rows, "total_rows": n, "execution_time_ms": round(elapsed_ms, 3)}
