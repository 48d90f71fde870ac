"""Query planning and vectorised execution over a consistent snapshot.

A :class:`Snapshot` is taken in the event loop in one synchronous step (segment readers from the
manifest, chunk references from the memtable), so a concurrent flush can only make a point appear
twice (resolved by the merge), never vanish. :func:`execute` then runs in a worker thread.

Plan per series: prune segments by time and by series membership, prune blocks by min/max time;
for aggregates whose sources do not overlap in time, blocks wholly inside the range (and inside one
time bucket) are answered from their pre-aggregates (count/sum/min/max) without decoding; the rest
is decoded, merged (last write wins) and aggregated with numpy, bucketed by ``(t - t mod interval)``.
"""

from __future__ import annotations

import numpy as np

from rusts.query.model import Query

from rusts.query.result import (  # noqa: F401
    Snapshot, ResultSet, _json_values, result_json,
)
from rusts.query.reading import (  # noqa: F401
    _tombstoned, select_series, _SegSource, _segment_sources, _mem_parts, _overlapping_blocks,
    _read_segment, read_series,
)
from rusts.query.raw import (  # noqa: F401
    _matching, predicate_mask, _fields_of, _read_filtered, execute_raw, _trim,
)
from rusts.query.aggregate import (  # noqa: F401
    _Acc, _bucket, _check_agg_types, _from_sub_stats, execute_aggregate, _mem_stats,
    aggregate_of_nothing, _finish, _cat, _compute,
)


def execute(snap: Snapshot, q: Query, sids: np.ndarray, tags_of, field_types: dict) -> ResultSet:
    """Run ``q`` over the snapshot for the selected series (worker thread)."""
    if q.is_aggregate:
        return execute_aggregate(snap, q, sids, tags_of, field_types)
    return execute_raw(snap, q, sids, tags_of, field_types)
