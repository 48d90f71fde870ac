"""Limits that hold: series per database and per measurement, line length, names vs paths."""

import os
import re

import attrs

import rusts.db
from rusts.config import Config
from rusts.protocols.line_protocol import parse

T0 = 1_700_000_000_000_000_000


def _cfg(tmp_path, **storage):
    c = Config()
    return attrs.evolve(c, storage=attrs.evolve(c.storage, data_dir=str(tmp_path / "d"), **storage))


async def test_max_series_per_database_partial_write(tmp_path):
    async with rusts.db.open(config=_cfg(tmp_path, max_series=3)) as db:
        assert (await db.write(b"cpu,host=a v=1 1\ncpu,host=b v=1 1")).points == 2
        body = "\n".join(["cpu,host=a v=2 2", "mem,host=c v=1 1", "cpu,host=d v=1 1", "cpu,host=b v=2 2",
                          "disk,host=e v=1 1", "mem,host=c v=2 3"]).encode()
        r = await db.write(body)
        assert r.points == 4  # a, b (known), c (third series), c again
        assert [e.line_number for e in r.errors] == [3, 5]
        assert all("storage.max_series = 3" in e.error_message for e in r.errors)
        assert r.errors[0].original_line == "cpu,host=d v=1 1"
        assert len(db.index) == 3 and sorted(db.measurements()) == ["cpu", "mem"]


async def test_max_series_per_measurement(tmp_path):
    async with rusts.db.open(config=_cfg(tmp_path, max_series_per_measurement=2)) as db:
        lines = "\n".join(f"cpu,host=h{i} v=1 {T0 + i}" for i in range(5))
        r = await db.write((lines + "\nmem,host=x v=1 1").encode())
        assert r.points == 3 and [e.line_number for e in r.errors] == [3, 4, 5]
        assert 'measurement "cpu" has 2 series (storage.max_series_per_measurement = 2)' in r.errors[0].error_message
        assert (await db.write(b"cpu,host=h0 v=9 9")).errors == ()  # known series still write


async def test_many_series_write_far_from_the_limit_is_unchanged(tmp_path):
    async with rusts.db.open(config=_cfg(tmp_path)) as db:
        body = "\n".join(f"cpu,host=h{i} v=1 {T0}" for i in range(3000)).encode()
        r = await db.write(body)
        assert r.points == 3000 and r.errors == ()


def test_long_line_rejected_quoting_200_bytes():
    long_line = b"cpu,host=a v=1,s=\"" + b"x" * 5000 + b"\" 1"
    body = b"cpu v=1 1\n" + long_line + b"\nmem v=2 2\n"
    batch = parse(body, max_line_bytes=1000)
    assert sorted(s.measurement for s in batch.series) == ["cpu", "mem"]
    (err,) = batch.errors
    assert err.line_number == 2 and "server.max_line_bytes = 1000" in err.error_message
    assert f"{len(long_line)} bytes" in err.error_message
    assert len(err.original_line) <= 203 and err.error_message.count("x") <= 200
    assert len(parse(body, max_line_bytes=None).errors) == 0  # no limit: stored


async def test_names_never_reach_the_file_system(tmp_path):
    """Measurement, tag and field names are data: files are named by partition and sequence."""
    evil = [b"../../evil,host=/etc/passwd ..\\ /x=1 1", b"/abs/path,a\\=b=c\\ d v=1 2",
            b"nul\x01name,t=.. f..=1 3", b"..,../..=.. ..=1 4"]
    async with rusts.db.open(config=_cfg(tmp_path)) as db:
        r = await db.write(b"\n".join(evil))
        assert r.points == 4, r.errors
        await db.flush()
        assert "../../evil" in db.measurements()
    root = tmp_path / "d"
    allowed = re.compile(r"^(LOCK|MANIFEST-\d+|wal/\d+\.wal|segments/p-?\d+-\d+\.seg|index/series\.log|"
                         r"index/schema\.json|[a-z_]+\.json)$")
    for dirpath, _, files in os.walk(tmp_path):
        for f in files:
            rel = os.path.relpath(os.path.join(dirpath, f), root)
            assert allowed.match(rel), rel
