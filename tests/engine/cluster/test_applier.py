"""A shard applier applying a fetched batch of messages: runs of messages become one write, the
result equals applying them one by one (later wins), the applied sequence is recorded once the
WAL is durable (per batch in Sync mode, periodically otherwise), and the shard database replays
the same data from its WAL after a restart."""

from __future__ import annotations

import trio

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


def test_contiguous_run_stops_at_the_first_missing_sequence():
    from rusts.cluster.applier import contiguous_run

    m = [(s, b"", None) for s in (5, 6, 8, 9)]
    assert contiguous_run(m, 4) == (m[:2], True)
    assert contiguous_run(m[:2], 4) == (m[:2], False)
    assert contiguous_run(m, 3) == ([], True)  # 4 missing: nothing can be applied
    redelivered = [(3, b"", None), (4, b"", None), (5, b"", None), (4, b"", None)]
    run, gap = contiguous_run(redelivered, 3)  # redeliveries of what is applied, and repeats
    assert [s for s, _, _ in run] == [4, 5] and not gap


class _Bridge:
    async def call(self, fn, *args, _timeout=None):
        return await fn(*args)


class _Link:
    """A stream of messages 1..5 whose consumer first delivers 1, 2, 4, 5 (3 went to an
    earlier pull whose answer was lost); resubscribed, it delivers from where it is told."""

    def __init__(self, payloads: dict[int, bytes]) -> None:
        self.payloads = payloads
        self.subscribed_from: list[int] = []
        self.leader_reads: list[tuple[int, int]] = []
        self.deliveries = [[1, 2, 4, 5]]

    async def stream_bounds(self, shard):
        return 1, max(self.payloads)

    async def subscribe_shard(self, shard, start):
        self.subscribed_from.append(start)
        self.deliveries = [[s for s in sorted(self.payloads) if s >= start]] if len(self.subscribed_from) > 1 \
            else self.deliveries

    async def fetch(self, shard, batch, wait, ack):
        if not self.deliveries:
            await trio.sleep(0.01)
            return []
        return [(s, self.payloads[s], None) for s in self.deliveries.pop(0)]

    async def leader_msgs(self, shard, start, end):
        self.leader_reads.append((start, end))
        return [(s, self.payloads[s], None) for s in range(start, end + 1)]

    async def kv_put(self, *args):
        pass

    @staticmethod
    def op_of(msg):
        return None


async def test_a_batch_delivered_with_a_gap_is_applied_only_up_to_the_gap(tmp_path):
    """Applying 4 and 5 without 3 would record sequence 5 (lag 0) on a copy missing message 3's
    rows: it stops at the gap; resubscribing (after trouble), it reads 3..5 from the stream's
    leader, then has the consumer deliver from 6."""
    bodies = {s: f"cpu,host=h{s} v={s} {s}".encode() for s in range(1, 6)}
    link = _Link({s: wire.encode(parse(b)) for s, b in bodies.items()})
    async with rusts.open(tmp_path / "shard") as db:
        app = ShardApplier(0, db, tmp_path / "shard", _Bridge(), link, "node1")
        with trio.move_on_after(5):
            async with trio.open_nursery() as n:
                n.start_soon(app._run)
                while app.applied < 5:
                    await trio.sleep(0.01)
                n.cancel_scope.cancel()
        assert link.subscribed_from == [1, 6] and link.leader_reads == [(3, 5)]
        assert app.stats["leader_reads"] == 3
        rows = result_json(await db.query(from_json(Q[0])), 0)["results"]
        assert sorted(r["tags"]["host"] for r in rows) == [f"h{s}" for s in range(1, 6)]
