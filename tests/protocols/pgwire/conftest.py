"""Fixtures for the pgwire tests: a stub SQL backend and a running trio server.

The stub answers a tiny fixed language so that real clients can be exercised end to end:

* ``select 1`` -> one int4 column ``?column?``;
* ``select * from cpu [where usage > $1]`` -> a fixed 3-row table (timestamp, text with a NULL,
  float8 with NaN, int8, bool, numeric);
* ``select rows N`` -> N generated rows (time, value float8, id int8);
* ``select sleep`` -> sleeps 30 s (cancel tests); ``boom`` anywhere -> QueryError with position;
* ``set ...`` -> tag SET; ``show x`` -> one text row; anything else -> syntax error at describe.
"""

from __future__ import annotations

import re
from decimal import Decimal

import attrs
import numpy as np
import pytest
import trio

from rusts.errors import QueryError
from rusts.protocols.pgwire import PgServer, SqlResult

T0 = 1_700_000_000_000_000_000
CPU_COLUMNS = (("time", "timestamp"), ("host", "text"), ("usage", "float8"), ("count", "int8"),
               ("ok", "bool"), ("amount", "numeric"))
CPU_ARRAYS = (
    np.array([T0, T0 + 1_500_000_000, T0 + 60_000_000_000], dtype=np.int64),
    np.array(["alpha", None, "gamma é"], dtype=object),
    np.array([0.5, float("nan"), 99.25]),
    np.array([1, -2, 3_000_000_000], dtype=np.int64),
    np.array([True, False, True]),
    np.array([Decimal("1.50"), Decimal("-20"), Decimal("0.001")], dtype=object),
)
ROWS_COLUMNS = (("time", "timestamptz"), ("value", "float8"), ("id", "int8"))


def rows_result(n: int) -> SqlResult:
    ids = np.arange(n, dtype=np.int64)
    return SqlResult(ROWS_COLUMNS, (T0 + ids * 1_000_000_000, ids * 0.5, ids), f"SELECT {n}")


class StubBackend:
    """A fake SQL engine for protocol tests."""

    def __init__(self, params: dict) -> None:
        self.params = params
        self.executed: list[tuple[str, object]] = []

    def split_statements(self, sql: str) -> list[str]:
        return [s.strip() for s in sql.split(";") if s.strip()]

    def _shape(self, sql: str) -> tuple[str, list[int], tuple | None]:
        q = " ".join(sql.lower().split()).rstrip(";")
        nparams = len(set(re.findall(r"\$(\d+)", q)))
        if "boom" in q:
            return "boom", [0] * nparams, (("x", "int4"),)
        if q == "select 1":
            return "one", [], (("?column?", "int4"),)
        if q.startswith("select * from cpu"):
            return "cpu", [701] * nparams, CPU_COLUMNS
        if q.startswith("select $1"):
            return "echo", [0] * nparams, (("echo", "text"),)
        if re.fullmatch(r"select rows (\d+)", q):
            return "rows", [], ROWS_COLUMNS
        if q == "select sleep":
            return "sleep", [], (("x", "int4"),)
        if q.startswith("set "):
            return "set", [], None
        if q.startswith("show "):
            return "show", [], ((q.split()[1], "text"),)
        raise QueryError(f'syntax error at or near "{sql.split()[0] if sql.split() else sql}"',
                         position=1)

    async def describe(self, sql: str, param_types):
        await trio.lowlevel.checkpoint()
        _, oids, cols = self._shape(sql)
        return oids, cols

    async def execute(self, sql: str, params=None) -> SqlResult:
        await trio.lowlevel.checkpoint()
        self.executed.append((sql, params))
        kind, _, cols = self._shape(sql)
        q = " ".join(sql.lower().split())
        if kind == "boom":
            raise QueryError("boom happened", position=q.index("boom") + 1)
        if kind == "one":
            return SqlResult(cols, (np.array([1], dtype=np.int32),), "SELECT 1")
        if kind == "cpu":
            arrays = CPU_ARRAYS
            literal = re.search(r"usage > (-?[\d.]+)", q)
            bound = float(params[0]) if params else float(literal.group(1)) if literal else None
            if bound is not None:  # NaN compares greater than everything (as in PostgreSQL)
                keep = np.nan_to_num(arrays[2], nan=np.inf) > bound
                arrays = tuple(a[keep] for a in arrays)
            return SqlResult(cols, arrays, f"SELECT {len(arrays[0])}")
        if kind == "echo":
            arr = np.empty(1, dtype=object)
            arr[0] = None if params[0] is None else str(params[0])
            return SqlResult(cols, (arr,), "SELECT 1")
        if kind == "rows":
            return rows_result(int(q.split()[2]))
        if kind == "sleep":
            await trio.sleep(30)
        if kind == "set":
            return SqlResult((), (), "SET")
        if kind == "show":
            return SqlResult(cols, (np.array(["on"], dtype=object),), "SHOW")
        raise AssertionError(kind)


@attrs.define
class Running:
    """A server under test: its port, the PgServer object and the backends it created."""

    port: int
    server: PgServer
    backends: list


async def start_server(nursery, **kw) -> Running:
    backends: list[StubBackend] = []

    def factory(params: dict) -> StubBackend:
        b = StubBackend(params)
        backends.append(b)
        return b

    server = PgServer(factory, **kw)
    port = await nursery.start(lambda task_status: server.serve("127.0.0.1", 0, task_status=task_status))
    return Running(port, server, backends)


@pytest.fixture
async def pg(nursery) -> Running:
    """A running server with trust auth on a free port."""
    return await start_server(nursery, max_connections=30)


@pytest.fixture
def start(nursery):
    """``await start(**PgServer kwargs)`` -> Running."""
    return lambda **kw: start_server(nursery, **kw)


@pytest.fixture
def stub_backend_cls():
    return StubBackend
