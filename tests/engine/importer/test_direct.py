"""Direct mode, in-process: every value of the file comes back through SQL; dedup; the lock."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import trio

import rusts
from rusts.importer.cli import main
from rusts.sql.runner import run_sql_http


def _import(capsys, *args) -> tuple[int, dict | str]:
    rc = main(["parquet", *map(str, args), "-q", "--json"])
    out, err = capsys.readouterr()
    return rc, (json.loads(out.strip().splitlines()[-1]) if rc == 0 else err)


def _sql(data_dir, text: str) -> dict:
    async def run():
        async with rusts.open(data_dir) as db:
            return await run_sql_http(db, text, 0.0)

    return trio.run(run)


def test_direct_import_stores_every_value(tmp_path, sample_parquet, helpers, capsys):
    path, table = sample_parquet
    data = tmp_path / "data"
    rc, summary = _import(capsys, path, "--direct", "--data-dir", data, "-m", "trips", "--tags", "host,dc",
                          "-b", "512")
    assert rc == 0, summary
    expected = helpers.expected_rows(table)
    assert summary["rows_read"] == 3000
    assert summary["points_written"] == len(expected) == 2999
    assert summary["rejected_reasons"] == {"every field null": 1}
    assert summary["values_written"] == sum(len(v) for v in expected.values())
    got = helpers.rows_of(_sql(data, "SELECT * FROM trips"))
    assert got == expected


def test_direct_dedup_by_field_and_by_tag(tmp_path, sample_parquet, capsys):
    path, table = sample_parquet
    data = tmp_path / "data"
    first = pa.Table.from_batches(table.slice(0, 1000).to_batches())
    pq.write_table(first, tmp_path / "first.parquet")
    rc, s1 = _import(capsys, tmp_path / "first.parquet", "--direct", "--data-dir", data, "-m", "t",
                     "--tags", "host,dc", "--dedup-column", "id")
    assert rc == 0 and s1["points_written"] == 999 and s1["rows_skipped_duplicates"] == 0
    rc, s2 = _import(capsys, path, "--direct", "--data-dir", data, "-m", "t", "--tags", "host,dc",
                     "--dedup-column", "id")
    assert rc == 0
    # rows 0..999 are stored (row 5 had no field, so its id is not): they are skipped
    assert s2["rows_skipped_duplicates"] == 999
    assert s2["points_written"] == 2000
    rc, s3 = _import(capsys, path, "--direct", "--data-dir", data, "-m", "t", "--tags", "host,dc",
                     "--dedup-column", "dc")  # a tag: both values exist now
    assert rc == 0 and s3["points_written"] == 0 and s3["rows_skipped_duplicates"] == 2999
    assert s3["rows_rejected"] == 1  # row 5: no field value
    count = _sql(data, "SELECT count(*) FROM t")["results"][0]["fields"]["count(*)"]
    assert count == 2999


def test_schema_conflicts_are_rejected_rows_with_the_reason(tmp_path, capsys):
    data = tmp_path / "data"
    a = pa.table({"timestamp": pa.array([1, 2], pa.int64()), "v": pa.array([1, 2], pa.int64())})
    b = pa.table({"timestamp": pa.array([3, 4], pa.int64()), "v": pa.array([1.5, 2.5])})
    pq.write_table(a, tmp_path / "a.parquet")
    pq.write_table(b, tmp_path / "b.parquet")
    assert _import(capsys, tmp_path / "a.parquet", "--direct", "--data-dir", data)[0] == 0
    rc, s = _import(capsys, tmp_path / "b.parquet", "--direct", "--data-dir", data)
    assert rc == 0 and s["points_written"] == 0 and s["rows_rejected"] == 2
    (reason,) = s["rejected_reasons"]
    assert "field type conflict" in reason and '"v"' in reason


async def test_a_running_database_is_refused_with_a_clear_message(tmp_path, sample_parquet):
    path, _ = sample_parquet
    data = tmp_path / "data"
    async with rusts.open(data):
        rc = await trio.to_thread.run_sync(main, ["parquet", str(path), "--direct", "--data-dir", str(data), "-q"])
    assert rc == 1


@pytest.mark.parametrize("extra,message", [
    (("-t", "when"), "timestamp column 'when' not found"),
    (("--tags", "region"), "tag column 'region' not found"),
    (("--list",), "rusts cannot store column 'l' (list<element: int64>); leave it out with --skip-column l"),
])
def test_bad_columns_exit_1_with_the_reason(tmp_path, sample_parquet, capsys, extra, message):
    path, table = sample_parquet
    if extra == ("--list",):
        path, extra = tmp_path / "list.parquet", ()
        pq.write_table(table.append_column("l", pa.array([[1]] * table.num_rows)), path)
    rc, err = _import(capsys, path, "--direct", "--data-dir", tmp_path / "d", *extra)
    assert rc == 1 and message in err and "Traceback" not in err
    assert not (tmp_path / "d").exists()  # checked before the database is opened


def test_skip_column_leaves_an_unstorable_column_out(tmp_path, sample_parquet, capsys):
    path, table = sample_parquet
    pq.write_table(table.append_column("l", pa.array([[1]] * table.num_rows)), tmp_path / "list.parquet")
    rc, s = _import(capsys, tmp_path / "list.parquet", "--skip-column", "l", "--tags", "host,dc", "--dry-run")
    assert rc == 0 and s["points_written"] == 2999 and s["dry_run"] is True
