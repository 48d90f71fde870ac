"""Rebuilding a shard copy from a live replica's snapshot, over node-to-node HTTP.

A shard copy is rebuilt when it is empty (a wiped or new node) while its stream already holds
messages, or when it fell behind the stream's retained start (retention dropped messages it never
applied). Replaying the stream cannot do the second, and is slower than copying for the first.

Donor (a live owner whose copy is complete and caught up), ``POST /cluster/snapshot/<shard>``:

1. take the shard applier's lock (no batch is applied meanwhile), flush the shard database
   (everything applied up to sequence ``S`` is now in segment files and the manifest), and
   hard-link the manifest's segment files into ``<data_dir>/cluster/snapshots/<id>/`` with a copy
   of the manifest (that committed state) and of the series index; release the lock. Segment files
   are immutable, so the links stay valid after a compaction replaces them on the donor;
2. answer ``{"id", "shard", "seq": S, "files": [{"name", "size", "crc32"}]}``.

``GET /cluster/snapshot/<id>?file=<name>&offset=<o>&length=<n>`` answers a piece of a file;
``DELETE /cluster/snapshot/<id>`` drops the snapshot (snapshots older than ``SNAPSHOT_TTL``
are dropped anyway, and all at the node's start).

Receiver (:func:`download_snapshot`, in a worker thread): fetches every file in ``CHUNK`` pieces
into ``shard-<k>.rebuild/``, checks each file's size and CRC-32 against the list, fsyncs it, adds
an empty WAL segment starting after the manifest's flushed sequence and ``applied.json`` with
``S`` (fsynced), then :func:`install` swaps the directory in with renames: ``shard-<k>`` is at
every moment either the old copy or the complete new one (a crash in between leaves no
``shard-<k>``: an empty copy, rebuilt again at the next start). The applier then continues
the stream from ``S + 1``. Applying is idempotent, so the few messages that may be both in the
snapshot and after ``S`` change nothing.

When the server has ``auth.enabled``, the requests carry a short-lived admin token minted with
``auth.jwt_secret`` (the nodes of a cluster share it); the routes need admin (they are not in
the route table of :mod:`rusts.security.authorize`, which fails closed).
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import shutil
import ssl
import time
import urllib.parse
import uuid
import zlib
from pathlib import Path

import attrs
import trio

from rusts.errors import ProtocolError, RustsError

log = logging.getLogger("rusts.cluster.rebuild")

CHUNK = 4 << 20
SNAPSHOT_TTL = 900.0
SNAP_DIR = "snapshots"


class RebuildError(RustsError):
    """A snapshot could not be taken, fetched or verified (the next owner is tried)."""

    http_status = 503


class SnapshotUnavailable(RustsError):
    """This node cannot give a snapshot of the shard (it does not hold a complete, caught-up copy)."""

    http_status = 409


# ------------------------------------------------------------------------------ donor side
def _crc_file(path: Path) -> tuple[int, int]:
    crc, size = 0, 0
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            crc = zlib.crc32(chunk, crc)
            size += len(chunk)
    return size, crc


def _link_snapshot(db, dest: Path) -> list[dict]:
    """Hard-link the committed segment files of ``db`` into ``dest`` with a copy of the manifest
    and the series index; the file list with sizes and CRC-32s (worker thread)."""
    from rusts.storage.manifest import _serialise

    for _attempt in range(10):
        shutil.rmtree(dest, ignore_errors=True)
        (dest / "segments").mkdir(parents=True)
        state = db.manifest.state
        try:
            for meta in state.segments:
                os.link(db.data_dir / "segments" / meta.file, dest / "segments" / meta.file)
        except FileNotFoundError:  # a compaction replaced the file after the state was read
            continue
        break
    else:
        raise RebuildError("the shard's segment files kept changing while the snapshot was taken")
    (dest / f"MANIFEST-{state.version:012d}").write_bytes(_serialise(attrs.evolve(state, copy_pending=False)))
    index = db.data_dir / "index"
    if index.is_dir():
        (dest / "index").mkdir()
        for p in index.iterdir():
            if p.is_file() and not p.name.endswith(".tmp"):
                shutil.copyfile(p, dest / "index" / p.name)
    files = []
    for p in sorted(dest.rglob("*")):
        if p.is_file():
            size, crc = _crc_file(p)
            files.append({"name": p.relative_to(dest).as_posix(), "size": size, "crc32": crc})
    return files


class SnapshotStore:
    """The snapshots this node has taken for peers (``<data_dir>/cluster/snapshots``)."""

    def __init__(self, root: Path) -> None:
        self.dir = root / SNAP_DIR
        shutil.rmtree(self.dir, ignore_errors=True)  # an earlier run's: nobody is fetching them
        self.snaps: dict[str, tuple[float, dict]] = {}
        self.served_bytes = 0

    def _expire(self) -> None:
        now = time.monotonic()
        for sid, (t, _) in list(self.snaps.items()):
            if now - t > SNAPSHOT_TTL:
                self.drop(sid)

    async def create(self, node, shard: int) -> dict:
        self._expire()
        if shard not in node.dbs or not node.serves(shard):
            raise SnapshotUnavailable(f"node {node.cfg.node_id} has no complete, caught-up copy of shard {shard}")
        db, applier = node.dbs[shard], node.appliers[shard]
        sid = uuid.uuid4().hex
        dest = self.dir / sid
        async with applier.lock:  # no batch is applied meanwhile: the flushed state is exactly ``seq``
            await db.flush()
            seq = applier.applied
            files = await trio.to_thread.run_sync(_link_snapshot, db, dest)
        meta = {"id": sid, "shard": shard, "seq": seq, "node": node.cfg.node_id, "files": files}
        self.snaps[sid] = (time.monotonic(), meta)
        log.info("shard %d: snapshot %s at sequence %d for a peer (%d files, %d bytes)", shard, sid, seq,
                 len(files), sum(f["size"] for f in files))
        return meta

    def read(self, sid: str, name: str, offset: int, length: int) -> bytes:
        if sid not in self.snaps:
            raise SnapshotUnavailable(f"no snapshot {sid!r} on this node (expired?)")
        files = {f["name"] for f in self.snaps[sid][1]["files"]}
        if name not in files:
            raise ProtocolError(f"snapshot {sid} has no file {name!r}")
        with open(self.dir / sid / name, "rb") as fh:
            fh.seek(max(0, offset))
            data = fh.read(max(0, min(length, CHUNK)))
        self.served_bytes += len(data)
        return data

    def drop(self, sid: str) -> None:
        self.snaps.pop(sid, None)
        if len(sid) == 32 and sid.isalnum():
            shutil.rmtree(self.dir / sid, ignore_errors=True)


async def snapshot_route(node, req, name: str):
    """The ``/cluster/snapshot/<name>`` HTTP route (rusts.protocols.http.app calls it)."""
    import orjson

    from rusts.protocols.http.routing import Response

    if node is None or not hasattr(node, "snapshots"):
        raise SnapshotUnavailable("this server is not a running cluster node")
    store = node.snapshots
    if req.method == "POST":
        try:
            shard = int(name)
        except ValueError:
            raise ProtocolError(f"expected a shard number, got {name!r}") from None
        return Response(200, orjson.dumps(await store.create(node, shard)), "application/json")
    if req.method == "DELETE":
        store.drop(name)
        return Response(204)
    try:
        offset, length = int(req.args.get("offset", 0)), int(req.args.get("length", CHUNK))
    except ValueError:
        raise ProtocolError("offset and length must be integers") from None
    data = await trio.to_thread.run_sync(store.read, name, req.args.get("file", ""), offset, length)
    return Response(200, data, "application/octet-stream")


# ------------------------------------------------------------------------------ receiver side
@attrs.frozen
class Peer:
    node_id: str
    address: str  # host:port
    token: str | None = None  # bearer token when auth is on
    tls_ca: str | None = None  # https, trusting this CA file (None: plain http)


def _connection(peer: Peer, timeout: float):
    host, _, port = peer.address.rpartition(":")
    if peer.tls_ca is not None:
        ctx = ssl.create_default_context(cafile=peer.tls_ca)
        return http.client.HTTPSConnection(host, int(port), timeout=timeout, context=ctx)
    return http.client.HTTPConnection(host, int(port), timeout=timeout)


def _request(conn, peer: Peer, method: str, path: str) -> bytes:
    headers = {"Authorization": f"Bearer {peer.token}"} if peer.token else {}
    conn.request(method, path, headers=headers)
    resp = conn.getresponse()
    body = resp.read()
    if resp.status >= 300:
        try:
            why = json.loads(body)["error"]
        except (ValueError, KeyError, TypeError):
            why = body[:200].decode("utf-8", "replace")
        raise RebuildError(f"node {peer.node_id} ({peer.address}): {method} {path.split('?')[0]}: "
                           f"{resp.status} {why}")
    return body


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def download_snapshot(peer: Peer, shard: int, staging: Path, timeout: float = 30.0) -> dict:
    """Fetch a snapshot of ``shard`` from ``peer`` into ``staging`` (created afresh), verify every
    file's size and CRC-32, and prepare it to be installed (WAL start, ``applied.json``). Returns
    the snapshot's description plus ``bytes`` and ``secs``. Raises RebuildError (or OSError)."""
    from rusts.cluster.applier import write_applied
    from rusts.storage.manifest import Manifest
    from rusts.storage.wal import MAGIC, segment_name

    t0 = time.monotonic()
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    conn = _connection(peer, timeout)
    try:
        meta = json.loads(_request(conn, peer, "POST", f"/cluster/snapshot/{shard}"))
        sid = meta["id"]
        total = 0
        try:
            for f in meta["files"]:
                name = f["name"]
                if name.startswith("/") or ".." in Path(name).parts:
                    raise RebuildError(f"node {peer.node_id}: unsafe file name in snapshot: {name!r}")
                path = staging / name
                path.parent.mkdir(parents=True, exist_ok=True)
                crc, off = 0, 0
                with open(path, "wb") as fh:
                    while off < f["size"]:
                        q = urllib.parse.urlencode({"file": name, "offset": off, "length": CHUNK})
                        data = _request(conn, peer, "GET", f"/cluster/snapshot/{sid}?{q}")
                        if not data:
                            break
                        fh.write(data)
                        crc = zlib.crc32(data, crc)
                        off += len(data)
                    fh.flush()
                    os.fsync(fh.fileno())
                if off != f["size"] or crc != f["crc32"]:
                    raise RebuildError(f"node {peer.node_id}: snapshot file {name} arrived damaged "
                                       f"({off} bytes, crc {crc:08x}; expected {f['size']}, {f['crc32']:08x})")
                total += off
        finally:
            try:
                _request(conn, peer, "DELETE", f"/cluster/snapshot/{sid}")
            except (RebuildError, OSError, http.client.HTTPException):
                pass  # it expires on the donor
    except http.client.HTTPException as e:
        raise RebuildError(f"node {peer.node_id} ({peer.address}): {type(e).__name__}: {e}") from None
    finally:
        conn.close()
    manifest, problems = Manifest.load(staging)  # parses and checks the copied manifest
    flushed = manifest.state.flushed_seq
    names = {m.file for m in manifest.state.segments}
    if names != {f["name"][len("segments/"):] for f in meta["files"] if f["name"].startswith("segments/")}:
        raise RebuildError(f"node {peer.node_id}: snapshot of shard {shard} does not match its manifest")
    wal = staging / "wal"
    wal.mkdir(exist_ok=True)
    with open(wal / segment_name(flushed + 1), "wb") as fh:  # the WAL continues after the segments
        fh.write(MAGIC)
        fh.flush()
        os.fsync(fh.fileno())
    _fsync_dir(wal)
    for d in (staging / "segments", staging / "index", staging):
        if d.is_dir():
            _fsync_dir(d)
    write_applied(staging, int(meta["seq"]), durable=True)
    return {**meta, "bytes": total, "secs": round(time.monotonic() - t0, 3), "problems": problems}


def install(shard_dir: Path, staging: Path) -> None:
    """Swap the verified ``staging`` directory in as ``shard_dir`` (renames, parent fsynced)."""
    old = shard_dir.with_name(shard_dir.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if shard_dir.exists():
        os.replace(shard_dir, old)
    os.replace(staging, shard_dir)
    _fsync_dir(shard_dir.parent)
    shutil.rmtree(old, ignore_errors=True)


def clean_leftovers(shard_dir: Path) -> None:
    """Drop a rebuild that a crash interrupted (its staging or replaced directory)."""
    for suffix in (".rebuild", ".old"):
        shutil.rmtree(shard_dir.with_name(shard_dir.name + suffix), ignore_errors=True)


def is_fresh(shard_dir: Path) -> bool:
    """No applied sequence recorded: a wiped or new copy."""
    from rusts.cluster.applier import APPLIED_FILE

    return not (shard_dir / APPLIED_FILE).exists()
