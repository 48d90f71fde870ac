"""WAL mode ``none``: no WAL file, so a crash loses the points not yet flushed to a segment, and
nothing more. Checked here: the crash gap of a flush (its segment written, the manifest not yet
committed) opens cleanly; an orderly close keeps everything; a database opened in mode ``none``
still replays what an earlier run in another mode logged (it used to ignore those records, and
they were lost for good, silently)."""

from __future__ import annotations

import shutil

import trio

import rusts
from rusts.storage.manifest import Manifest

T0 = 1_700_000_000_000_000_000
S = 1_000_000_000
ALL = {"start": 0, "end": 2**63 - 1}


def _body(lo: int, hi: int) -> str:
    return "\n".join(f"wn,h={h} v={i}i {T0 + i * S}" for h in ("a", "b") for i in range(lo, hi))


async def _rows(db) -> dict:
    rows = (await db.query({"measurement": "wn", "time_range": ALL})).to_rows()
    out = {}
    for r in rows:
        key = (r["tags"]["h"], r["timestamp"])
        assert key not in out, f"duplicate {key}"
        out[key] = r["fields"]["v"]
    return out


def _expected(lo: int, hi: int) -> dict:
    return {(h, T0 + i * S): i for h in ("a", "b") for i in range(lo, hi)}


def test_crash_between_a_flushed_segment_and_its_commit(tmp_path, monkeypatch) -> None:
    d, snap = tmp_path / "data", tmp_path / "snap"
    real = Manifest.commit
    taken = []

    def commit(self, **kw):
        if kw.get("add") and not taken:  # the second flush: its segment is on disk
            shutil.copytree(d, snap)
            taken.append(1)
        return real(self, **kw)

    async def run() -> None:
        async with rusts.open(d, wal_durability="none") as db:
            await db.write(_body(0, 100))
            await db.flush()
            monkeypatch.setattr(Manifest, "commit", commit)
            await db.write(_body(100, 200))
            await db.flush()
            monkeypatch.setattr(Manifest, "commit", real)
        (snap / "LOCK").unlink(missing_ok=True)
        assert len(list((snap / "segments").glob("*.seg"))) == 2  # the orphan is there
        async with rusts.open(snap, wal_durability="none") as db:
            got = await _rows(db)
            problems = db.statistics()["problems"]
            assert got == _expected(0, 100)  # the flush that did not commit is lost, nothing else
            assert any("orphan segment" in p and "mode none" in p for p in problems), problems
            await db.write(_body(200, 210))
            await db.flush()
        assert len(list((snap / "segments").glob("*.seg"))) == 2

    trio.run(run)


def test_orderly_close_keeps_every_point(tmp_path) -> None:
    async def run() -> None:
        async with rusts.open(tmp_path, wal_durability="none") as db:
            await db.write(_body(0, 50))
            await db.flush()
            await db.write(_body(50, 80))  # in the memtable only
        async with rusts.open(tmp_path, wal_durability="none") as db:
            assert await _rows(db) == _expected(0, 80)

    trio.run(run)


def test_records_logged_by_an_earlier_mode_are_replayed(tmp_path) -> None:
    d, snap = tmp_path / "data", tmp_path / "snap"

    async def run() -> None:
        async with rusts.open(d, wal_durability="every_write") as db:
            await db.write(_body(0, 40))
            await db.flush()
            await db.write(_body(40, 60))  # acknowledged, in the WAL only
            shutil.copytree(d, snap)  # a crash
        (snap / "LOCK").unlink(missing_ok=True)
        async with rusts.open(snap, wal_durability="none") as db:
            assert await _rows(db) == _expected(0, 60)
            await db.write(_body(60, 70))
        # and back to a WAL mode: nothing replayed twice, nothing lost, new writes logged
        async with rusts.open(snap, wal_durability="every_write") as db:
            assert await _rows(db) == _expected(0, 70)
            await db.write(_body(70, 75))
        async with rusts.open(snap, wal_durability="every_write") as db:
            assert await _rows(db) == _expected(0, 75)

    trio.run(run)
