"""Parquet files with every field type, nulls and many row groups, and the rows they should give."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

BASE_MS = 1_700_000_000_000


def sample_table(n: int = 3000, seed: int = 3) -> pa.Table:
    """``n`` rows, unique timestamps (ms, time-zone aware), two tags (one with nulls), five field
    types with nulls, and row 5 with every field null."""
    rng = np.random.default_rng(seed)
    k = np.arange(n)
    null = lambda p: rng.random(n) < p  # noqa: E731
    f = np.round(rng.normal(size=n) * 100, 3)
    f_null, i_null, b_null, s_null = null(0.1), null(0.1), null(0.2), null(0.3)
    for m in (f_null, i_null, b_null, s_null):
        m[5] = True
    u_null = np.zeros(n, dtype=bool)
    u_null[5] = True
    host = np.where(null(0.05), None, rng.choice(["h1", "h2", "h 3"], n))
    return pa.table({
        "timestamp": pa.array(BASE_MS + k, pa.timestamp("ms", tz="UTC")),
        "host": pa.array(host.tolist(), pa.string()),
        "dc": pa.array(rng.choice(["eu", "us"], n)).dictionary_encode(),
        "f": pa.array(f, mask=f_null),
        "i": pa.array(rng.integers(-1000, 1000, n).astype(np.int32), mask=i_null),
        "u": pa.array((k * 7).astype(np.uint64), mask=u_null),
        "b": pa.array(rng.random(n) < 0.5, mask=b_null),
        "s": pa.array([f"s{j % 17}" for j in k], mask=s_null),
        "id": pa.array(k.astype(np.int64) + 1_000_000, mask=u_null),
    })


def expected_rows(table: pa.Table, tags=("host", "dc"), time_col="timestamp") -> dict:
    """{(ts_ns, ((tag, value), ...)): {field: value}} computed row by row, for comparisons."""
    cols = {name: table.column(name).to_pylist() for name in table.column_names}
    ts = table.column(time_col).cast(pa.int64()).to_pylist()
    out = {}
    for r in range(table.num_rows):
        t = tuple(sorted((k, cols[k][r]) for k in tags if cols[k][r] not in (None, "")))
        fields = {k: v[r] for k, v in cols.items() if k not in tags and k != time_col and v[r] is not None}
        if fields:
            out[(ts[r] * 1_000_000, t)] = fields
    return out


def rows_of(result: dict) -> dict:
    """The same shape from a ``/sql`` JSON answer of ``SELECT *``."""
    return {(r["timestamp"], tuple(sorted(r["tags"].items()))): r["fields"] for r in result["results"]}


@pytest.fixture
def sample_parquet(tmp_path):
    table = sample_table()
    path = tmp_path / "sample.parquet"
    pq.write_table(table, path, row_group_size=700)
    return path, table


@pytest.fixture
def helpers():
    import types

    return types.SimpleNamespace(sample_table=sample_table, expected_rows=expected_rows, rows_of=rows_of)
