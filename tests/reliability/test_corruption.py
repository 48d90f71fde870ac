"""Seeded corruption of every file kind of a data directory: WAL, segments, manifest, series
index, schema. Truncation, bit flips, zeroed 4 KiB pages, overwritten runs, deleted files.

Each case starts from the same pristine directory (a live snapshot of a database with two
flushed segments and WAL-only data), damages one file, opens the database in-process and checks
what a user would see:

* the database opens (the one documented exception, no valid manifest generation at all, cannot
  happen here: two generations are always on disk);
* no answer contains a wrong value, an invented row or a duplicate;
* every row that is missing is accounted for: inside a time range the answer lists under
  ``missing`` (a damaged segment block), or in a file that ``/stats`` ``problems`` reports as
  quarantined, repaired or gone (WAL records, a segment whose footer is damaged or that was
  deleted);
* whenever data is lost, ``problems`` says so; the database takes writes afterwards.
"""

from __future__ import annotations

import os
import pathlib
import random
import shutil

import pytest
import trio

import rusts
from rusts.storage.damage import collect_missing

T0 = 1_700_000_000_000_000_000
S = 1_000_000_000
HOSTS = ("a", "b", "c")
N = 900  # points per series: 300 in each of two segments, 300 in the WAL only
CASES = 48


def value(h: int, i: int) -> int:
    return i * 10 + h


def _body(lo: int, hi: int) -> str:
    return "\n".join(f"cor,h={h} v={value(k, i)}i,f={i * 0.5} {T0 + i * S}"
                     for k, h in enumerate(HOSTS) for i in range(lo, hi))


async def _build(live: pathlib.Path, snap: pathlib.Path) -> None:
    async with rusts.open(live, block_rows=50, wal_durability="every_write") as db:
        await db.write(_body(0, 300))
        await db.flush()
        await db.write(_body(300, 600))
        await db.flush()
        for lo in range(600, N, 30):  # several WAL records
            await db.write(_body(lo, lo + 30))
        # a process crash here: copy the directory while the database runs
        shutil.copytree(live, snap)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> pathlib.Path:
    root = tmp_path_factory.mktemp("pristine")
    trio.run(_build, root / "live", root / "snap")
    return root / "snap"


def _files(d: pathlib.Path) -> dict[str, list[pathlib.Path]]:
    return {
        "wal": sorted((d / "wal").glob("*.wal")),
        "segment": sorted((d / "segments").glob("*.seg")),
        "manifest": sorted(d.glob("MANIFEST-*"))[-1:],
        "index": [d / "index" / "series.log"],
        "schema": [d / "index" / "schema.json"],
    }


def damage(d: pathlib.Path, rng: random.Random) -> tuple[str, str, pathlib.Path]:
    kind = rng.choice(["wal", "segment", "segment", "manifest", "index", "schema"])
    path = rng.choice(_files(d)[kind])
    action = rng.choice(["flip", "flip", "truncate", "zero_page", "overwrite", "delete"])
    raw = bytearray(path.read_bytes())
    n = len(raw)
    if action == "flip":
        for _ in range(rng.randint(1, 3)):
            raw[rng.randrange(n)] ^= 1 << rng.randrange(8)
    elif action == "truncate":
        raw = raw[:rng.randrange(n)]
    elif action == "zero_page":
        page = rng.randrange(max(1, n // 4096 + (n % 4096 > 0)))
        raw[page * 4096:(page + 1) * 4096] = bytes(len(raw[page * 4096:(page + 1) * 4096]))
    elif action == "overwrite":
        at = rng.randrange(n)
        raw[at:at + rng.randint(4, 512)] = rng.randbytes(len(raw[at:at + 512]))[:len(raw[at:at + 512])]
    if action == "delete":
        path.unlink()
    else:
        path.write_bytes(bytes(raw))
    return kind, action, path


async def _check(d: pathlib.Path, kind: str, action: str, path: pathlib.Path) -> dict:
    truth = {(h, T0 + i * S): value(k, i) for k, h in enumerate(HOSTS) for i in range(N)}
    async with rusts.open(d, block_rows=50, wal_durability="every_write") as db:
        with collect_missing() as missing:
            rs = await db.query({"measurement": "cor", "time_range": {"start": 0, "end": 2**63 - 1}})
        rows = rs.to_rows()
        problems = db.statistics()["problems"]
        got = {}
        for r in rows:
            key = (r["tags"]["h"], r["timestamp"])
            assert key not in got, f"duplicate row {key}"
            assert key in truth, f"invented row {key}"
            if "v" in r["fields"]:
                assert r["fields"]["v"] == truth[key], f"wrong value at {key}"
            got[key] = r
        lost = set(truth) - set(got)
        explained = set()
        for m in missing:
            h = m["series"].split("h=")[1]
            explained |= {k for k in lost if k[0] == h and m["start"] <= k[1] <= m["end"]}
        rest = lost - explained
        if rest:
            assert problems, f"{len(rest)} rows lost without a report"
            if kind == "wal":  # only WAL-only data (the last 300 points per series) can go
                assert all(k[1] >= T0 + 600 * S for k in rest)
            elif kind == "segment":  # a deleted segment, or one whose footer is damaged (then
                # quarantined), is lost whole and reported
                assert any("quarantine" in p or "missing on disk" in p for p in problems), problems
            else:  # manifest, index and schema damage is repaired without losing rows
                pytest.fail(f"{kind} damage lost {len(rest)} rows: {problems}")
        # the database takes writes afterwards
        r = await db.write(f"cor,h=z v=1i {T0}")
        assert r.points == 1
    return {"lost": len(lost), "explained": len(explained), "problems": len(problems)}


@pytest.mark.parametrize("seed", range(CASES))
def test_seeded_corruption(pristine, tmp_path, seed: int) -> None:
    rng = random.Random(seed)
    d = tmp_path / "data"
    shutil.copytree(pristine, d)
    os.unlink(d / "LOCK") if (d / "LOCK").exists() else None
    kind, action, path = damage(d, rng)
    trio.run(_check, d, kind, action, path)


def test_http_answers_the_good_blocks_and_names_the_missing_range(server_factory):
    """One damaged block of a 20-block series: /query and /sql answer the other 19 blocks with the
    right values and name the missing time range; /stats and the log report it, and a copy of the
    file is in quarantine/. (It used to answer 500 "block CRC mismatch" for the whole series.)"""
    from rusts.storage.segment import SegmentReader

    srv = server_factory(storage={"block_rows": 100}, postgres={"enabled": True}).start()
    with srv.client() as c:
        body = "\n".join(f"blk,h=a v={i}i {T0 + i * S}" for i in range(2000))
        assert c.post("/write", content=body).status_code == 204
    assert srv.stop() == 0
    seg = next((srv.data_dir / "segments").glob("*.seg"))
    r = SegmentReader.open(seg)
    sid = int(r.series_ids[0])
    bt = r.blocks(sid)
    lo, hi = int(bt.min_time[5]), int(bt.max_time[5])
    b = int(r._series_block_start[0]) + 5
    off, length = int(r._b_ts_off[b]), int(r._b_ts_len[b])
    r.close()
    raw = bytearray(seg.read_bytes())
    raw[off + length // 2] ^= 0x20
    seg.write_bytes(bytes(raw))
    srv.start()
    with srv.client() as c:
        ans = c.post("/query", json={"measurement": "blk", "time_range": {"start": 0, "end": 2**63 - 1}})
        assert ans.status_code == 200, ans.text
        out = ans.json()
        sql = c.post("/sql", json={"query": "SELECT time, v FROM blk"})
        assert sql.status_code == 200, sql.text
        problems = c.get("/stats").json()["problems"]
    rows = out["results"]
    assert len(rows) == 1900
    assert all(row["fields"]["v"] == (row["timestamp"] - T0) // S for row in rows)
    assert not any(lo <= row["timestamp"] <= hi for row in rows)
    assert [(m["series"], m["start"], m["end"]) for m in out["missing"]] == [("blk,h=a", lo, hi)]
    assert out["warnings"]
    assert sql.json()["missing"][0]["start"] == lo
    assert any("damaged" in p for p in problems), problems
    assert any(p.name.endswith(".damaged") for p in (srv.data_dir / "quarantine").iterdir())
    assert "damaged segment block" in srv.output()
    # pgwire: the good rows and a WARNING notice naming the missing range (it used to answer an
    # ErrorResponse for the whole statement); simple and extended query protocol
    import psycopg

    notices = []
    with psycopg.connect(f"postgresql://rusts@127.0.0.1:{srv.pg_port}/rusts", autocommit=True) as conn:
        conn.add_notice_handler(lambda d: notices.append((d.severity, d.sqlstate, d.message_primary)))
        for prepare in (False, True):
            got = conn.execute("SELECT time, v FROM blk ORDER BY time", prepare=prepare).fetchall()
            assert [v for _, v in got] == [i for i in range(2000) if not lo <= T0 + i * S <= hi]
    assert len(notices) == 2, notices
    sev, code, msg = notices[0]
    assert sev == "WARNING" and code == "01000"
    assert "blk,h=a" in msg and f"{lo}..{hi}" in msg and "missing from this answer" in msg


@pytest.mark.parametrize("when,action", [("live", "flip"), ("live", "delete"), ("closed", "flip")])
def test_damaged_newest_manifest_never_undoes_a_delete(tmp_path, when: str, action: str) -> None:
    """The load falls back to the previous manifest generation when the newest is damaged. The
    tombstone of an acknowledged DELETE must be in that generation too (``live``: a copy of the
    directory right after the DELETE answered; the deleted points used to come back), and after
    the compaction that makes the delete physical (``closed``) the fallback must not name the
    compaction's unlinked inputs (every row of the series used to be lost)."""
    d = tmp_path / "data"
    snap = tmp_path / "snap"

    async def run() -> None:
        async with rusts.open(d, block_rows=50, wal_durability="every_write") as db:
            await db.write(_body(0, 300))
            await db.flush()
            await db.delete("cor", T0 + 100 * S, T0 + 200 * S)
            if when == "live":  # before the compactor runs: the tombstone is the newest change
                shutil.copytree(d, snap)
        if when == "closed":
            shutil.copytree(d, snap)
        (snap / "LOCK").unlink(missing_ok=True)
        newest = sorted(snap.glob("MANIFEST-*"))[-1]
        if action == "delete":
            newest.unlink()
        else:
            raw = bytearray(newest.read_bytes())
            raw[len(raw) // 2] ^= 0x04
            newest.write_bytes(bytes(raw))
        async with rusts.open(snap, block_rows=50, wal_durability="every_write") as db:
            rows = (await db.query({"measurement": "cor", "time_range": {"start": 0, "end": 2**63 - 1}})).to_rows()
            problems = db.statistics()["problems"]
        times = {r["timestamp"] for r in rows}
        assert not any(T0 + 100 * S <= t < T0 + 200 * S for t in times), "deleted points came back"
        assert len(rows) == 3 * 200, problems
        assert any("falling back" in p for p in problems) or action == "delete", problems

    trio.run(run)
