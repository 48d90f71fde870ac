"""SQL -> query model translation: every row of the original RusTs SQL table, plus what must
*not* take the fast path (it would answer approximately), names, literals and parse errors."""

from __future__ import annotations

import pytest
import sqlglot

from rusts.errors import QueryError, UnsupportedError
from rusts.model import FieldType
from rusts.query.model import MAX_TIME, MIN_TIME, AggFunc, TagFilter, TagOp
from rusts.sql.runner import bind_params, parse_sql, split_statements
from rusts.sql.translate import (Catalog, CalendarInterval, item_names, parse_interval_text,
                                 parse_time_text, plan_fast)

CAT = Catalog.of_dicts({
    "cpu": (["host", "region"], {"usage": FieldType.FLOAT, "temperature": FieldType.FLOAT,
                                 "temp": FieldType.FLOAT, "count_i": FieldType.INTEGER,
                                 "state": FieldType.STRING, "up": FieldType.BOOLEAN}),
    "trips": (["hvfhs_license_num"], {"PULocationID": FieldType.INTEGER, "trip_miles": FieldType.FLOAT}),
})
NOW = 1_700_000_000_000_000_000
H = 3_600_000_000_000


def plan(sql: str):
    ast = parse_sql(sql)
    return plan_fast(ast, CAT, NOW, item_names(ast, sql))


def names(p):
    return [o.name for o in p.outputs]


# ---------------------------------------------------------------- the original's table

def test_field_selection():
    p = plan("SELECT usage, temperature FROM cpu")
    assert p.query.measurement == "cpu"
    assert p.query.fields == ("usage", "temperature")
    assert not p.query.aggregations
    assert names(p) == ["usage", "temperature"]


def test_wildcard_expands_time_tags_fields():
    p = plan("SELECT * FROM cpu")
    assert names(p) == ["time", "host", "region", "count_i", "state", "temp", "temperature", "up", "usage"]
    assert [o.pgtype for o in p.outputs][:4] == ["timestamp", "text", "text", "int8"]
    assert set(p.query.fields) == {"count_i", "state", "temp", "temperature", "up", "usage"}


@pytest.mark.parametrize("where, filters", [
    ("host = 'server01'", [TagFilter("host", TagOp.Eq, "server01")]),
    ("'server01' = host", [TagFilter("host", TagOp.Eq, "server01")]),
    ("region IN ('us-west', 'us-east')", [TagFilter("region", TagOp.In, None, ("us-west", "us-east"))]),
    # SQL: a series without the tag (NULL) is not "!= 'x'", so NotEq comes with Exists
    ("host != 'server01'", [TagFilter("host", TagOp.Exists), TagFilter("host", TagOp.NotEq, "server01")]),
    ("host <> 'server01'", [TagFilter("host", TagOp.Exists), TagFilter("host", TagOp.NotEq, "server01")]),
    ("host NOT IN ('a', 'b')", [TagFilter("host", TagOp.Exists), TagFilter("host", TagOp.NotIn, None, ("a", "b"))]),
    ("host IS NOT NULL", [TagFilter("host", TagOp.Exists)]),
    ("host IS NULL", [TagFilter("host", TagOp.NotExists)]),
    ("host ~ '^server0[12]$'", [TagFilter("host", TagOp.Regex, "^server0[12]$")]),
    ("host = 'a' AND region = 'b'", [TagFilter("host", TagOp.Eq, "a"), TagFilter("region", TagOp.Eq, "b")]),
])
def test_tag_predicates(where, filters):
    p = plan(f"SELECT usage FROM cpu WHERE {where}")
    assert p is not None
    assert list(p.query.tag_filters) == filters


@pytest.mark.parametrize("where, start, end", [
    ("time >= '2024-01-01' AND time < '2024-01-02'", 1704067200 * 10**9, 1704153600 * 10**9),
    ("time >= '2024-01-01T00:00:00Z' AND time <= '2024-01-01T00:00:01.5Z'",
     1704067200 * 10**9, 1704067201_500_000_001),
    ("time > 1000 AND time < 2000", 1001, 2000),
    ("time BETWEEN 1000 AND 2000", 1000, 2001),
    ("time > now() - INTERVAL '1 hour'", NOW - H + 1, MAX_TIME),
    ("time >= NOW() - INTERVAL '90 minutes' AND time < now()", NOW - H * 3 // 2, NOW),
    ("time >= CURRENT_TIMESTAMP - INTERVAL '1' DAY", NOW - 24 * H, MAX_TIME),
    ("time >= '2024-01-01T01:00:00+01:00'", 1704067200 * 10**9, MAX_TIME),
    ("time = 5", 5, 6),
    ("1000 <= time", 1000, MAX_TIME),
    ("time >= TIMESTAMP '2024-01-01 00:00:00'", 1704067200 * 10**9, MAX_TIME),
    ("time >= '2024-01-01'::timestamp", 1704067200 * 10**9, MAX_TIME),
])
def test_time_ranges(where, start, end):
    p = plan(f"SELECT usage FROM cpu WHERE {where}")
    assert p is not None
    assert (p.query.start, p.query.end) == (start, end)


@pytest.mark.parametrize("call, func, field, pct", [
    ("COUNT(*)", AggFunc.Count, None, None),
    ("COUNT(usage)", AggFunc.Count, "usage", None),
    ("SUM(usage)", AggFunc.Sum, "usage", None),
    ("AVG(usage)", AggFunc.Mean, "usage", None),
    ("MEAN(usage)", AggFunc.Mean, "usage", None),
    ("MIN(usage)", AggFunc.Min, "usage", None),
    ("MAX(temp)", AggFunc.Max, "temp", None),
    ("FIRST(usage)", AggFunc.First, "usage", None),
    ("LAST(state)", AggFunc.Last, "state", None),
    ("STDDEV(usage)", AggFunc.StdDev, "usage", None),
    ("VARIANCE(usage)", AggFunc.Variance, "usage", None),
    ("MEDIAN(usage)", AggFunc.Median, "usage", None),
    ("PERCENTILE_95(usage)", AggFunc.Percentile, "usage", 95.0),
    ("percentile_99_9(usage)", AggFunc.Percentile, "usage", 99.9),
])
def test_aggregates(call, func, field, pct):
    p = plan(f"SELECT {call} FROM cpu")
    assert p is not None
    (a,) = p.query.aggregations
    assert (a.function, a.field, a.percentile) == (func, field, pct)
    assert names(p) == [call.lower()]


def test_aggregate_output_types():
    p = plan("SELECT COUNT(*), SUM(count_i), SUM(usage), MIN(count_i), AVG(count_i), LAST(state) FROM cpu")
    assert [o.pgtype for o in p.outputs] == ["int8", "int8", "float8", "int8", "float8", "text"]


def test_group_by_tags():
    p = plan("SELECT host, region, AVG(usage), MAX(usage) FROM cpu GROUP BY host, region")
    assert p.query.group_by == ("host", "region")
    assert names(p) == ["host", "region", "avg(usage)", "max(usage)"]
    assert [o.kind for o in p.outputs] == ["tag", "tag", "field", "field"]


def test_group_by_tag_not_selected():
    p = plan("SELECT AVG(usage), MAX(usage) FROM cpu GROUP BY host")
    assert p.query.group_by == ("host",)


@pytest.mark.parametrize("sql", [
    "SELECT time_bucket('5 minutes', time) AS bucket, AVG(usage) FROM cpu GROUP BY bucket",
    "SELECT time_bucket('5 minutes', time), AVG(usage) FROM cpu GROUP BY time_bucket('5 minutes', time)",
    "SELECT time_bucket('5 minutes', time), AVG(usage) FROM cpu GROUP BY 1",
    "SELECT time_bucket(INTERVAL '5 minutes', time) b, AVG(usage) FROM cpu GROUP BY b",
    "SELECT time_bucket('5m', time) b, AVG(usage) FROM cpu GROUP BY b",
])
def test_time_bucket(sql):
    p = plan(sql)
    assert p is not None
    assert p.query.interval == 5 * 60 * 10**9
    assert p.outputs[0].kind == "time"


def test_time_bucket_with_tags_order_and_limit():
    p = plan("SELECT time_bucket('1 hour', time) AS b, host, COUNT(*) AS n FROM cpu "
             "WHERE host IN ('a', 'b') GROUP BY b, host ORDER BY b DESC, n LIMIT 10 OFFSET 2")
    assert p.query.interval == H and p.query.group_by == ("host",)
    assert p.sort == ((0, True, True), (2, False, False))
    assert (p.limit, p.offset, p.post_slice) == (10, 2, True)
    assert p.query.limit is None  # applied after the sort, not inside the executor


def test_order_by_time_desc_limit_offset_pushed_down():
    p = plan("SELECT * FROM cpu ORDER BY time DESC LIMIT 100 OFFSET 50")
    assert (p.query.order, p.query.limit, p.query.offset) == ("Desc", 100, 50)
    p = plan("SELECT usage FROM cpu ORDER BY time ASC LIMIT 10")
    assert (p.query.order, p.query.limit) == ("Asc", 10)


def test_order_by_aggregate_alias_is_post_sort():
    p = plan("SELECT host, AVG(usage) AS a FROM cpu GROUP BY host ORDER BY a DESC LIMIT 3")
    assert p.sort == ((1, True, True),) and p.limit == 3
    p = plan("SELECT host, AVG(usage) FROM cpu GROUP BY host ORDER BY AVG(usage)")
    assert p.sort == ((1, False, False),)


def test_unquoted_names_match_case_insensitively():
    p = plan("SELECT SUM(pulocationid) FROM TRIPS")
    assert p.query.measurement == "trips"
    assert p.query.aggregations[0].field == "PULocationID"


def test_aliases_win_and_expressions_are_named_by_lower_sql():
    p = plan("SELECT AVG(usage) AS mean_usage, COUNT(*), Max(temp) FROM cpu")
    assert names(p) == ["mean_usage", "count(*)", "max(temp)"]
    sql = "SELECT usage_user + usage_system, SUM(a)/COUNT(*), now() - INTERVAL '1 hour' AS t FROM cpu"
    assert item_names(parse_sql(sql), sql) == ["usage_user + usage_system", "sum(a)/count(*)", "t"]


# ---------------------------------------------------------------- not the fast path

@pytest.mark.parametrize("sql", [
    "SELECT usage FROM cpu WHERE host = 'a' OR host = 'b'",
    "SELECT usage FROM cpu WHERE NOT host = 'a'",
    "SELECT usage FROM cpu WHERE usage > 5",
    "SELECT usage + temp FROM cpu",
    "SELECT SUM(usage) / COUNT(*) FROM cpu",
    "SELECT host, COUNT(*) FROM cpu GROUP BY host HAVING COUNT(*) > AVG(usage) * 2",
    "SELECT host, COUNT(*) FROM cpu GROUP BY host HAVING MAX(usage) > 1 AND usage > 2",
    "SELECT CASE WHEN usage > 1 THEN 1 ELSE 0 END FROM cpu",
    "SELECT COUNT(DISTINCT host) FROM cpu",
    "SELECT * FROM (SELECT usage FROM cpu) s",
    "WITH a AS (SELECT usage FROM cpu) SELECT * FROM a",
    "SELECT usage FROM cpu UNION ALL SELECT usage FROM cpu",
    "SELECT DISTINCT host FROM cpu",
    "SELECT DISTINCT ON (host) host, usage FROM cpu ORDER BY host, time DESC",
    "SELECT usage, lag(usage) OVER (ORDER BY time) FROM cpu",
    "SELECT host FROM cpu GROUP BY host",
    "SELECT MIN(state) FROM cpu",  # MIN of a string: the executor refuses, SQL defines it
    "SELECT usage FROM cpu ORDER BY usage DESC",
    "SELECT host FROM cpu",  # no field: row existence is the general path's business
    "SELECT usage FROM cpu WHERE host !~ 'a'",
    "SELECT time_bucket('1 month', time), COUNT(*) FROM cpu GROUP BY 1",
    "SELECT a.usage FROM cpu a JOIN cpu b ON a.time = b.time",
    "SELECT usage FROM nosuch",
])
def test_general_path_constructs(sql):
    assert plan(sql) is None


# ---------------------------------------------------------------- literals

def test_parse_time_text():
    assert parse_time_text("1970-01-01") == 0
    assert parse_time_text("1970-01-01T00:00:00.000000001Z") == 1
    assert parse_time_text("1970-01-01 00:00:01.123456789") == 1_123_456_789
    assert parse_time_text("2024-01-01T00:00:00-02:00") == (1704067200 + 7200) * 10**9
    assert parse_time_text("1700000000000000000") == 1700000000000000000
    assert parse_time_text("2024-02-30") is None
    assert parse_time_text("yesterday") is None


def test_parse_interval_text():
    assert parse_interval_text("5 minutes") == 300 * 10**9
    assert parse_interval_text("1h30m") == 5400 * 10**9
    assert parse_interval_text("1 hour 30 minutes") == 5400 * 10**9
    assert parse_interval_text("250ms") == 250 * 10**6
    assert parse_interval_text("1.5 s") == 1_500_000_000
    assert parse_interval_text("soon") is None
    with pytest.raises(CalendarInterval):
        parse_interval_text("1 month")


# ---------------------------------------------------------------- parsing, params

def test_syntax_error_has_position():
    with pytest.raises(QueryError) as ei:
        parse_sql("SELECT * FROM cpu WHERE")
    assert ei.value.position is not None and ei.value.position >= 19
    with pytest.raises(QueryError) as ei:
        parse_sql("SELECT * FROM cpu\nLATEST BY host")
    assert "syntax error" in str(ei.value)
    assert ei.value.position is not None


@pytest.mark.parametrize("sql, word", [
    ("INSERT INTO cpu VALUES (1)", "INSERT"),
    ("DELETE FROM cpu", "DELETE"),
    ("DROP TABLE cpu", "DROP"),
    ("SELECT 1; SELECT 2", "multiple statements"),
])
def test_unsupported_statements_are_named(sql, word):
    with pytest.raises(UnsupportedError) as ei:
        parse_sql(sql)
    assert word in str(ei.value)
    assert ei.value.http_status == 400


def test_params_are_bound_as_literals_not_text():
    ast = bind_params(parse_sql("SELECT usage FROM cpu WHERE host = $1 AND time >= $2 LIMIT $3"),
                      ["a' OR '1'='1", 1000, 5])
    p = plan_fast(ast, CAT, NOW)
    assert list(p.query.tag_filters) == [TagFilter("host", TagOp.Eq, "a' OR '1'='1")]
    assert p.query.start == 1000 and p.query.limit == 5
    with pytest.raises(QueryError, match=r"\$2"):
        bind_params(parse_sql("SELECT usage FROM cpu WHERE host = $2"), ["x"])


def test_split_statements():
    assert split_statements("SELECT 1; SELECT ';' ; -- c;\n SELECT 2;") == \
        ["SELECT 1", "SELECT ';'", "-- c;\n SELECT 2"]
    assert split_statements(" ; ") == []


def test_empty_where_range_keeps_defaults():
    p = plan("SELECT usage FROM cpu")
    assert (p.query.start, p.query.end) == (MIN_TIME, MAX_TIME)
    assert sqlglot.parse_one("SELECT 1") is not None
