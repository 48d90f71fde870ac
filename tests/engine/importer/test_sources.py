"""Streamed readers, their resume positions, line-protocol output and dedup keys."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest

from rusts.importer.dedup import KeySet
from rusts.importer.errors import ImportInputError
from rusts.importer.lpformat import encode
from rusts.importer.mapping import make_plan, normalise, to_write_batch
from rusts.importer.sources import CsvSource, LineProtocolSource, ParquetSource, expand
from rusts.protocols.line_protocol import parse


def _table(n: int) -> pa.Table:
    return pa.table({"timestamp": pa.array(np.arange(n, dtype=np.int64)), "v": pa.array(np.arange(n) * 0.5)})


@pytest.mark.parametrize("skip", [0, 1, 699, 700, 701, 1999, 2000])
def test_parquet_batches_resume_at_any_row(tmp_path, skip):
    path = tmp_path / "a.parquet"
    pq.write_table(_table(2000), path, row_group_size=700)
    src = ParquetSource(str(path))
    got = list(src.batches(300, skip))
    assert all(rb.num_rows <= 300 for rb, _ in got)
    ts = [t for rb, _ in got for t in rb.column("timestamp").to_pylist()]
    assert ts == list(range(skip, 2000))
    if got:  # each position is the row after its batch
        assert got[-1][1] == 2000
        assert [p for _, p in got] == list(np.cumsum([rb.num_rows for rb, _ in got]) + skip)


@pytest.mark.parametrize("skip", [0, 5, 250])
def test_csv_batches_resume_at_any_row(tmp_path, skip):
    path = tmp_path / "a.csv"
    pcsv.write_csv(_table(250), path)
    got = list(CsvSource(str(path)).batches(40, skip))
    ts = [t for rb, _ in got for t in rb.column("timestamp").to_pylist()]
    assert ts == list(range(skip, 250))
    assert all(rb.num_rows <= 40 for rb, _ in got)


def test_line_protocol_chunks_cut_at_lines_and_resume_by_byte(tmp_path):
    lines = [f"m,h=a v={i} {i}" for i in range(95)]
    path = tmp_path / "a.lp"
    path.write_text("\n".join(lines))  # no final newline
    chunks = list(LineProtocolSource(str(path)).chunks(10))
    assert [n for _, n, _ in chunks] == [10] * 9 + [5]
    assert b"".join(c for c, _, _ in chunks).decode().split("\n") == lines
    pos = chunks[3][2]
    rest = list(LineProtocolSource(str(path)).chunks(10, pos))
    assert b"".join(c for c, _, _ in rest).decode().split("\n") == lines[40:]


def test_bad_inputs_are_named(tmp_path):
    with pytest.raises(ImportInputError, match="file not found"):
        expand([str(tmp_path / "nope.parquet")])
    with pytest.raises(ImportInputError, match="no file matches"):
        expand([str(tmp_path / "*.parquet")])
    (tmp_path / "x.parquet").write_text("not parquet at all")
    with pytest.raises(ImportInputError, match="not a readable Parquet file"):
        ParquetSource(str(tmp_path / "x.parquet"))
    for i in (2, 1):
        pq.write_table(_table(3), tmp_path / f"p{i}.parquet")
    assert [p.rsplit("/", 1)[1] for p in expand([str(tmp_path / "p*.parquet")])] == ["p1.parquet", "p2.parquet"]


def test_line_protocol_output_parses_back_to_the_same_points():
    rng = np.random.default_rng(7)
    n = 200
    rb = pa.record_batch({
        "timestamp": pa.array(np.arange(n, dtype=np.int64) * 1000),
        "host": pa.array(rng.choice(["a b", "c,d", "e=f", "g\\h"], n)),
        "x": pa.array(np.where(rng.random(n) < 0.2, np.nan, rng.normal(size=n) * 1e6)),
        "i": pa.array(rng.integers(-(2**40), 2**40, n)),
        "u": pa.array(rng.integers(0, 2**63, n).astype(np.uint64)),
        "b": pa.array(rng.random(n) < 0.5),
        "s": pa.array([None if k % 5 == 0 else f'q"uo\\te {k}' for k in range(n)]),
    })
    plan = make_plan(rb.schema, measurement="m,e s", tags=("host",))
    norm = normalise(rb, plan)
    body, values = encode(norm.batch, plan)
    parsed = parse(body)
    assert not parsed.errors
    direct = to_write_batch(norm.batch, plan, norm.rows)
    x = norm.batch.column("x").to_numpy(zero_copy_only=False)
    assert values == direct.value_count - int(np.isnan(x).sum())  # NaN has no line-protocol form

    def by_key(batch):
        out = {}
        for s in batch.series:
            for name, c in s.columns.items():
                ts = s.timestamps if c.mask is None else s.timestamps[c.mask]
                for t, v in zip(ts.tolist(), c.valid().tolist()):
                    if not (isinstance(v, float) and np.isnan(v)):
                        out[(s.key, t, name)] = v
        return out

    assert by_key(parsed) == by_key(direct)


def test_keyset_finds_existing_keys_without_a_python_step_per_row():
    ks = KeySet("id", np.array([5, 1, 9], dtype=np.int64))
    assert ks.contains(pa.array([1, 2, None, 9, 10], pa.int64())).tolist() == [True, False, False, True, False]
    names = KeySet("trip", ["t-1", "t-3"])
    assert names.contains(pa.array(["t-3", "t-2", None, "t-1"])).tolist() == [True, False, False, True]
    assert KeySet("x", []).contains(pa.array([1.0])).tolist() == [False]
    floats = KeySet("x", np.array([1, 2], dtype=np.int64))  # stored as integers, read as floats
    assert floats.contains(pa.array([1.0, 1.5])).tolist() == [True, False]
