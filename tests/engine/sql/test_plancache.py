"""The SQL plan cache: a plan instantiated from a template learned on other literal values (and
another ``now()``) must equal the plan of the statement translated from scratch, for every
statement shape; shapes it cannot parameterise are answered uncached, never wrongly."""

from __future__ import annotations

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, given, settings

from rusts.model import FieldType
from rusts.sql.runner import _plan_text
from rusts.sql.plancache import PlanCache, literals
from rusts.sql.translate import Catalog

TABLES = {
    "cpu": (["host", "region"], {"usage": FieldType.FLOAT, "temp": FieldType.FLOAT,
                                 "count_i": FieldType.INTEGER, "state": FieldType.STRING}),
}
NOW = 1_700_000_000_000_000_000
H = 3_600_000_000_000


def cat():
    return Catalog.of_dicts(TABLES)


def learned(cache: PlanCache, text: str, now: int = NOW):
    assert _plan_text(text, now, cat()) is not None
    cache.learn(text, now, cat(), _plan_text)


# Statement shapes with {placeholders}; values drawn below.
SHAPES = [
    "SELECT time_bucket('1 minute', time) AS minute, MAX(usage) FROM cpu WHERE host = {s1} "
    "AND time >= {t1} AND time < {t2} GROUP BY minute ORDER BY minute",
    "SELECT host, AVG(usage) FROM cpu WHERE time > {t1} AND time <= {t2} GROUP BY host",
    "SELECT usage FROM cpu WHERE host IN ({s1}, {s2}) AND time >= {t1} ORDER BY time DESC LIMIT {n1}",
    "SELECT COUNT(*) FROM cpu WHERE host != {s1} AND usage > {f1}",
    "SELECT MAX(usage) FROM cpu WHERE time >= {t1} AND time >= {t2}",
    "SELECT host, AVG(usage) FROM cpu WHERE time > now() - INTERVAL '5 minutes' AND region = {s1} GROUP BY host",
    "SELECT DISTINCT ON (host) host, usage FROM cpu WHERE time >= {t1} ORDER BY host, time DESC",
    "SELECT usage, temp FROM cpu WHERE count_i >= {n1} AND state = {s1} LIMIT {n2} OFFSET {n1}",
    "SELECT host, PERCENTILE_95(usage) FROM cpu WHERE host ~ {s1} GROUP BY host HAVING AVG(usage) > {f1}",
]

strs = st.text(alphabet=st.sampled_from("ab'_xyz01é "), min_size=0, max_size=6)
times = st.integers(NOW - 100 * H, NOW + 100 * H)
ints = st.integers(0, 1000)
floats = st.floats(-1e6, 1e6, allow_nan=False).map(lambda f: round(f, 3))


def render(shape: str, vals: dict) -> str:
    out = {}
    for k, v in vals.items():
        out[k] = "'" + v.replace("'", "''") + "'" if isinstance(v, str) else repr(v)
    return shape.format(**out)


values = st.fixed_dictionaries({"s1": strs, "s2": strs, "t1": times, "t2": times, "n1": ints,
                                "n2": ints, "f1": floats})


@pytest.mark.parametrize("shape", SHAPES)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(first=values, second=values, shift=st.integers(-10 * H, 10 * H))
def test_cached_plan_equals_fresh_plan(shape, first, second, shift):
    cache = PlanCache()
    text1 = render(shape, first)
    if _plan_text(text1, NOW, cat()) is None:
        return
    cache.learn(text1, NOW, cat(), _plan_text)
    text2 = render(shape, second)
    now2 = NOW + shift
    got, _ = cache.lookup(text2, now2, cat())
    if got is not None:
        assert got == _plan_text(text2, now2, cat())


def test_common_shapes_are_cached():
    cache = PlanCache()
    a = render(SHAPES[0], {"s1": "host_1", "t1": NOW, "t2": NOW + H})
    b = render(SHAPES[0], {"s1": "host_77", "t1": NOW - 5 * H, "t2": NOW - 4 * H})
    learned(cache, a)
    got, _ = cache.lookup(b, NOW, cat())
    assert got is not None and got == _plan_text(b, NOW, cat())
    kind, plan = got
    assert plan.query.tag_filters[0].value == "host_77"
    assert (plan.query.start, plan.query.end) == (NOW - 5 * H, NOW - 4 * H)
    # the same text at another now() (dashboards): the window moves with it
    dash = SHAPES[5].format(s1="'eu'")
    learned(cache, dash)
    later = NOW + 37 * 10**9 + 11
    got, _ = cache.lookup(dash, later, cat())
    assert got is not None and got == _plan_text(dash, later, cat())
    assert got[1].query.start == later - 5 * 60 * 10**9 + 1


def test_iso_time_literals_are_parameters():
    """TSBS and Grafana write windows as ISO strings; every new window must hit the template
    (a miss re-plans and re-learns: ~20 ms a statement), with the new window's bounds."""
    cache = PlanCache()
    shape = ("SELECT time_bucket('1 minute', time) AS minute, MAX(usage) FROM cpu WHERE host IN ({h}) "
             "AND time >= {a} AND time < {b} GROUP BY minute ORDER BY minute")
    learned(cache, shape.format(h="'host_1'", a="'2016-01-01 00:10:00'", b="'2016-01-01 01:10:00'"))
    for a, b, start in [("'2016-01-01 07:31:00'", "'2016-01-01T08:31:00Z'", 1451633460 * 10**9),
                        ("'2016-01-01 07:31:00.5'", "'2016-01-02'", 1451633460 * 10**9 + 5 * 10**8),
                        ("'2016-01-01 09:31:00+02:00'", "'2016-01-02'", 1451633460 * 10**9)]:
        text = shape.format(h="'host_9'", a=a, b=b)
        got, _ = cache.lookup(text, NOW, cat())
        assert got is not None and got == _plan_text(text, NOW, cat())
        assert got[1].query.start == start
    # a date-like string compared with a tag is a tag value: the cached plan keeps it as text
    tag = "SELECT MAX(usage) FROM cpu WHERE host = {h} AND time >= {a}"
    learned(cache, tag.format(h="'2016-01-01'", a="'2016-01-01'"))
    text = tag.format(h="'2017-05-05'", a="'2016-01-03'")
    got, _ = cache.lookup(text, NOW, cat())
    assert got is None or got == _plan_text(text, NOW, cat())
    assert _plan_text(text, NOW, cat())[1].query.tag_filters[0].value == "2017-05-05"


def test_non_parameter_literals_stay_in_the_key():
    cache = PlanCache()
    learned(cache, "SELECT time_bucket('1 minute', time) AS b, MAX(usage) FROM cpu GROUP BY b")
    got, cacheable = cache.lookup("SELECT time_bucket('5 minutes', time) AS b, MAX(usage) FROM cpu GROUP BY b",
                                  NOW, cat())
    assert got is None and cacheable  # a miss, to be learned; never the 1-minute plan


def test_schema_change_invalidates():
    tables = {"cpu": (["host"], {"usage": FieldType.FLOAT})}
    cache = PlanCache()
    c1 = Catalog.of_dicts(tables)
    text = "SELECT usage FROM cpu WHERE host = 'a'"
    cache.learn(text, NOW, c1, _plan_text)
    assert cache.lookup("SELECT usage FROM cpu WHERE host = 'b'", NOW, Catalog.of_dicts(tables))[0] is not None
    tables["cpu"] = (["host"], {"usage": FieldType.INTEGER})
    assert cache.lookup("SELECT usage FROM cpu WHERE host = 'b'", NOW, Catalog.of_dicts(tables))[0] is None


def test_literal_tokenizer():
    lits = literals("""SELECT "a 1", x FROM "t'" WHERE s = 'it''s' AND n >= 42 AND f < 1.5e3 AND host_2 = 'x'""")
    assert [(lit.kind, lit.value) for lit in lits] == [("s", "it's"), ("i", 42), ("f", 1500.0), ("s", "x")]
    lits = literals("SELECT 1 FROM t WHERE time >= '2016-01-01 00:00:01' AND s = '2016-13-01'")
    assert [(lit.kind, lit.value) for lit in lits] == [("i", 1), ("t", 1451606401 * 10**9), ("s", "2016-13-01")]
    assert literals("SELECT 1 -- comment") is None
    assert literals("SELECT $1") is None
    assert literals("SELECT E'\\n'") is None


async def _learned(timeout: float = 10.0) -> None:
    """Wait until the plan cache has no template left to learn in the background (a fixed 0.2 s
    was too short on a loaded machine: a full CI run failed on it)."""
    import trio

    from rusts.sql.runner import PLAN_CACHE

    with trio.fail_after(timeout):
        while PLAN_CACHE._learning:
            await trio.sleep(0.01)


async def test_database_catalog_is_reused_until_series_or_fields_change(tmp_path):
    """The catalog of a database is memoised per index/schema generation: repeated statements
    reuse it (and the plan cache checks each template's facts once), and a new field, a new tag
    key or a dropped table is seen by the very next statement."""

    import rusts.db
    from rusts.errors import UnknownColumnError, UnknownTableError
    from rusts.sql.runner import execute_sql

    async with rusts.db.open(tmp_path / "d") as db:
        await db.write(b"m,host=a x=1 1000\nm,host=b x=2 2000")
        c1 = Catalog.of_db(db)
        assert Catalog.of_db(db) is c1
        out = await execute_sql(db, "SELECT host, SUM(x) FROM m WHERE host = 'a' GROUP BY host")
        assert out.to_pylists() == [["a"], [1.0]]
        await _learned()  # the template is learned in the background, between requests
        out = await execute_sql(db, "SELECT host, SUM(x) FROM m WHERE host = 'b' GROUP BY host")
        assert out.to_pylists() == [["b"], [2.0]] and Catalog.of_db(db) is c1 and c1.verified
        with pytest.raises(UnknownColumnError):
            await execute_sql(db, "SELECT SUM(y) FROM m WHERE host = 'a'")
        await db.write(b"m,host=a y=5i 3000")  # new field of an existing series: schema changes
        assert Catalog.of_db(db) is not c1
        out = await execute_sql(db, "SELECT SUM(y) FROM m WHERE host = 'a'")
        assert out.to_pylists() == [[5]]
        await db.write(b"m,host=c,rack=r1 x=3 4000")  # a new tag key comes with a new series
        out = await execute_sql(db, "SELECT rack, SUM(x) FROM m WHERE host = 'c' GROUP BY rack")
        assert out.to_pylists() == [["r1"], [3.0]]
        await execute_sql(db, "DROP TABLE m")
        with pytest.raises(UnknownTableError):
            await execute_sql(db, "SELECT host, SUM(x) FROM m WHERE host = 'a' GROUP BY host")


async def test_templates_are_learned_in_the_background_without_holding_requests(tmp_path):
    import trio

    import rusts.db
    from rusts.sql.runner import PLAN_CACHE, execute_sql

    async with rusts.db.open(tmp_path / "d") as db:
        await db.write(b"cpu,host=a u=1 1000\ncpu,host=b u=2 2000")
        sql = "SELECT host, MAX(u) FROM cpu WHERE host = '{}' AND time >= {} GROUP BY host"
        hits = PLAN_CACHE.hits
        out = await execute_sql(db, sql.format("a", 17))  # a miss: answered, then learned
        assert out.to_pylists() == [["a"], [1.0]] and PLAN_CACHE.hits == hits
        # while learning, the loop keeps serving: a sleeper is woken on time
        t0 = trio.current_time()
        await trio.sleep(0.001)
        assert trio.current_time() - t0 < 0.05
        await _learned()
        out = await execute_sql(db, sql.format("b", 19))
        assert out.to_pylists() == [["b"], [2.0]] and PLAN_CACHE.hits == hits + 1


async def test_a_caller_that_never_yields_still_gets_the_template(tmp_path):
    import rusts.db
    from rusts.sql.runner import PLAN_CACHE, execute_sql

    async with rusts.db.open(tmp_path / "d") as db:
        await db.write(b"mem,host=a u=1 1000\nmem,host=b u=2 2000")
        sql = "SELECT host, MIN(u) FROM mem WHERE host = '{}' AND time < {} GROUP BY host"
        hits = PLAN_CACHE.hits
        for k in range(20):  # no checkpoint between statements: each miss advances the learning
            out = await execute_sql(db, sql.format("ab"[k % 2], 10_000 + k))
            assert out.to_pylists() == [["ab"[k % 2]], [float(k % 2 + 1)]]
        assert PLAN_CACHE.hits - hits >= 10
