"""Compaction in the worker process, outside the segment keeper: answers are the same before and
after, a delete that lands while the worker merges is still honoured, and a task whose inputs
vanished meanwhile commits nothing and leaves no file behind."""

from __future__ import annotations

import os

import pytest
import trio

import rusts
from rusts.storage import flushproc
from rusts.lifecycle.compaction import commit_compaction, compact_files
from rusts.errors import StorageError
from rusts.sql.runner import execute_sql
from rusts.sql.output import to_json

T0 = 1_700_000_000_000_000_000
S = 10**9


def batch(k: int) -> bytes:
    # 40 series; every batch rewrites some timestamps of the previous one (last write wins)
    return "\n".join(f"m,host=h{h:02d} v={k * 100 + h},w={k}i {T0 + (k * 5 + h % 7) * S}"
                     for h in range(40) for _ in range(1)).encode()


async def answers(db):
    out = []
    for q in (f"SELECT * FROM m WHERE time >= {T0} ORDER BY host, time",
              "SELECT host, COUNT(*), SUM(v), MAX(w) FROM m GROUP BY host ORDER BY host"):
        out.append(to_json(await execute_sql(db, q), 0)["results"])
    return out


async def fill(db):
    for k in range(6):
        await db.write(batch(k))
        await db.flush()


def tasks_of(db):
    return db.lifecycle.plan(db.manifest.state.segments, now_ns=T0 + 3600 * S)


@pytest.fixture
def worker(monkeypatch):
    monkeypatch.setenv("RUSTS_FLUSH_PROCESS", "always")
    yield
    flushproc.shutdown()


async def test_worker_compaction_keeps_answers(tmp_path, worker):
    async with rusts.open(tmp_path / "d", wal_durability="none") as db:
        await fill(db)
        before = await answers(db)
        n_before = len(db.manifest.state.segments)
        tasks = tasks_of(db)
        assert tasks
        for t in tasks:
            await db.lifecycle.execute(t)
        assert flushproc.running()  # it ran in the worker process
        assert len(db.manifest.state.segments) < n_before
        assert await answers(db) == before
        files = {f for f in os.listdir(db.manifest.segments_dir) if f.endswith(".seg")}
        assert files == {m.file for m in db.manifest.state.segments}  # no orphan


async def test_delete_during_worker_compaction_is_honoured(tmp_path, worker):
    async with rusts.open(tmp_path / "d", wal_durability="none") as db, \
            rusts.open(tmp_path / "ref", wal_durability="none") as ref:
        await fill(db)
        await fill(ref)
        for d in (db, ref):  # a pending tombstone makes the task whole (it applies tombstones)
            await execute_sql(d, "DELETE FROM m WHERE host = 'h05'")
        tasks = tasks_of(db)
        assert any(t.whole for t in tasks)
        async def compact():  # as the compactor actor does: one task at a time, planned afresh
            for _ in range(4):
                now = tasks_of(db)
                if not now:
                    return
                try:
                    await db.lifecycle.execute(now[0])
                except StorageError as e:  # the database's own compactor got there first
                    assert "no longer live" in str(e)

        async with trio.open_nursery() as n:
            n.start_soon(compact)
            await trio.sleep(0)
            await execute_sql(db, "DELETE FROM m WHERE host != 'h03' AND v > 450")
        await execute_sql(ref, "DELETE FROM m WHERE host != 'h03' AND v > 450")
        assert await answers(db) == await answers(ref)
        await compact()  # and once more, now that the tombstones are settled
        assert await answers(db) == await answers(ref)
        await db.lifecycle.compact_now()  # the database's own compactor: its task in flight ends
        files = {f for f in os.listdir(db.manifest.segments_dir) if f.endswith(".seg")}
        assert files == {m.file for m in db.manifest.state.segments}  # no orphan


async def test_commit_refuses_vanished_inputs_and_removes_outputs(tmp_path):
    async with rusts.open(tmp_path / "d", wal_durability="none") as db:
        await fill(db)
        (task,) = tasks_of(db)[:1]
        out = db.manifest.new_segment_path(task.partition)
        result = compact_files([str(db.manifest.path_of(m)) for m in task.inputs], out)
        assert os.path.exists(out[1])
        # a retention sweep / drop removed an input meanwhile
        db.manifest.commit(remove=[task.inputs[0]])
        with pytest.raises(StorageError, match="no longer live"):
            commit_compaction(db.manifest, task, result)
        assert not os.path.exists(out[1])
