"""SQL -> query model: the fast path, plus the pieces both planners share (this module re-exports
them: :mod:`.measurements`, :mod:`.literals`, :mod:`.naming`, :mod:`.where`, :mod:`.fastplan`).

The fast path takes a parsed single-table ``SELECT`` that the query model can express exactly
(the original RusTs table: field/tag/time selection, ``*``, a conjunction of tag predicates and
time bounds, the model's aggregates, ``GROUP BY`` tags and one ``time_bucket``, ``ORDER BY``,
``LIMIT``/``OFFSET``) and turns it into a :class:`~rusts.query.model.Query` plus a description of the
output columns. Anything else makes :func:`plan_fast` return None and the statement goes to the
general (DuckDB) path, so a construct outside the table is never answered approximately.

SQL semantics the fast path must keep (checked by the differential test against DuckDB):

* ``tag != 'x'`` and ``tag NOT IN (...)`` are false for a series without that tag (NULL), so they
  translate to the model's NotEq/NotIn *plus* an Exists filter.
* Aggregates over zero rows without GROUP BY still answer one row (COUNT 0, the rest NULL);
  with GROUP BY they answer no rows.
* ``ORDER BY`` on anything but time is applied here after execution (aggregates are small), and
  then ``LIMIT``/``OFFSET``; for raw rows ordered by time both are pushed into the query.
* Time literals: ISO-8601 strings (naive = UTC, nanosecond fractions kept), integers (ns),
  ``now()``/``CURRENT_TIMESTAMP`` +/- ``INTERVAL``, ``'...'::timestamp`` and ``TIMESTAMP '...'``.
  ``now()`` is read once per statement, so every reference agrees.
"""

from __future__ import annotations

from rusts.sql.measurements import (  # noqa: F401
    TIME_COLUMN, Catalog, db_tag_keys,
)
from rusts.sql.literals import (  # noqa: F401
    _UNITS, _CALENDAR_UNITS, _IV_PART, CalendarInterval, parse_interval_text, eval_interval, _ISO,
    parse_time_text, _is_now, eval_time,
)
from rusts.sql.naming import (  # noqa: F401
    output_name, _CLAUSE_END, select_item_texts, naming_select, item_names,
)
from rusts.sql.where import (  # noqa: F401
    Bounds, conjuncts, _FLIP, _str_lit, analyze_where, _OPS, _NUMERIC, _const, field_predicate,
    predicate_tree, _absorb,
)
from rusts.sql.fastplan import (  # noqa: F401
    _AGG_CLASSES, _AGG_NAMES, _PCT, _STRING_OK, percentile_of, agg_call, model_aggregate,
    _bucket_interval, OutCol, FastPlan, _agg_type, _int_lit, single_table, column_resolver,
    _BLOCKERS, plan_fast, _NUMERIC_AGGS, _having, LatestPlan, plan_latest,
)
