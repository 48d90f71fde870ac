"""A shard copy rebuilt from a snapshot: the donor's files hard-linked, fetched over HTTP in
pieces, verified, installed by rename; a damaged file is refused and nothing is installed."""

from __future__ import annotations

import http.server
import json
import threading
import urllib.parse
from pathlib import Path

import pytest

import rusts
from rusts.cluster.applier import read_applied
from rusts.cluster.rebuild import Peer, RebuildError, _link_snapshot, download_snapshot, install
from rusts.query.executor import result_json
from rusts.query.model import from_json


class Donor:
    """A minimal stand-in for the donor's ``/cluster/snapshot`` routes over a linked snapshot."""

    def __init__(self, snap_dir: Path, files: list[dict], seq: int, corrupt: str | None = None) -> None:
        meta = {"id": "a" * 32, "shard": 3, "seq": seq, "node": "donor", "files": files}
        self.deleted = False
        donor = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, body: bytes, status: int = 200) -> None:
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self):
                self._send(json.dumps(meta).encode())

            def do_GET(self):
                args = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(self.path).query))
                data = (snap_dir / args["file"]).read_bytes()
                off, n = int(args["offset"]), int(args["length"])
                piece = bytearray(data[off:off + min(n, 1000)])  # small pieces: several requests
                if args["file"] == corrupt and off == 0 and piece:
                    piece[0] ^= 0xFF  # one flipped bit on the way
                self._send(bytes(piece))

            def do_DELETE(self):
                donor.deleted = True
                self._send(b"", 204)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.peer = Peer("donor", f"127.0.0.1:{self.server.server_address[1]}")

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


Q = {"measurement": "cpu", "time_range": {"start": 0, "end": 2**62}}


async def _donor_snapshot(tmp_path: Path):
    async with rusts.open(tmp_path / "donor") as db:
        await db.write(b"\n".join(b"cpu,host=h%d v=%d %d" % (i % 5, i, i + 1) for i in range(3000)))
        await db.flush()
        await db.write(b"cpu,host=h9 v=7 99999")
        await db.flush()
        files = _link_snapshot(db, tmp_path / "snap")
        want = result_json(await db.query(from_json(Q)), 0)["results"]
    return files, want


async def test_a_snapshot_copied_over_http_is_verified_installed_and_opens_with_the_donors_data(tmp_path):
    files, want = await _donor_snapshot(tmp_path)
    assert any(f["name"].startswith("segments/") for f in files)
    assert any(f["name"].startswith("MANIFEST-") for f in files)
    donor = Donor(tmp_path / "snap", files, seq=42)
    try:
        shard = tmp_path / "node" / "shard-3"
        shard.mkdir(parents=True)
        (shard / "stale").write_text("the incomplete copy being replaced")
        staging = shard.with_name("shard-3.rebuild")
        info = download_snapshot(donor.peer, 3, staging)
        install(shard, staging)
    finally:
        donor.close()
    assert donor.deleted and info["seq"] == 42 and info["bytes"] == sum(f["size"] for f in files)
    assert not (shard / "stale").exists() and not staging.exists()
    assert read_applied(shard) == (42, 0)  # the stream continues after the snapshot's sequence
    async with rusts.open(shard) as db:
        assert db.problems == []  # no missing WAL, no rebuilt index
        assert result_json(await db.query(from_json(Q)), 0)["results"] == want
        await db.write(b"cpu,host=h1 v=1 100000")  # the WAL continues after the segments
    async with rusts.open(shard) as db:
        assert len((await db.query(from_json(Q))).timestamps) == 3002


async def test_a_file_damaged_in_transit_is_refused_and_nothing_is_installed(tmp_path):
    files, _ = await _donor_snapshot(tmp_path)
    seg = next(f["name"] for f in files if f["name"].startswith("segments/"))
    donor = Donor(tmp_path / "snap", files, seq=42, corrupt=seg)
    shard = tmp_path / "node" / "shard-3"
    shard.mkdir(parents=True)
    (shard / "applied.json").write_text('{"seq": 5}')
    try:
        with pytest.raises(RebuildError, match="arrived damaged"):
            download_snapshot(donor.peer, 3, shard.with_name("shard-3.rebuild"))
    finally:
        donor.close()
    assert donor.deleted  # the donor's snapshot is released anyway
    assert read_applied(shard) == (5, 0)  # the old copy is untouched
