"""The one query model. The JSON API, SQL and pgwire all produce a :class:`Query`.

:func:`from_json` validates a ``POST /query`` body (see docs and ../shared/API.md) and raises
:class:`~rusts.errors.QueryError` naming what is wrong.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from typing import Any

import attrs

from rusts.errors import QueryError

MIN_TIME = -(2**63)
MAX_TIME = 2**63 - 1


class TagOp(enum.Enum):
    Eq = "Eq"
    NotEq = "NotEq"
    In = "In"
    NotIn = "NotIn"
    Regex = "Regex"
    Exists = "Exists"
    NotExists = "NotExists"


class AggFunc(enum.Enum):
    Count = "Count"
    Sum = "Sum"
    Mean = "Mean"
    Min = "Min"
    Max = "Max"
    First = "First"
    Last = "Last"
    StdDev = "StdDev"
    Variance = "Variance"
    Median = "Median"
    Percentile = "Percentile"

    @property
    def uses_block_stats(self) -> bool:
        return self in (AggFunc.Count, AggFunc.Sum, AggFunc.Mean, AggFunc.Min, AggFunc.Max)


_FUNC_ALIASES = {f.value.lower(): f for f in AggFunc}
_FUNC_ALIASES.update({"avg": AggFunc.Mean, "stddev_samp": AggFunc.StdDev, "var_samp": AggFunc.Variance,
                      "variance": AggFunc.Variance, "stddev": AggFunc.StdDev})


@attrs.frozen
class TagFilter:
    key: str
    op: TagOp
    value: str | None = None
    values: tuple[str, ...] = ()

    def compiled(self) -> re.Pattern:
        assert self.value is not None
        return re.compile(self.value)


@attrs.frozen
class Aggregation:
    """One aggregate output column. ``field`` None means COUNT(*)."""

    function: AggFunc
    field: str | None = None
    percentile: float | None = None
    name: str | None = None
    # First/Last only, internal (cluster owners): the answer also carries, in a column named
    # ``output_name + "@time"``, the timestamp of the row each value was taken from
    with_time: bool = False

    @property
    def output_name(self) -> str:
        if self.name:
            return self.name
        if self.field is None:
            return self.function.value.lower()
        return f"{self.function.value.lower()}_{self.field}"


@attrs.frozen
class Query:
    measurement: str
    start: int = MIN_TIME
    end: int = MAX_TIME
    tag_filters: tuple[TagFilter, ...] = ()
    fields: tuple[str, ...] | None = None
    aggregations: tuple[Aggregation, ...] = ()
    interval: int | None = None
    group_by: tuple[str, ...] = ()
    order: str = "Asc"
    limit: int | None = None
    offset: int = 0
    # field predicates ``(field, op, value)``, ANDed, on raw reads (SQL ``WHERE f >= 0``):
    # ops = != < <= > >= between isnull notnull (rusts.sql.translate.field_predicate)
    predicates: tuple = ()

    @property
    def is_aggregate(self) -> bool:
        return bool(self.aggregations)


def _req_int(obj: Mapping, key: str, where: str) -> int:
    v = obj.get(key)
    if isinstance(v, bool) or not isinstance(v, int):
        raise QueryError(f"{where}.{key} must be an integer (nanoseconds), got {v!r}")
    if not MIN_TIME <= v <= MAX_TIME:
        raise QueryError(f"{where}.{key} is outside the int64 range")
    return v


def _str(v: Any, what: str) -> str:
    if not isinstance(v, str):
        raise QueryError(f"{what} must be a string, got {v!r}")
    return v


def from_json(body: Any) -> Query:
    """Validate and convert a JSON query body."""
    if not isinstance(body, Mapping):
        raise QueryError("query body must be a JSON object")
    known = {"measurement", "time_range", "tag_filters", "fields", "aggregation", "group_by", "order",
             "limit", "offset"}
    unknown = sorted(set(body) - known)
    if unknown:
        raise QueryError(f"unknown query key: {unknown[0]!r}")
    if "measurement" not in body:
        raise QueryError("missing required key: measurement")
    measurement = _str(body["measurement"], "measurement")
    if not measurement:
        raise QueryError("measurement must not be empty")
    if "time_range" not in body:
        raise QueryError("missing required key: time_range")
    tr = body["time_range"]
    if not isinstance(tr, Mapping):
        raise QueryError("time_range must be an object with start and end")
    start = _req_int(tr, "start", "time_range")
    end = _req_int(tr, "end", "time_range")
    if end < start:
        raise QueryError(f"time_range.end ({end}) is before time_range.start ({start})")

    filters = []
    raw_filters = body.get("tag_filters") or []
    if not isinstance(raw_filters, list):
        raise QueryError("tag_filters must be a list")
    for i, f in enumerate(raw_filters):
        where = f"tag_filters[{i}]"
        if not isinstance(f, Mapping):
            raise QueryError(f"{where} must be an object")
        key = _str(f.get("key"), f"{where}.key")
        op_name = f.get("op", "Eq")
        try:
            op = TagOp(op_name)
        except ValueError:
            raise QueryError(f"{where}.op: unknown operator {op_name!r} (expected one of "
                             f"{', '.join(o.value for o in TagOp)})") from None
        value = None
        values: tuple[str, ...] = ()
        if op in (TagOp.Eq, TagOp.NotEq, TagOp.Regex):
            value = _str(f.get("value"), f"{where}.value")
            if op == TagOp.Regex:
                try:
                    re.compile(value)
                except re.error as e:
                    raise QueryError(f"{where}.value: invalid regex: {e}") from None
        elif op in (TagOp.In, TagOp.NotIn):
            vs = f.get("values", f.get("value"))
            if not isinstance(vs, list) or not all(isinstance(x, str) for x in vs):
                raise QueryError(f"{where}.values must be a list of strings")
            values = tuple(vs)
        filters.append(TagFilter(key, op, value, values))

    fields = body.get("fields")
    if fields is not None:
        if not isinstance(fields, list) or not all(isinstance(x, str) for x in fields):
            raise QueryError("fields must be a list of strings")
        fields = tuple(fields)

    aggs: tuple[Aggregation, ...] = ()
    interval = None
    agg = body.get("aggregation")
    if agg is not None:
        if not isinstance(agg, Mapping):
            raise QueryError("aggregation must be an object")
        fname = agg.get("function")
        try:
            func = AggFunc(fname)
        except ValueError:
            raise QueryError(f"aggregation.function: unknown function {fname!r} (expected one of "
                             f"{', '.join(f.value for f in AggFunc)})") from None
        field = agg.get("field")
        if field is not None:
            field = _str(field, "aggregation.field")
        fields_for_agg = body.get("fields")
        if field is None and func != AggFunc.Count and not fields_for_agg:
            raise QueryError(f"aggregation.field (or a fields list) is required for {func.value}")
        pct = None
        if func == AggFunc.Percentile:
            p = agg.get("percentile")
            if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p <= 100:
                raise QueryError("aggregation.percentile must be a number between 0 and 100")
            pct = float(p)
        iv = agg.get("interval_nanos")
        if iv is not None:
            if isinstance(iv, bool) or not isinstance(iv, int) or not 0 < iv < 2**63:
                raise QueryError("aggregation.interval_nanos must be a positive integer below 2^63")
            interval = iv
        if field is None and isinstance(fields_for_agg, list) and fields_for_agg:
            # (beyond) one aggregation applied to each listed field: mean_usage_user, mean_usage_system, ...
            aggs = tuple(Aggregation(func, _str(f, "fields[]"), pct) for f in fields_for_agg)
        else:
            aggs = (Aggregation(func, field, pct),)

    group_by = body.get("group_by") or []
    if not isinstance(group_by, list) or not all(isinstance(x, str) for x in group_by):
        raise QueryError("group_by must be a list of tag keys")
    order = body.get("order", "Asc")
    if order not in ("Asc", "Desc", "asc", "desc", "ASC", "DESC"):
        raise QueryError(f"order must be Asc or Desc, got {order!r}")
    order = "Desc" if order.lower() == "desc" else "Asc"
    limit = body.get("limit")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise QueryError("limit must be a non-negative integer")
    offset = body.get("offset", 0) or 0
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise QueryError("offset must be a non-negative integer")
    return Query(measurement, start, end, tuple(filters), fields, aggs, interval, tuple(group_by),
                 order, limit, offset)
