"""Differential test: our SQL (both paths) against DuckDB running the same SQL over the same rows.

Generated data: five series (one without the ``region`` tag), float/int/string/bool fields with
missing values, written as line protocol through ``db.write``; part is flushed into segments,
part stays in the memtable, and a few late rows land in the memtable inside the flushed time
range (so reads merge both). The reference is a DuckDB table built directly from the generated
rows, never from our scan.
"""

from __future__ import annotations

import math
from contextlib import asynccontextmanager

import duckdb
import numpy as np
import pyarrow as pa
import pytest
import trio

import rusts.db
from rusts.errors import QueryError, UnknownColumnError, UnknownTableError, UnsupportedError
from rusts.sql.runner import execute_sql, run_sql_http, to_pg_result
from rusts.sql.duck import from_arrow

T0 = 1_700_000_000_000_000_000
STEP = 7_000_000_000
NOW = T0 + 3_000 * 10**9
SERIES = [("h0", "us"), ("h1", "us"), ("h2", "eu"), ("h3", None), ("h4", "eu")]
PER_SERIES = 300
STRINGS = ["idle", "busy", "down", "with space", 'q"uote']


def generate(seed: int = 3):
    """Columnar rows: time, host, region, b, f, i, s (None = missing)."""
    rng = np.random.default_rng(seed)
    rows = {k: [] for k in ("time", "host", "region", "b", "f", "i", "s")}
    for si, (host, region) in enumerate(SERIES):
        # distinct timestamps across series (offset by series index) so ORDER BY time is total
        t = T0 + np.arange(PER_SERIES, dtype=np.int64) * STEP + rng.integers(0, 5, PER_SERIES) * 10**9 + si
        f = np.round(rng.normal(50, 20, PER_SERIES), 3)
        i = rng.integers(-20, 100, PER_SERIES)
        s = rng.integers(0, len(STRINGS), PER_SERIES)
        b = rng.random(PER_SERIES) < 0.5
        miss = rng.random((4, PER_SERIES)) < np.array([[0.1], [0.15], [0.2], [0.25]])
        if host == "h3":
            miss[1][:] = True  # h3 never has i: GROUP BY host must still list it (AVG(i) NULL)
        miss[0][miss[1] & miss[2] & miss[3]] = False  # every row keeps at least one field
        for k in range(PER_SERIES):
            rows["time"].append(int(t[k]))
            rows["host"].append(host)
            rows["region"].append(region)
            rows["f"].append(None if miss[0][k] else float(f[k]))
            rows["i"].append(None if miss[1][k] else int(i[k]))
            rows["s"].append(None if miss[2][k] else STRINGS[s[k]])
            rows["b"].append(None if miss[3][k] else bool(b[k]))
    return rows


def to_lines(rows, idx) -> bytes:
    out = []
    for k in idx:
        tags = f"host={rows['host'][k]}"
        if rows["region"][k] is not None:
            tags += f",region={rows['region'][k]}"
        fs = []
        if rows["f"][k] is not None:
            fs.append(f"f={rows['f'][k]!r}")
        if rows["i"][k] is not None:
            fs.append(f"i={rows['i'][k]}i")
        if rows["s"][k] is not None:
            esc = rows["s"][k].replace("\\", "\\\\").replace('"', '\\"')
            fs.append(f's="{esc}"')
        if rows["b"][k] is not None:
            fs.append(f"b={'true' if rows['b'][k] else 'false'}")
        out.append(f"m,{tags} {','.join(fs)} {rows['time'][k]}")
    return "\n".join(out).encode()


def reference(rows) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute("SET TimeZone='UTC'")
    t = pa.table({
        "time": pa.array(np.array(rows["time"], dtype=np.int64).view("datetime64[ns]")),
        "host": pa.array(rows["host"], pa.string()),
        "region": pa.array(rows["region"], pa.string()),
        "b": pa.array(rows["b"], pa.bool_()),
        "f": pa.array(rows["f"], pa.float64()),
        "i": pa.array(rows["i"], pa.int64()),
        "s": pa.array(rows["s"], pa.string()),
    })
    con.register("m_arrow", t)
    con.execute("CREATE TABLE m AS SELECT * FROM m_arrow")
    return con


async def _run_db(path, task_status=trio.TASK_STATUS_IGNORED):
    async with rusts.db.open(path) as db:
        task_status.started(db)
        await trio.sleep_forever()


@asynccontextmanager
async def loaded_db(tmp_path):
    """A database holding the generated rows: segments + memtable + late rows (overlap)."""
    rows = generate()
    n = len(rows["time"])
    times = np.array(rows["time"])
    split = T0 + PER_SERIES * STEP * 2 // 3
    old = np.flatnonzero(times < split)
    new = np.flatnonzero(times >= split)
    rng = np.random.default_rng(1)
    # late rows for all but h4, so scans take both the merge and the no-overlap route
    late = np.sort(rng.choice(old[np.array(rows["host"])[old] != "h4"], size=40, replace=False))
    first = np.setdiff1d(old, late)
    assert len(first) + len(late) + len(new) == n
    async with trio.open_nursery() as nursery:
        db = await nursery.start(_run_db, tmp_path / "data")
        for chunk in np.array_split(first, 3):
            r = await db.write(to_lines(rows, chunk))
            assert not r.errors, r.errors[:3]
        await db.flush()
        for chunk in (new, late):
            r = await db.write(to_lines(rows, chunk))
            assert not r.errors, r.errors[:3]
        try:
            yield db, reference(rows), rows
        finally:
            nursery.cancel_scope.cancel()


# ----------------------------------------------------------------------------- comparison

def _norm(x):
    if isinstance(x, float):
        if math.isnan(x):
            return ("nan",)
        return round(x, 6)
    return x


def _sort_key(row):
    return tuple((x is None, str(type(x).__name__) if x is not None else "", _norm(x) if x is not None else 0)
                 for x in row)


def _rows(out):
    cols = out.to_pylists()
    return [tuple(r) for r in zip(*cols)] if cols else []


def _close(a, b) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, bool) or isinstance(b, bool):
        return a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        if isinstance(a, float) and math.isnan(a):
            return isinstance(b, float) and math.isnan(b)
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)
    return a == b


def compare(ours, ref_table, ordered: bool) -> str | None:
    ref = from_arrow(ref_table, "")
    a, b = _rows(ours), _rows(ref)
    if len(ours.columns) != len(ref.columns):
        return f"column count {len(ours.columns)} != {len(ref.columns)}"
    if len(a) != len(b):
        return f"row count {len(a)} != {len(b)}; ours[:3]={a[:3]} ref[:3]={b[:3]}"
    if not ordered:
        a, b = sorted(a, key=_sort_key), sorted(b, key=_sort_key)
    for k, (ra, rb) in enumerate(zip(a, b)):
        if len(ra) != len(rb) or not all(_close(x, y) for x, y in zip(ra, rb)):
            return f"row {k}: ours={ra} ref={rb}"
    return None


def ts(ns: int) -> str:
    """ISO text of a ns timestamp (our side) ..."""
    return str(np.datetime64(ns, "ns")) + "Z"


def rts(ns: int) -> str:
    """... and the reference's exact literal."""
    return f"make_timestamp_ns({ns})"


TB = "time_bucket(INTERVAL '{}', time, TIMESTAMP '1970-01-01')"
MID = T0 + PER_SERIES * STEP // 2
Q1 = T0 + PER_SERIES * STEP // 4

# (ours, reference or None for the same text, ordered?)
CASES = [
    # ---- the original's table (fast path)
    ("SELECT * FROM m", None, False),
    ("SELECT f, i FROM m WHERE host = 'h0'", None, False),
    ("SELECT time, host, f, s FROM m WHERE host IN ('h0', 'h2') AND time >= '{}' AND time < '{}'".format(ts(Q1), ts(MID)),
     "SELECT time, host, f, s FROM m WHERE host IN ('h0', 'h2') AND time >= {} AND time < {}".format(rts(Q1), rts(MID)), False),
    (f"SELECT * FROM m WHERE time >= {Q1} AND time <= {MID}",
     f"SELECT * FROM m WHERE time >= {rts(Q1)} AND time <= {rts(MID)}", False),
    (f"SELECT f FROM m WHERE time BETWEEN {Q1} AND {MID}",
     f"SELECT f FROM m WHERE time BETWEEN {rts(Q1)} AND {rts(MID)}", False),
    ("SELECT host, f FROM m WHERE region != 'us'", None, False),
    ("SELECT host, f FROM m WHERE region NOT IN ('eu')", None, False),
    ("SELECT host, i FROM m WHERE region IS NULL", None, False),
    ("SELECT host, i FROM m WHERE region IS NOT NULL AND host <> 'h1'", None, False),
    ("SELECT host, b FROM m WHERE host ~ '^h[01]$'", "SELECT host, b FROM m WHERE regexp_matches(host, '^h[01]$')", False),
    ("SELECT COUNT(*), COUNT(f), COUNT(s), SUM(i), SUM(f), AVG(f), MIN(f), MAX(i), STDDEV(f), VARIANCE(i) FROM m",
     "SELECT COUNT(*), COUNT(f), COUNT(s), SUM(i), SUM(f), AVG(f), MIN(f), MAX(i), stddev_samp(f), var_samp(i) FROM m", False),
    ("SELECT host, COUNT(*), MEAN(f), MIN(i), MAX(f) FROM m GROUP BY host",
     "SELECT host, COUNT(*), AVG(f), MIN(i), MAX(f) FROM m GROUP BY host", False),
    ("SELECT region, COUNT(*), SUM(i) FROM m GROUP BY region", None, False),
    ("SELECT host, AVG(i), MAX(i) FROM m GROUP BY host", None, False),
    ("SELECT time_bucket('10 minutes', time) AS bk, MIN(i) FROM m WHERE host = 'h3' GROUP BY bk",
     f"SELECT {TB.format('10 minutes')} AS bk, MIN(i) FROM m WHERE host = 'h3' GROUP BY bk", False),
    ("SELECT region, host, AVG(i) FROM m WHERE time < '{}' GROUP BY region, host".format(ts(MID)),
     "SELECT region, host, AVG(i) FROM m WHERE time < {} GROUP BY region, host".format(rts(MID)), False),
    ("SELECT PERCENTILE_95(f), MEDIAN(f), PERCENTILE_10(i) FROM m",
     "SELECT quantile_cont(f, 0.95), quantile_cont(f, 0.5), quantile_cont(i, 0.1) FROM m", False),
    ("SELECT host, FIRST(f), LAST(f), FIRST(s), LAST(b) FROM m GROUP BY host",
     "SELECT host, arg_min(f, time), arg_max(f, time), arg_min(s, time), arg_max(b, time) FROM m GROUP BY host", False),
    ("SELECT time_bucket('5 minutes', time) AS bk, host, AVG(f), COUNT(*) FROM m GROUP BY bk, host ORDER BY bk, host",
     f"SELECT {TB.format('5 minutes')} AS bk, host, AVG(f), COUNT(*) FROM m GROUP BY bk, host ORDER BY bk, host", True),
    ("SELECT time_bucket('1 hour', time), MAX(i) FROM m WHERE host = 'h2' GROUP BY 1 ORDER BY 1 DESC",
     f"SELECT {TB.format('1 hour')}, MAX(i) FROM m WHERE host = 'h2' GROUP BY 1 ORDER BY 1 DESC", True),
    ("SELECT date_trunc('hour', time) AS h, SUM(f) FROM m GROUP BY h ORDER BY h",
     f"SELECT {TB.format('1 hour')} AS h, SUM(f) FROM m GROUP BY h ORDER BY h", True),
    ("SELECT * FROM m ORDER BY time DESC LIMIT 7 OFFSET 3", None, True),
    ("SELECT time, f FROM m WHERE host = 'h3' ORDER BY time LIMIT 5", None, True),
    ("SELECT host, AVG(f) AS a FROM m GROUP BY host ORDER BY a DESC LIMIT 3", None, True),
    ("SELECT host, COUNT(*) FROM m GROUP BY host ORDER BY COUNT(*) DESC, host LIMIT 2 OFFSET 1", None, True),
    ("SELECT COUNT(*), AVG(f) FROM m WHERE time > now() - INTERVAL '10 minutes'",
     f"SELECT COUNT(*), AVG(f) FROM m WHERE time > {rts(NOW - 600 * 10**9)}", False),
    ("SELECT COUNT(*), MAX(f) FROM m WHERE time > '2030-01-01'", None, False),
    ("SELECT host, COUNT(*) FROM m WHERE time > '2030-01-01' GROUP BY host", None, False),
    ("SELECT COUNT(*) FROM m WHERE host = 'nosuch'", None, False),
    # ---- the newest buckets only (ORDER BY bucket DESC LIMIT: the range is narrowed, then widened)
    ("SELECT time_bucket('1 minute', time) AS bk, MAX(f) FROM m WHERE time < '{}' GROUP BY bk "
     "ORDER BY bk DESC LIMIT 5".format(ts(MID)),
     f"SELECT {TB.format('1 minute')} AS bk, MAX(f) FROM m WHERE time < {rts(MID)} GROUP BY bk "
     "ORDER BY bk DESC LIMIT 5", True),
    ("SELECT time_bucket('2 minutes', time) AS bk, COUNT(*), AVG(i) FROM m WHERE f > 85 OR i > 97 GROUP BY bk "
     "ORDER BY bk DESC LIMIT 3 OFFSET 2",
     f"SELECT {TB.format('2 minutes')} AS bk, COUNT(*), AVG(i) FROM m WHERE f > 85 OR i > 97 GROUP BY bk "
     "ORDER BY bk DESC LIMIT 3 OFFSET 2", True),
    ("SELECT time_bucket('10 minutes', time) AS bk, host, MIN(f) FROM m WHERE host IN ('h0', 'h3') GROUP BY bk, host "
     "ORDER BY bk DESC LIMIT 4",
     f"SELECT {TB.format('10 minutes')} AS bk, host, MIN(f) FROM m WHERE host IN ('h0', 'h3') GROUP BY bk, host "
     "ORDER BY bk DESC, host LIMIT 4", False),
    # ---- value predicates in aggregates (vector and columnar paths): AND/OR trees, BETWEEN, IS NOT NULL
    ("SELECT host, COUNT(*), AVG(f), MAX(i) FROM m WHERE f > 70 OR i < -10 GROUP BY host", None, False),
    ("SELECT time_bucket('10 minutes', time) AS bk, COUNT(f), SUM(i) FROM m "
     "WHERE (f BETWEEN 20 AND 40 OR i >= 90) AND s IS NOT NULL GROUP BY bk ORDER BY bk",
     f"SELECT {TB.format('10 minutes')} AS bk, COUNT(f), SUM(i) FROM m "
     "WHERE (f BETWEEN 20 AND 40 OR i >= 90) AND s IS NOT NULL GROUP BY bk ORDER BY bk", True),
    ("SELECT MIN(f), MAX(f), COUNT(*) FROM m WHERE host = 'h2' AND (f = 50.5 OR (i > 50 AND b) OR s = 'busy')",
     None, False),
    ("SELECT host, COUNT(*) AS n FROM m GROUP BY host HAVING COUNT(*) > 240 ORDER BY host", None, True),
    ("SELECT host, AVG(f) AS a FROM m GROUP BY host HAVING AVG(f) > 50 OR MIN(i) < -19 ORDER BY a DESC", None, True),
    ("SELECT region, MAX(f) FROM m GROUP BY region HAVING NOT (MAX(f) < 100) AND region != 'us'", None, False),
    ("SELECT host, AVG(i) FROM m GROUP BY host HAVING AVG(i) IS NULL OR 10 > MIN(i)", None, False),
    ("SELECT region, COUNT(*) FROM m GROUP BY region HAVING region IS NOT NULL", None, False),
    ("SELECT host, AVG(i) AS i FROM m GROUP BY host HAVING AVG(i) > 0 ORDER BY i LIMIT 2", None, True),
    ("SELECT time_bucket('30 minutes', time) AS bk, COUNT(f) FROM m WHERE host = 'h0' GROUP BY bk "
     "HAVING SUM(f) >= 250 ORDER BY bk",
     f"SELECT {TB.format('30 minutes')} AS bk, COUNT(f) FROM m WHERE host = 'h0' GROUP BY bk "
     "HAVING SUM(f) >= 250 ORDER BY bk", True),
    ("SELECT host, PERCENTILE_90(f), FIRST(s), LAST(f) FROM m WHERE i > 0 GROUP BY host HAVING COUNT(*) > 3",
     "SELECT host, quantile_cont(f, 0.9), arg_min(s, time), arg_max(f, time) FROM m WHERE i > 0 GROUP BY host "
     "HAVING COUNT(*) > 3", False),
    # ---- beyond the original (general path)
    ("SELECT host, f FROM m WHERE host = 'h0' OR f > 80", None, False),
    ("SELECT host, i FROM m WHERE NOT (host = 'h1') AND i < 10", None, False),
    ("SELECT f + i AS x, f * 2, i % 7 FROM m WHERE f > 10 AND f - i < 20", None, False),
    ("SELECT host, SUM(f)/COUNT(*) FROM m GROUP BY host HAVING COUNT(*) > 10 AND MAX(f) > 60", None, False),
    ("SELECT CASE WHEN f > 50 THEN 'hi' WHEN f IS NULL THEN 'none' ELSE 'lo' END AS lvl, COUNT(*) FROM m GROUP BY 1",
     None, False),
    ("SELECT COUNT(DISTINCT host), COUNT(DISTINCT region), COUNT(DISTINCT s) FROM m", None, False),
    ("SELECT AVG(x), MAX(x) FROM (SELECT f * 2 AS x FROM m WHERE host = 'h0') sub", None, False),
    ("WITH t AS (SELECT host, MAX(f) AS mx FROM m GROUP BY host) SELECT * FROM t WHERE mx > 0", None, False),
    ("SELECT host, f FROM m WHERE host = 'h0' UNION ALL SELECT host, f FROM m WHERE host = 'h1' AND f > 50",
     None, False),
    ("WITH x AS (SELECT host, AVG(f) AS a FROM m GROUP BY host) "
     "SELECT m.host, COUNT(*) FROM m JOIN x ON m.host = x.host WHERE m.f > x.a GROUP BY m.host", None, False),
    ("SELECT DISTINCT ON (host) host, time, f FROM m ORDER BY host, time DESC", None, True),
    ("SELECT DISTINCT ON (region) * FROM m WHERE time < {} ORDER BY region DESC NULLS FIRST, time DESC".format(MID),
     "SELECT DISTINCT ON (region) * FROM m WHERE time < {} ORDER BY region DESC NULLS FIRST, time DESC".format(
         rts(MID)), True),
    ("SELECT DISTINCT ON (host, region) time, s, b FROM m WHERE host != 'h0' ORDER BY host, region, time DESC LIMIT 2",
     None, True),
    ("SELECT host, time, f, lag(f) OVER (PARTITION BY host ORDER BY time) AS prev, "
     "SUM(i) OVER (PARTITION BY host ORDER BY time ROWS UNBOUNDED PRECEDING) AS run, "
     "AVG(f) OVER (PARTITION BY host ORDER BY time ROWS BETWEEN 2 PRECEDING AND CURRENT ROW) AS ma FROM m",
     None, False),
    ("SELECT time, host, s FROM m WHERE s = 'busy' AND b", None, False),
    ("SELECT MIN(s), MAX(s), MIN(b), MAX(b) FROM m", None, False),
    ("SELECT time, f FROM m ORDER BY f DESC NULLS LAST, time LIMIT 5", None, True),
    ("SELECT time, f FROM m ORDER BY f NULLS FIRST, time LIMIT 5", None, True),
    ("SELECT DISTINCT host, region FROM m", None, False),
    ("SELECT host FROM m WHERE i > 90", None, False),
    ("SELECT time_bucket('10 minutes', time) AS bk, COUNT(*) FROM m WHERE host = 'h1' OR host = 'h2' GROUP BY bk",
     f"SELECT {TB.format('10 minutes')} AS bk, COUNT(*) FROM m WHERE host = 'h1' OR host = 'h2' GROUP BY bk", False),
    ("SELECT host, PERCENTILE_90(f) FROM m WHERE f > 0 GROUP BY host",
     "SELECT host, quantile_cont(f, 0.9) FROM m WHERE f > 0 GROUP BY host", False),
    ("SELECT COUNT(*) FILTER (WHERE b), AVG(f) FILTER (WHERE s = 'idle') FROM m", None, False),
    ("SELECT host, time, f FROM m LATEST ON time PARTITION BY host",
     "SELECT DISTINCT ON (host) host, time, f FROM m ORDER BY host, time DESC", False),
    ("SELECT host, f FROM m WHERE host = 'h0' AND time >= {} AND (f > 60 OR i < 0)".format(MID),
     "SELECT host, f FROM m WHERE host = 'h0' AND time >= {} AND (f > 60 OR i < 0)".format(rts(MID)), False),
    ("SELECT region, COUNT(*) FROM m WHERE region != 'us' OR region IS NULL GROUP BY region", None, False),
    ("SELECT a.host, b.host, a.n + b.n FROM (SELECT host, COUNT(*) n FROM m GROUP BY host) a "
     "CROSS JOIN (SELECT host, COUNT(*) n FROM m WHERE region = 'eu' GROUP BY host) b", None, False),
    ("SELECT 1 + 2 AS three", None, False),
    # ---- one series, simple aggregates (the vector path's one-series lane), h4 without late rows
    *[(f"SELECT time_bucket('10 minutes', time) AS bk, COUNT(*), COUNT(f), SUM(i), AVG(f), MIN(f), MAX(i), "
       f"SUM(b) FROM m WHERE host = '{h}' GROUP BY bk ORDER BY bk DESC",
       f"SELECT {TB.format('10 minutes')} AS bk, COUNT(*), COUNT(f), SUM(i), AVG(f), MIN(f), MAX(i), "
       f"SUM(b::INT) FROM m WHERE host = '{h}' GROUP BY bk ORDER BY bk DESC", True) for h in ("h1", "h4")],
    (f"SELECT COUNT(*), COUNT(s), SUM(f), MIN(i), MAX(f) FROM m WHERE host = 'h4' AND time >= {Q1} AND time < {MID}",
     f"SELECT COUNT(*), COUNT(s), SUM(f), MIN(i), MAX(f) FROM m WHERE host = 'h4' AND time >= {rts(Q1)} "
     f"AND time < {rts(MID)}", False),
    (f"SELECT COUNT(*), AVG(f) FROM m WHERE host = 'h2' AND time >= {MID * 2}",
     f"SELECT COUNT(*), AVG(f) FROM m WHERE host = 'h2' AND time >= {rts(MID * 2)}", False),
    (f"SELECT time_bucket('7 minutes', time) AS bk, MAX(f) FROM m WHERE host = 'h0' AND time >= {Q1} GROUP BY bk",
     f"SELECT {TB.format('7 minutes')} AS bk, MAX(f) FROM m WHERE host = 'h0' AND time >= {rts(Q1)} GROUP BY bk",
     False),
    # ---- raw reads with field predicates (the executor filters rows vectorised)
    ("SELECT time, host, f, i FROM m WHERE f >= 40 AND i > 10", None, False),
    ("SELECT time, f FROM m WHERE host = 'h1' AND f BETWEEN 30 AND 60 ORDER BY time DESC LIMIT 7", None, True),
    ("SELECT time, s, i FROM m WHERE host = 'h2' AND s = 'busy' AND b IS NOT NULL ORDER BY time LIMIT 5", None, True),
    ("SELECT time, host, f FROM m WHERE i IS NULL AND host IN ('h3', 'h0')", None, False),
    ("SELECT time, b FROM m WHERE host = 'h4' AND NOT b ORDER BY time DESC LIMIT 3", None, True),
    ("SELECT time, host, f, i FROM m WHERE (f > 70 OR i < -10) AND (s = 'idle' OR b)", None, False),
    ("SELECT time, f FROM m WHERE host = 'h0' AND (f IS NULL OR f BETWEEN 40 AND 45) ORDER BY time DESC LIMIT 9",
     None, True),
]


async def check_cases(db, ref, routes=("auto", "fast", "vector", "columnar", "general")) -> dict:
    """Every hand-written case through each route, compared with the reference; returns paths."""
    failures = []
    paths = {"fast": 0, "vector": 0, "duckdb": 0, "columnar": 0}
    for ours_sql, ref_sql, ordered in CASES:
        ref_table = ref.sql(ref_sql or ours_sql).to_arrow_table()
        for route in routes:
            try:
                ours = await execute_sql(db, ours_sql, now_ns=NOW, route=route)
            except Exception as e:  # collect, report all at once
                failures.append(f"[{route}] {ours_sql}\n  raised {type(e).__name__}: {e}")
                continue
            if route in ("fast", "vector", "columnar"):
                paths[ours.path] += 1
            diff = compare(ours, ref_table, ordered)
            if diff:
                failures.append(f"[{route}] {ours_sql}\n  {diff}")
    assert not failures, "\n".join(failures)
    return paths


async def test_hand_written_queries_match_duckdb(tmp_path):
    async with loaded_db(tmp_path) as (db, ref, _):
        # every statement through the automatic choice, the executor, the vector path, the
        # columnar in-memory path (the whole range is in memory here), DuckDB
        paths = await check_cases(db, ref)
        # every executor is exercised: the original's table on the fast paths, the rest in DuckDB
        assert paths["fast"] >= 15 and paths["vector"] >= 15 and paths["duckdb"] >= 50, paths
        assert paths["columnar"] >= 20, paths


async def test_deleted_points_stay_deleted_on_every_path(tmp_path, monkeypatch):
    import rusts.lifecycle.manager
    from rusts.query.model import TagFilter, TagOp

    # no compaction: the delete stays a tombstone that every read path must apply
    monkeypatch.setattr(rusts.lifecycle.manager.Lifecycle, "plan", lambda self, metas, now_ns=None: [])
    async with loaded_db(tmp_path) as (db, ref, _):
        await db.delete("m", Q1, MID, (TagFilter("host", TagOp.Eq, "h1"),))
        assert db.snapshot(db.index.series_of("m"), 0, 2**62).tombstones is not None
        ref.execute(f"DELETE FROM m WHERE host = 'h1' AND time >= {rts(Q1)} AND time < {rts(MID)}")
        await check_cases(db, ref)


# ----------------------------------------------------------------------------- random queries

def random_query(rng: np.random.Generator) -> tuple[str, str]:
    """A random query in a subset both sides understand, with the reference's time literals."""
    aggs = ["COUNT(*)", "COUNT(f)", "SUM(i)", "AVG(f)", "MIN(f)", "MAX(i)", "SUM(f)", "MAX(f)", "AVG(i)",
            "STDDEV(f)", "COUNT(s)", "MIN(i)"]
    ref_aggs = {"STDDEV(f)": "stddev_samp(f)"}
    preds: list[tuple[str, str]] = []
    tag_preds = ["host = 'h{}'", "host != 'h{}'", "host IN ('h{}', 'h3')", "host NOT IN ('h{}')",
                 "region = 'us'", "region != 'eu'", "region IS NULL", "region IS NOT NULL",
                 "region IN ('eu', 'xx')"]
    for _ in range(rng.integers(0, 4)):
        kind = rng.integers(0, 4)
        if kind == 0:
            p = tag_preds[rng.integers(len(tag_preds))].format(rng.integers(0, 5))
            preds.append((p, p))
        elif kind == 1:
            t = int(T0 + rng.integers(0, PER_SERIES) * STEP)
            op = [">=", ">", "<", "<="][rng.integers(4)]
            lit = ts(t) if rng.random() < 0.5 else str(t)
            preds.append((f"time {op} '{lit}'" if not lit.isdigit() else f"time {op} {lit}",
                          f"time {op} {rts(t)}"))
        elif kind == 2:
            p = ["f > 50", "i <= 10", "s = 'idle'", "b", "f IS NULL", "i BETWEEN 0 AND 40"][rng.integers(6)]
            preds.append((p, p))
        else:
            a = tag_preds[rng.integers(len(tag_preds))].format(rng.integers(0, 5))
            p = f"({a} OR f < 30)"
            preds.append((p, p))
    n_aggs = rng.integers(0, 4)
    chosen = [aggs[k] for k in rng.choice(len(aggs), size=n_aggs, replace=False)] if n_aggs else []
    group = [g for g in ("host", "region") if rng.random() < 0.35] if chosen else []
    bucket = None
    if chosen and rng.random() < 0.4:
        bucket = ["5 minutes", "30 minutes", "1 hour"][rng.integers(3)]
    if chosen:
        sel, rsel = list(group), list(group)
        if bucket:
            sel.insert(0, f"time_bucket('{bucket}', time) AS bk")
            rsel.insert(0, f"{TB.format(bucket)} AS bk")
        sel += chosen
        rsel += [ref_aggs.get(a, a) for a in chosen]
        gb = (["bk"] if bucket else []) + group
    else:
        cols = ["time"] + [c for c in ("host", "region", "f", "i", "s", "b") if rng.random() < 0.5]
        if not any(c in cols for c in ("f", "i", "s", "b")):
            cols.append("f")
        sel = rsel = cols
        gb = []
    where = " AND ".join(p for p, _ in preds)
    rwhere = " AND ".join(r for _, r in preds)
    q = f"SELECT {', '.join(sel)} FROM m"
    r = f"SELECT {', '.join(rsel)} FROM m"
    if where:
        q += f" WHERE {where}"
        r += f" WHERE {rwhere}"
    if gb:
        q += f" GROUP BY {', '.join(gb)}"
        r += f" GROUP BY {', '.join(gb)}"
    return q, r


async def test_random_queries_match_duckdb(tmp_path):
    rng = np.random.default_rng(20240601)
    async with loaded_db(tmp_path) as (db, ref, _):
        failures = []
        paths = {"fast": 0, "vector": 0, "duckdb": 0, "columnar": 0}
        for k in range(150):
            q, r = random_query(rng)
            expected = ref.sql(r).to_arrow_table()
            for route in (("auto",), ("fast", "general"), ("vector", "columnar"))[k % 3]:
                try:
                    ours = await execute_sql(db, q, now_ns=NOW, route=route)
                except Exception as e:
                    failures.append(f"[{route}] {q}\n  raised {type(e).__name__}: {e}")
                    continue
                paths[ours.path] += 1
                diff = compare(ours, expected, False)
                if diff:
                    failures.append(f"[{route}] {q}\n  {diff}")
        assert not failures, f"{len(failures)} mismatches:\n" + "\n".join(failures[:15])
        assert paths["fast"] >= 30 and paths["vector"] >= 30 and paths["duckdb"] >= 60, paths
        assert paths["columnar"] >= 15, paths


# ----------------------------------------------------------------------------- names, errors, shapes

async def test_names_types_and_json_shape(tmp_path):
    async with loaded_db(tmp_path) as (db, _, _):
        body = await run_sql_http(db, "SELECT time_bucket('10 minutes', time) AS hour, host, AVG(f), "
                                      "COUNT(*) AS n, SUM(f)/COUNT(*) FROM m WHERE host = 'h0' "
                                      "GROUP BY hour, host ORDER BY hour LIMIT 2")
        assert body["columns"] == [{"name": "hour", "type": "timestamp"}, {"name": "host", "type": "text"},
                                   {"name": "avg(f)", "type": "float8"}, {"name": "n", "type": "int8"},
                                   {"name": "sum(f)/count(*)", "type": "float8"}]
        assert body["measurement"] == "m" and body["total_rows"] == 2
        r0 = body["results"][0]
        assert r0["timestamp"] % 600_000_000_000 == 0
        assert r0["tags"] == {"host": "h0"}
        assert set(r0["fields"]) == {"avg(f)", "n", "sum(f)/count(*)"}
        raw = await run_sql_http(db, "SELECT * FROM m WHERE host = 'h3' ORDER BY time LIMIT 3")
        assert [c["name"] for c in raw["columns"]] == ["time", "host", "region", "b", "f", "i", "s"]
        assert raw["results"][0]["tags"] == {"host": "h3"}  # NULL region is omitted
        tables = await run_sql_http(db, "SHOW TABLES")
        assert tables == {"measurement": "_tables", "results": [{"fields": {"name": "m"}}], "total_rows": 1,
                          "execution_time_ms": tables["execution_time_ms"]}


async def test_errors(tmp_path):
    async with loaded_db(tmp_path) as (db, _, _):
        with pytest.raises(UnknownTableError, match='relation "nosuch" does not exist'):
            await execute_sql(db, "SELECT * FROM nosuch")
        with pytest.raises(UnknownTableError, match='relation "nosuch" does not exist'):
            await execute_sql(db, "SELECT a.f FROM m a JOIN nosuch b ON a.time = b.time")
        with pytest.raises(UnknownColumnError, match='column "nope" does not exist'):
            await execute_sql(db, "SELECT nope FROM m")
        with pytest.raises(UnknownColumnError, match="nope"):
            await execute_sql(db, "SELECT AVG(nope) FROM m WHERE f > 1")
        with pytest.raises(QueryError) as ei:
            await execute_sql(db, "SELECT f FROM m WHERE f >")
        assert ei.value.position is not None and ei.value.http_status == 400
        with pytest.raises(QueryError) as ei:
            await execute_sql(db, "SELECT SUM(s) FROM m")
        assert ei.value.http_status == 400
        with pytest.raises(QueryError):
            await execute_sql(db, "SELECT host, COUNT(*) FROM m")  # host not grouped
        with pytest.raises(UnsupportedError, match="INSERT"):
            await execute_sql(db, "INSERT INTO m VALUES (1)")


async def test_show_and_information_schema(tmp_path):
    async with loaded_db(tmp_path) as (db, _, _):
        cols = await execute_sql(db, "SHOW COLUMNS FROM m")
        got = list(zip(*cols.to_pylists()))
        assert got == [("time", "timestamp", "time"), ("host", "text", "tag"), ("region", "text", "tag"),
                       ("b", "bool", "field"), ("f", "float8", "field"), ("i", "int8", "field"),
                       ("s", "text", "field")]
        keys = await execute_sql(db, "SHOW TAG KEYS FROM m")
        assert keys.to_pylists() == [["host", "region"]]
        vals = await execute_sql(db, "SHOW TAG VALUES FROM m WITH KEY = 'region'")
        assert vals.to_pylists() == [["region", "region"], ["eu", "us"]]
        meas = await execute_sql(db, "SHOW MEASUREMENTS")
        assert meas.to_pylists() == [["m"]]
        info = await execute_sql(db, "SELECT column_name, data_type FROM information_schema.columns "
                                     "WHERE table_name = 'm' ORDER BY ordinal_position")
        assert info.to_pylists()[0] == ["time", "host", "region", "b", "f", "i", "s"]
        t = await execute_sql(db, "SELECT table_name FROM information_schema.tables")
        assert t.to_pylists() == [["m"]]
        with pytest.raises(UnknownTableError):
            await execute_sql(db, "SHOW COLUMNS FROM nosuch")


async def test_params_and_pg_result(tmp_path):
    async with loaded_db(tmp_path) as (db, ref, _):
        out = await execute_sql(db, "SELECT time, f FROM m WHERE host = $1 AND f > $2 ORDER BY time LIMIT $3",
                                ["h0", 50.0, 4])
        exp_ = ref.sql("SELECT time, f FROM m WHERE host = 'h0' AND f > 50 ORDER BY time LIMIT 4").to_arrow_table()
        assert compare(out, exp_, True) is None
        injected = await execute_sql(db, "SELECT COUNT(*) FROM m WHERE host = $1", ["h0' OR '1'='1"])
        assert injected.to_pylists() == [[0]]
        res = to_pg_result(await execute_sql(db, "SELECT time, region, f FROM m WHERE host = 'h3' ORDER BY time"))
        assert [c for c in res.columns] == [("time", "timestamp"), ("region", "text"), ("f", "float8")]
        assert res.arrays[0].dtype == np.int64
        assert res.arrays[1].dtype == object and res.arrays[1][0] is None


async def test_limit_without_order_by_returns_the_earliest_rows_on_every_path(tmp_path):
    async with loaded_db(tmp_path) as (db, ref, _):
        exp_ = ref.sql("SELECT time, f FROM m ORDER BY time LIMIT 5").to_arrow_table()
        for route in ("auto", "general"):
            out = await execute_sql(db, "SELECT time, f FROM m LIMIT 5", route=route)
            assert compare(out, exp_, True) is None, route
        exp_ = ref.sql("SELECT time, f FROM m WHERE f > 50 ORDER BY time LIMIT 5 OFFSET 2").to_arrow_table()
        out = await execute_sql(db, "SELECT time, f FROM m WHERE f > 50 LIMIT 5 OFFSET 2")
        assert out.path == "fast" and compare(out, exp_, True) is None


async def test_describe_names_and_types_without_reading(tmp_path):
    from rusts.sql.runner import describe_sql

    async with loaded_db(tmp_path) as (db, _, _):
        for sql, params in [
                ("SELECT * FROM m WHERE host = $1", ["h0"]),
                ("SELECT time_bucket('5 minutes', time) AS bk, host, AVG(f), COUNT(*), SUM(i), MAX(i), "
                 "PERCENTILE_95(i), LAST(s) FROM m WHERE time > $1 GROUP BY bk, host", [T0]),
                ("SELECT host, f * 2 AS d, CASE WHEN b THEN 'y' END FROM m WHERE f > $2 LIMIT $1", [3, 1.5])]:
            n, cols = await describe_sql(db, sql)
            out = await execute_sql(db, sql, params)
            assert n == len(params)
            assert cols == tuple((c.name, c.type) for c in out.columns), sql
        assert (await describe_sql(db, "SHOW TABLES")) == (0, (("name", "text"),))
        assert (await describe_sql(db, "SELECT COUNT(*) FROM m WHERE host = $3"))[0] == 3
