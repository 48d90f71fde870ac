"""Simulated power loss: record a workload's durability events, then build directory states a
power cut could leave, and check the database opens each one without a wrong answer.

Recording (in-process): ``os.fsync``, ``os.fdatasync``, ``os.replace``, ``os.rename`` and
``os.unlink`` are wrapped for the duration of the workload. After each of those calls the whole
data directory is snapshotted (path -> file identity, identity -> bytes), and the event says what
became durable: ``fsync`` of a file makes its current bytes durable, ``fsync`` of a directory
makes its current listing durable. Between events nothing is recorded: a state is built at event
boundaries, with the writes made since the previous event as the "dirty" data.

A crash state "during event k+1" (the power fails after event k completed and before event k+1
did) is made, per the Linux page-cache model the research note describes, by choosing:

* per directory, a listing from one snapshot between its last durable listing (last directory
  fsync at or before k) and snapshot k+1: metadata operations (create, rename, unlink) reach the
  disk in order but any suffix of those not yet fsynced may be lost, so a rename can revert and a
  new file can vanish;
* per file in that listing, its bytes: the durable bytes (last fsync of that file at or before k;
  empty if it was never fsynced) overlaid with a random subset of the dirty 4 KiB pages of its
  bytes at the cut, a random length between the two sizes, and sometimes a torn tail (the
  last up to 512 persisted bytes garbled) or a zero-filled tail (size persisted, data not).

Directories themselves are taken as existing (mkdir durability is not modelled).

The checker opens the database on the state and queries it: the open must succeed, no value may
differ from what was written, nothing may be invented or duplicated, every point acknowledged
before event k+1 (``every_write``; in ``periodic`` every point a completed WAL fsync covered) must
be there, and a range whose delete was acknowledged must stay deleted.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import random
import shutil
import stat
import threading

import trio

PAGE = 4096
T0 = 1_700_000_000_000_000_000
S = 1_000_000_000


class Recorder:
    """Wraps the durability calls of ``os`` while active and snapshots ``root`` after each."""

    def __init__(self, root: pathlib.Path) -> None:
        self.root = root
        self.lock = threading.RLock()
        self.blobs: dict[str, bytes] = {}           # sha1 -> bytes
        self.snaps: list[dict[str, tuple[int, str]]] = []  # per snapshot: rel path -> (file id, sha1)
        self.events: list[tuple[str, object]] = []  # ("file", file id) / ("dir", rel dir) / ("meta", None)
        self._ids: dict[int, int] = {}              # st_ino -> file id, for files alive last snapshot
        self._next_id = 1
        self._orig: dict[str, object] = {}
        self.snapshot()  # snapshot 0: before any event

    # -- snapshots --------------------------------------------------------------------------
    def snapshot(self) -> dict[str, tuple[int, str]]:
        snap: dict[str, tuple[int, str]] = {}
        alive: dict[int, int] = {}
        for dirpath, _dirs, files in os.walk(self.root):
            for name in files:
                p = os.path.join(dirpath, name)
                try:
                    st = os.stat(p)
                    with open(p, "rb") as f:
                        data = f.read()
                except FileNotFoundError:
                    continue
                if not stat.S_ISREG(st.st_mode) or name == "LOCK":
                    continue
                fid = self._ids.get(st.st_ino)
                if fid is None:
                    fid = self._next_id
                    self._next_id += 1
                alive[st.st_ino] = fid
                h = hashlib.sha1(data).hexdigest()
                self.blobs.setdefault(h, data)
                snap[os.path.relpath(p, self.root)] = (fid, h)
        self._ids = alive
        self.snaps.append(snap)
        return snap

    def _event(self, kind: str, what: object) -> None:
        self.snapshot()
        self.events.append((kind, what))

    # -- wrapping -----------------------------------------------------------------------------
    def __enter__(self) -> "Recorder":
        rec = self
        for name in ("fsync", "fdatasync", "replace", "rename", "unlink"):
            self._orig[name] = getattr(os, name)

        def sync(orig):
            def wrapped(fd):
                orig(fd)
                try:
                    path = os.readlink(f"/proc/self/fd/{fd}")
                except OSError:
                    return
                if not path.startswith(str(rec.root)):
                    return
                with rec.lock:
                    if os.path.isdir(path):
                        rel = os.path.relpath(path, rec.root)
                        rec._event("dir", "" if rel == "." else rel)  # as os.path.dirname names it
                    else:
                        ino = os.fstat(fd).st_ino
                        rec.snapshot()
                        rec.events.append(("file", rec._ids.get(ino)))
            return wrapped

        def meta(orig):
            def wrapped(*a, **kw):
                out = orig(*a, **kw)
                if any(str(x).startswith(str(rec.root)) for x in a[:2]):
                    with rec.lock:
                        rec._event("meta", None)
                return out
            return wrapped

        os.fsync = sync(self._orig["fsync"])
        os.fdatasync = sync(self._orig["fdatasync"])
        os.replace = meta(self._orig["replace"])
        os.rename = meta(self._orig["rename"])
        os.unlink = meta(self._orig["unlink"])
        return self

    def __exit__(self, *exc) -> None:
        for name, fn in self._orig.items():
            setattr(os, name, fn)

    @property
    def count(self) -> int:
        return len(self.events)

    # -- crash states -------------------------------------------------------------------------
    def durable_file(self, fid: int, k: int) -> bytes:
        """Bytes of file ``fid`` made durable by its last fsync among events 0..k-1."""
        for i in range(k - 1, -1, -1):
            kind, what = self.events[i]
            if kind == "file" and what == fid:
                snap = self.snaps[i + 1]
                for _, (f, h) in snap.items():
                    if f == fid:
                        return self.blobs[h]
        return b""

    def durable_snapshot_of_dir(self, d: str, k: int) -> int:
        """Index of the snapshot whose listing of ``d`` is durable after events 0..k-1."""
        for i in range(k - 1, -1, -1):
            kind, what = self.events[i]
            if kind == "dir" and what == d:
                return i + 1
        return 0

    def crash_state(self, k: int, rng: random.Random, dest: pathlib.Path) -> None:
        """Write into ``dest`` a state a power cut during event k (0-based; events 0..k-1 done)
        could leave."""
        last = min(k + 1, len(self.snaps) - 1)
        dirs = {os.path.dirname(p) for snap in self.snaps[: last + 1] for p in snap}
        shutil.rmtree(dest, ignore_errors=True)
        dest.mkdir(parents=True)
        for sub in ("segments", "wal", "index", "quarantine"):
            (dest / sub).mkdir(exist_ok=True)
        latest: dict[int, str] = {}  # file id -> its bytes at the cut (or when last alive)
        for snap in self.snaps[: last + 1]:
            for fid, h in snap.values():
                latest[fid] = h
        for d in dirs:
            lo = self.durable_snapshot_of_dir(d, k)
            j = rng.randint(min(lo, last), last)
            listing = {p: v for p, v in self.snaps[j].items() if os.path.dirname(p) == d}
            (dest / d).mkdir(parents=True, exist_ok=True)
            for p, (fid, _) in listing.items():
                data = self._mix(self.durable_file(fid, k), self.blobs[latest[fid]], rng)
                (dest / p).write_bytes(data)

    @staticmethod
    def _mix(old: bytes, new: bytes, rng: random.Random) -> bytes:
        if old == new:
            return old
        choice = rng.random()
        if choice < 0.2:
            return old
        if choice < 0.35:
            return new
        n = max(len(old), len(new))
        out = bytearray(old.ljust(n, b"\0"))
        for p in range(0, n, PAGE):  # every dirty page independently persisted or not
            if old[p:p + PAGE] != new[p:p + PAGE] and rng.random() < 0.5:
                out[p:p + PAGE] = new[p:p + PAGE].ljust(min(PAGE, n - p), b"\0")
        size = rng.randint(min(len(old), len(new)), n)
        out = out[:size]
        tail = rng.random()
        if tail < 0.15 and size > len(old):  # torn: the last persisted bytes are garbage
            g = rng.randint(1, min(512, size - len(old)))
            out[size - g:] = rng.randbytes(g)
        elif tail < 0.3 and size > len(old):  # size persisted, data not: zeros
            g = rng.randint(1, size - len(old))
            out[size - g:] = bytes(g)
        return bytes(out)


# ---------------------------------------------------------------------- workload and checks

def value(h: int, i: int) -> int:
    return i * 10 + h


def lines(lo: int, hi: int) -> str:
    return "\n".join(f"pl,h={h} v={value(k, i)}i {T0 + i * S}" for k, h in enumerate("ab") for i in range(lo, hi))


OPTS = {"block_rows": 50, "memtable_max_points": 10_000, "wal_segment_max_mb": 1}


async def workload(root: pathlib.Path, mode: str, rec: Recorder, writes: int = 40) -> dict:
    """Writes of 2x10 points, a flush every 8 writes, one delete; returns the ack log."""
    import rusts

    acks: list[tuple[int, int, int]] = []  # (events done when acknowledged, lo, hi)
    deletes: list[tuple[int, int, int, int]] = []  # (events when sent, events when done, start, end)
    async with rusts.open(root, wal_durability=mode, **OPTS) as db:
        for w in range(writes):
            lo, hi = w * 10, w * 10 + 10
            await db.write(lines(lo, hi))
            acks.append((rec.count, lo, hi))
            if w % 8 == 7:
                await db.flush()
            if w == 20:
                sent = rec.count
                await db.delete("pl", T0 + 5 * S, T0 + 15 * S)
                deletes.append((sent, rec.count, T0 + 5 * S, T0 + 15 * S))
    return {"acks": acks, "deletes": deletes}


async def check_state(d: pathlib.Path, mode: str, k: int, log: dict) -> None:
    import rusts
    from rusts.storage.blockcache import CACHE

    # states reuse paths and segment names; a server process never reuses a segment file name,
    # but here the process-wide decoded-block cache would serve the previous state's blocks
    CACHE.clear()

    async with rusts.open(d, wal_durability=mode, **OPTS) as db:
        try:
            rs = await db.query({"measurement": "pl", "time_range": {"start": 0, "end": 2**63 - 1}})
            rows = rs.to_rows()
        except Exception as e:  # the measurement may not exist yet in an early state
            if "unknown" not in str(e).lower():
                raise
            rows = []
    seen = set()
    for r in rows:
        key = (r["tags"]["h"], r["timestamp"])
        assert key not in seen, f"state {k}: duplicate {key}"
        seen.add(key)
        i = (r["timestamp"] - T0) // S
        h = "ab".index(r["tags"]["h"])
        assert (r["timestamp"] - T0) % S == 0 and 0 <= i < 10_000, f"state {k}: invented {key}"
        assert r["fields"].get("v") == value(h, i), f"state {k}: wrong value at {key}: {r}"
    deleted = [(a, b) for _, done, a, b in log["deletes"] if done <= k]
    maybe = [(a, b) for sent, _, a, b in log["deletes"] if sent < k]  # in flight: either way
    for h, t in seen:
        assert not any(a <= t < b for a, b in deleted), f"state {k}: deleted row {t} is back"
    if mode in ("every_write", "periodic"):
        # every_write: acknowledged means fsynced. periodic: only what a WAL fsync completed
        # before the cut covers (loss bounded by the sync interval)
        syncs = log.get("wal_syncs", [])
        acked = {(h, T0 + i * S) for done, lo, hi in log["acks"] if done <= k
                 and (mode == "every_write" or any(done <= e < k for e in syncs))
                 for h in "ab" for i in range(lo, hi)}
        acked = {x for x in acked if not any(a <= x[1] < b for a, b in maybe)}
        missing = acked - seen
        assert not missing, f"state {k}: {len(missing)} acknowledged points lost, e.g. {sorted(missing)[:3]}"


def record(root: pathlib.Path, mode: str) -> tuple[Recorder, dict]:
    root.mkdir(parents=True, exist_ok=True)
    rec = Recorder(root)
    with rec:
        log = trio.run(workload, root, mode, rec)
    wal_ids = {fid for snap in rec.snaps for p, (fid, _) in snap.items() if p.startswith("wal" + os.sep)}
    log["wal_syncs"] = [i for i, (kind, what) in enumerate(rec.events) if kind == "file" and what in wal_ids]
    return rec, log


def run_states(rec: Recorder, log: dict, mode: str, n: int, seed: int, scratch: pathlib.Path) -> int:
    """Check ``n`` crash states (cut points spread over the whole workload); returns n."""
    rng = random.Random(seed)
    for i in range(n):
        k = rng.randrange(rec.count + 1)
        d = scratch / f"s{i % 2}"
        rec.crash_state(k, rng, d)
        trio.run(check_state, d, mode, k, log)
    return n
