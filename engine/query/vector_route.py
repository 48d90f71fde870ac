"""JSON-API aggregates on the vectorised path, answered in the executor's shape.

The executor (:mod:`rusts.query.aggregate`) works series by series: for each it picks blocks,
answers whole ones from their statistics and decodes the rest, a few hundred microseconds of
Python per series. Over many series with buckets (TSBS double-groupby: 100 hosts, 12 hourly
buckets, day-long cold blocks) that is most of the time, while the SQL path's
:func:`rusts.sql.vector.aggregate` (decoded columns cached, one set of numpy reductions per
series) answers the same question 3-4x faster. JSON aggregates it covers take that path:

* grouped or bucketed (``group_by`` or ``interval_nanos``),
* Count, Sum, Mean, Min and Max of named float, integer or unsigned fields (integers stay exact:
  the vector path sums them modulo 2^64 with a float guide, :mod:`rusts.query.exact`).

The answer is rearranged into the executor's: buckets where no aggregate saw a value dropped,
groups sorted by their tag values, a missing tag
as ``""`` in the group's tags, rows by (group, bucket) (buckets descending with ``order: Desc``),
then ``offset`` and ``limit``. An empty answer is left to the executor, whose empty shapes the
API has always had. Floats may differ from the executor's in the last digit (sums added in
another order), as they already do between storage states.
"""

from __future__ import annotations

import numpy as np

from rusts.model import FieldType
from rusts.query.model import AggFunc, Query
from rusts.query.result import ResultSet

_FUNCS = frozenset({AggFunc.Count, AggFunc.Sum, AggFunc.Mean, AggFunc.Min, AggFunc.Max})
_NUMERIC = frozenset({FieldType.FLOAT, FieldType.INTEGER, FieldType.UNSIGNED})


def covers(q: Query, field_types: dict) -> bool:
    """Whether the JSON aggregate ``q`` takes the vector path."""
    if not q.aggregations or (not q.group_by and q.interval is None):
        return False
    return all(a.function in _FUNCS and a.field is not None and field_types.get(a.field) in _NUMERIC
               for a in q.aggregations)


def json_answer(snap, q: Query, sids, tags_of, field_types: dict) -> ResultSet:
    """The vector path's answer to ``q`` (:func:`covers` it) in the executor's shape; an empty
    answer is the executor's (its empty shapes are the API's)."""
    from rusts.query.executor import execute
    from rusts.sql.vector import aggregate

    rs = aggregate(snap, q, sids, tags_of, field_types)
    if len(rs) == 0:
        return execute(snap, q, sids, tags_of, field_types)
    return in_executor_shape(rs, q)


def in_executor_shape(rs: ResultSet, q: Query) -> ResultSet:
    """The vector path's answer ``rs`` to ``q`` ordered and labelled as the executor's (and only
    its buckets where an aggregate saw a value: SQL keeps every bucket that has rows)."""
    from rusts.sql.vector import seen_buckets

    rs = seen_buckets(q, rs)
    keys = [tuple(t.get(k) or "" for k in q.group_by) for t in rs.group_tags]
    uniq = sorted(set(keys))
    rank = {k: i for i, k in enumerate(uniq)}
    new_g = np.fromiter((rank[k] for k in keys), np.int64, len(keys))[rs.row_group] if len(keys) else rs.row_group
    b = rs.timestamps if rs.timestamps is not None else np.zeros(len(new_g), np.int64)
    if q.order == "Desc" and q.interval is not None:
        order = np.lexsort((-b, new_g))
    else:
        order = np.lexsort((b, new_g))
    hi = None if q.limit is None else q.offset + q.limit
    order = order[q.offset:hi]
    cols = {n: c.take(order) for n, c in rs.fields.items()}
    return ResultSet(rs.measurement, None if rs.timestamps is None else rs.timestamps[order], new_g[order],
                     [dict(zip(q.group_by, k)) for k in uniq], cols, list(rs.field_order), True,
                     {n: c.type for n, c in cols.items()})
