"""The segment keeper: the one owner of the manifest and the readers, driven through a real Database."""

from __future__ import annotations

import pytest
import trio

import rusts.db
from rusts.errors import ClosedError, StorageError
from rusts.lifecycle.tombstones import LifecycleState
from rusts.storage.segment import SegmentReader

HOUR = 3_600 * 10**9
T0 = 1_700_000_000 * 10**9 // HOUR * HOUR


async def _flushed(db, n: int, hour: int = 0) -> None:
    for i in range(n):
        await db.write("\n".join(f"cpu,host=h{h} x={i}.5 {T0 + hour * HOUR + i * 10**9}" for h in range(3)))
        await db.flush()


def _consistent(db) -> None:
    """The view pairs exactly the manifest's segments with their readers."""
    view = db.segments.view
    assert view.state == db.manifest.state
    assert set(view.readers) == {m.file for m in view.state.segments}


async def test_each_kind_of_commit_moves_manifest_and_readers_together(tmp_path):
    async with rusts.db.open(tmp_path / "d", wal_durability="none", partition_duration_hours=1) as db:
        await _flushed(db, 2)
        await _flushed(db, 1, hour=5)
        _consistent(db)
        assert len(db.segments.view.state.segments) == 3

        stone = await db.segments.tombstone("cpu", T0, T0 + HOUR)
        _consistent(db)
        assert LifecycleState.from_extra(db.manifest.state.extra).tombstones[0].id == stone.id

        old = [m for m in db.segments.view.state.segments if m.partition == T0 // HOUR + 5]
        assert await db.segments.drop(old) == 1
        _consistent(db)
        assert not (db.manifest.segments_dir / old[0].file).exists()
        assert await db.segments.drop(old) == 0  # no longer live: skipped, nothing committed

        st = db.config.storage
        task = db.lifecycle.plan(db.segments.view.state.segments, now_ns=T0 + 10 * HOUR)[0]
        outcome = await db.segments.replace(task, None, retention_cutoffs={}, compression=st.compression,
                                            block_rows=st.block_rows, block_time_ns=None)
        _consistent(db)
        assert {m.file for m in outcome.removed}.isdisjoint(db.segments.view.readers)
        # the tombstone was applied physically and collected; hour 0 is gone
        assert LifecycleState.from_extra(db.manifest.state.extra).tombstones == ()
        out = await db.sql("SELECT COUNT(*) AS n FROM cpu")
        assert int(out.values[0][0]) == 0


async def test_concurrent_commits_are_serialised_and_none_is_lost(tmp_path):
    async with rusts.db.open(tmp_path / "d", wal_durability="none", partition_duration_hours=1) as db:
        async with trio.open_nursery() as n:
            for i in range(20):
                n.start_soon(lambda i=i: db.segments.tombstone("cpu", T0 + i, T0 + i + 1))
            n.start_soon(_flushed, db, 3)
        ls = LifecycleState.from_extra(db.manifest.state.extra)
        assert len(ls.tombstones) == 20  # each derived from the state the one before committed
        assert len(db.manifest.state.segments) == 3
        _consistent(db)


async def test_a_refused_commit_answers_the_error_and_changes_nothing(tmp_path):
    async with rusts.db.open(tmp_path / "d", wal_durability="none") as db:
        await _flushed(db, 1)
        before = db.segments.view
        meta = before.state.segments[0]
        reader = SegmentReader.open(db.manifest.path_of(meta))
        with pytest.raises(StorageError, match="already in the manifest"):
            await db.segments.publish([meta], [reader], 99)
        assert db.segments.view is before and db.manifest.state == before.state
        with pytest.raises(ClosedError):  # the reader handed over was closed
            reader.read(next(iter(reader.series_keys())))
        await _flushed(db, 1)  # the keeper keeps serving
        assert len(db.segments.view.state.segments) == 2


async def test_the_keeper_stops_after_everything_that_commits(tmp_path):
    async with rusts.db.open(tmp_path / "d", wal_durability="every_write") as db:
        await db.write(f"cpu,host=a x=1 {T0}")
        client = db.segments
    # the close flushed the memtable through the keeper before it stopped
    assert len(client.view.state.segments) == 1
    with pytest.raises(ClosedError):
        await client.tombstone("cpu", T0, T0 + 1)
