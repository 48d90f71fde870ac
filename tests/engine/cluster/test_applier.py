"""A shard applier applying a fetched batch of messages: runs of messages become one write, the
result equals applying them one by one (later wins), the applied sequence is recorded once the
WAL is durable (per batch in Sync mode, periodically otherwise), and the shard database replays
the same data from its WAL after a restart."""

from __future__ import annotations

import rusts
from rusts.cluster import wire
from rusts.cluster.applier import ShardApplier, read_applied
from rusts.protocols.line_protocol import parse
from rusts.query.executor import result_json
from rusts.query.model import from_json
from rusts.storage.walrecord import encode_batch

BODIES = [
    b"cpu,host=a v=1,w=1i 1\ncpu,host=a v=2,w=2i 2\ncpu,host=b v=3,w=3i 3",
    b"cpu,host=a v=10,w=10i 1\ncpu,host=a v=20,w=20i 2\ncpu,host=c v=5,w=5i 5",  # overwrites a
    b"cpu,host=b v=30 3\nmem,host=a free=7i 1",                  # a second layout of cpu; mem
    b"cpu,host=a v=200,w=200i 2",                                # overwrites again
    b"cpu,host=d v=9,w=9i 9",
]
Q = [{"measurement": m, "time_range": {"start": 0, "end": 100}} for m in ("cpu", "mem")]


async def _answers(db) -> list:
    return [result_json(await db.query(from_json(q)), 0)["results"] for q in Q]


async def test_a_fetched_batch_applies_as_fewer_writes_with_the_same_result(tmp_path):
    async with rusts.open(tmp_path / "ref") as ref:
        for b in BODIES:
            await ref.write(b)
        want = await _answers(ref)
    assert {"timestamp": 1, "tags": {"host": "a"}, "fields": {"v": 10.0, "w": 10}} in want[0]
    assert {"timestamp": 2, "tags": {"host": "a"}, "fields": {"v": 200.0, "w": 200}} in want[0]

    batches = [parse(b) for b in BODIES]
    payloads = [wire.encode(batches[0]), wire.encode(batches[1]),
                encode_batch(batches[2]),  # a version-1 message (an older node): applied alone
                wire.encode(batches[3]), b"\x07garbage", wire.encode(batches[4])]
    decoded = []
    for seq, p in enumerate(payloads, start=11):
        try:
            decoded.append((seq, (wire.decode(p), p)))
        except rusts.errors.CorruptionError:
            decoded.append((seq, None))  # as the applier does: skipped, counted
    shard_dir = tmp_path / "shard"
    async with rusts.open(shard_dir) as db:
        app = ShardApplier(3, db, shard_dir, None, None, "node1")
        await app._apply(decoded)
        assert app.applied == 16
        # Quorum/Async: not recorded until the WAL is fsynced (every SYNC_EVERY seconds)
        assert read_applied(shard_dir) == (0, 0)
        await app.make_durable()
        assert read_applied(shard_dir) == (16, 0)
        # [11, 12] one write, 13 alone (version 1), 14 alone (15 undecodable ends the run), 16
        assert db.write_stats["requests"] == 4
        assert await _answers(db) == want
    async with rusts.open(shard_dir) as db:  # replayed from the WAL: the same data
        assert await _answers(db) == want


async def test_a_long_run_is_cut_into_several_writes(tmp_path, monkeypatch):
    from rusts.cluster import applier

    monkeypatch.setattr(applier, "RUN_POINTS", 5)
    bodies = [b"cpu,host=h%d v=%d %d" % (i % 3, i, i % 4) for i in range(12)]
    async with rusts.open(tmp_path / "ref") as ref:
        for b in bodies:
            await ref.write(b)
        want = await _answers(ref)
    decoded = [(s + 1, (parse(b), wire.encode(parse(b)))) for s, b in enumerate(bodies)]
    async with rusts.open(tmp_path / "shard") as db:
        app = ShardApplier(0, db, tmp_path / "shard", None, None, "node1")
        app.eager = True  # Sync mode: durable and recorded after every batch
        await app._apply(decoded)
        assert read_applied(tmp_path / "shard") == (12, 0)
        assert db.write_stats["requests"] == 3  # 5 + 5 + 2 points
        assert await _answers(db) == want
    async with rusts.open(tmp_path / "shard") as db:
        assert await _answers(db) == want


async def test_messages_applied_after_the_recorded_sequence_are_applied_again_after_a_restart(tmp_path):
    """A stop before the periodic record: applied.json is behind, the stream redelivers from it,
    and applying those messages a second time changes nothing."""
    async with rusts.open(tmp_path / "ref") as ref:
        for b in BODIES:
            await ref.write(b)
        want = await _answers(ref)
    msgs = [(seq, wire.encode(parse(b))) for seq, b in enumerate(BODIES, start=1)]
    shard_dir = tmp_path / "shard"
    async with rusts.open(shard_dir) as db:
        app = ShardApplier(0, db, shard_dir, None, None, "node1")
        await app._apply([(s, (wire.decode(p), p)) for s, p in msgs[:2]])
        await app.make_durable()
        await app._apply([(s, (wire.decode(p), p)) for s, p in msgs[2:]])
    async with rusts.open(shard_dir) as db:  # restarted: the file says 2, the data holds all 5
        app = ShardApplier(0, db, shard_dir, None, None, "node1")
        assert app.applied == 2
        await app._apply([(s, (wire.decode(p), p)) for s, p in msgs if s > app.applied])
        await app.make_durable()
        assert read_applied(shard_dir) == (5, 0)
        assert await _answers(db) == want
