"""Back-pressure: when flushing cannot keep up, writes fail fast with 503 + Retry-After instead of
growing memory without bound, and succeed again once the flusher catches up."""

import httpx
import trio

import rusts
from rusts.server import serve_http


async def test_overload_answers_503_with_retry_after_then_recovers(tmp_path):
    async with rusts.open(tmp_path / "d", memtable_max_size_mb=1, memtable_hard_limit_mb=1,
                          wal_durability="none") as db:
        broken = trio.Event()
        real = db._write_table

        async def failing_write_table(table):
            if not broken.is_set():
                raise OSError(28, "No space left on device (simulated)")
            await real(table)

        db._write_table = failing_write_table
        async with trio.open_nursery() as nursery:
            port = await nursery.start(serve_http, db, "127.0.0.1", 0)
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as c:
                big = "\n".join(f"m,host=h{i % 50} v={i}.5,s=\"{'x' * 40}\" {i}" for i in range(20000))
                statuses = []
                for _ in range(12):
                    r = await c.post("/write", content=big)
                    statuses.append(r.status_code)
                    if r.status_code == 503:
                        assert int(r.headers["Retry-After"]) >= 1
                        assert "hard limit" in r.json()["error"]
                        break
                assert statuses[-1] == 503, statuses
                assert db.statistics()["flusher"].get("flush_errors", 0) >= 1
                # the disk is back: the flusher's retry drains memory and writes are accepted again
                broken.set()
                with trio.fail_after(20):
                    while db.state.total_bytes > 1024 * 1024:
                        await trio.sleep(0.05)
                r = await c.post("/write", content="m,host=ok v=1 1")
                assert r.status_code == 204
            nursery.cancel_scope.cancel()
        rows = (await db.query({"measurement": "m", "time_range": {"start": 0, "end": 2**62},
                                "aggregation": {"function": "Count", "field": "v"}})).to_rows()
        assert rows[0]["fields"]["count_v"] >= 20000  # nothing acknowledged was dropped
