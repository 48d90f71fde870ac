"""With the default configuration, a historical partition that has gone cold for writes settles
into the cold tier by itself; a late write into it still works and it settles again."""

from __future__ import annotations

import trio

import rusts
from rusts.config import Config
from rusts.sql.runner import execute_sql

T2016 = 1_451_606_400_000_000_000  # 2016-01-01, like the TSBS data set
S = 10**9


async def _settled(db, timeout: float = 20.0) -> list:
    with trio.fail_after(timeout):
        while True:
            segs = db.manifest.state.segments
            if segs and all(m.tier == "cold" for m in segs) and len({m.partition for m in segs}) == len(segs):
                return segs
            db.lifecycle.poke_compactor()
            await trio.sleep(0.2)


async def test_history_goes_cold_by_default_and_takes_late_writes(tmp_path):
    assert Config().storage.cold_after_hours == 24
    async with rusts.open(tmp_path / "d", cold_idle_secs=1) as db:
        for k in range(3):  # three flushes into one 2016 partition
            lines = "\n".join(f"cpu,host=h{h} usage={h + k}.5,n={k}i {T2016 + (k * 100 + h) * S}" for h in range(20))
            assert not (await db.write(lines.encode())).errors
            await db.flush()
        assert {m.tier for m in db.manifest.state.segments} == {"hot"}  # written a moment ago
        (seg,) = await _settled(db)
        out = await execute_sql(db, "SELECT COUNT(*), SUM(n), MAX(usage) FROM cpu")
        assert out.to_pylists() == [[60], [60], [21.5]]
        # a late write into the cold partition
        assert not (await db.write(f"cpu,host=h0 usage=99.5,n=7i {T2016 + 5 * S}".encode())).errors
        await db.flush()
        assert len(db.manifest.state.segments) == 2
        out = await execute_sql(db, "SELECT COUNT(*), SUM(n), MAX(usage) FROM cpu")
        assert out.to_pylists() == [[61], [67], [99.5]]
        (seg2,) = await _settled(db)
        assert seg2.file != seg.file
        out = await execute_sql(db, "SELECT COUNT(*), SUM(n), MAX(usage) FROM cpu")
        assert out.to_pylists() == [[61], [67], [99.5]]
