"""The snapshot a query reads and the columnar answer it gives (:class:`ResultSet`, its JSON)."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Any

import attrs
import numpy as np

from rusts.model import Column, FieldType
from rusts.query.rowset import RowSet


@attrs.frozen(eq=False)
class Snapshot:
    """Everything a query reads: segment readers (oldest first) and memtable chunks per series."""

    segments: tuple[Any, ...]
    memtable: Mapping[int, tuple[RowSet, ...]]
    seqs: tuple[int, ...] = ()          # lifecycle sequence of each segment (age order)
    tombstones: Any = None              # rusts.lifecycle.tombstones.TombstoneSet or None



@attrs.frozen(eq=False)
class ResultSet:
    """Columnar query result.

    ``group_tags[i]`` is the tag dict of group/series i; ``row_group`` maps each row to it.
    ``timestamps`` is None for aggregates without an interval (one row per group).
    """

    measurement: str
    timestamps: np.ndarray | None
    row_group: np.ndarray
    group_tags: list[dict[str, str]]
    fields: dict[str, Column]
    field_order: list[str]
    aggregated: bool = False
    field_types: dict[str, FieldType] = attrs.field(factory=dict)

    def __len__(self) -> int:
        return len(self.row_group)

    def to_rows(self) -> list[dict]:
        """JSON rows ``{"timestamp", "tags", "fields"}`` (missing values omitted)."""
        n = len(self.row_group)
        if n == 0:
            return []
        ts = self.timestamps.tolist() if self.timestamps is not None else [None] * n
        groups = self.row_group.tolist()
        tags = self.group_tags
        cols = []
        for name in self.field_order:
            c = self.fields[name]
            vals = _json_values(c)
            cols.append((name, vals, None if c.mask is None else c.mask.tolist()))
        if all(m is None for _, _, m in cols):
            names = [name for name, _, _ in cols]
            value_lists = [v for _, v, _ in cols]
            if len(names) == 1:
                nm = names[0]
                v0 = value_lists[0]
                return [{"timestamp": ts[i], "tags": tags[groups[i]], "fields": {nm: v0[i]}}
                        for i in range(n)]
            return [{"timestamp": ts[i], "tags": tags[groups[i]], "fields": dict(zip(names, row))}
                    for i, row in enumerate(zip(*value_lists))]
        rows = []
        for i in range(n):
            f = {}
            for name, vals, mask in cols:
                if mask is None or mask[i]:
                    f[name] = vals[i]
            rows.append({"timestamp": ts[i], "tags": tags[groups[i]], "fields": f})
        return rows


def _json_values(c: Column) -> list:
    v = c.values
    if c.type == FieldType.FLOAT and v.dtype.kind == "f":
        if not np.isfinite(v).all():
            return [x if math.isfinite(x) else None for x in v.tolist()]
        return v.tolist()
    if v.dtype == object:
        return [x if not (isinstance(x, float) and not math.isfinite(x)) else None for x in v.tolist()]
    return v.tolist()



def result_json(rs: ResultSet, started: float) -> dict:
    rows = rs.to_rows()
    return {"measurement": rs.measurement, "results": rows, "total_rows": len(rows),
            "execution_time_ms": round((time.perf_counter() - started) * 1000, 3)}
