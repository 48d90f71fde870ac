"""Full disk against the real server: the data directory lives on a small tmpfs that fills up.

While the disk is full every write is answered 503 with Retry-After (never 500, never a 204 for
data that is not durable), the log says so once per episode rather than once per request, and
writes resume without a restart soon after space returns. Nothing acknowledged is lost and
nothing refused appears."""

from __future__ import annotations

import re
import time


from rel_harness import T0, fill, stored_seqs


def _body(seq: int, n: int = 20) -> str:
    return "\n".join(f"full,w=a seq={seq + i}i {T0 + (seq + i) * 1000}" for i in range(n))


def test_full_disk_answers_503_once_logged_and_resumes(server_factory, small_tmpfs):
    srv = server_factory(storage={"data_dir": str(small_tmpfs), "wal_durability": "every_write",
                                  "memtable": {"max_points": 500, "max_age_secs": 1}})
    srv.start()
    acked: set[int] = set()
    refused: set[int] = set()
    seq = 0
    statuses: list[int] = []
    with srv.client() as c:
        for _ in range(10):
            assert c.post("/write", content=_body(seq)).status_code == 204
            acked.update(range(seq, seq + 20))
            seq += 20
        log_before = srv.log_path.read_text(errors="replace")
        ballast = small_tmpfs / "ballast"
        fill(ballast)
        # the disk is full: keep writing for a while (includes flushes of the small memtable)
        t_end = time.monotonic() + 2.0
        retry_after = set()
        while time.monotonic() < t_end:
            r = c.post("/write", content=_body(seq))
            statuses.append(r.status_code)
            if r.status_code == 204:
                acked.update(range(seq, seq + 20))
            else:
                assert r.status_code == 503, r.text
                assert "disk full" in r.json()["error"]
                retry_after.add(r.headers.get("retry-after"))
                refused.update(range(seq, seq + 20))
            seq += 20
        assert statuses.count(503) > 20, statuses[:50]
        assert None not in retry_after and all(int(v) >= 1 for v in retry_after)
        # space returns: writes are accepted again without a restart
        ballast.unlink()
        deadline = time.monotonic() + 10.0
        while True:
            r = c.post("/write", content=_body(seq))
            if r.status_code == 204:
                acked.update(range(seq, seq + 20))
                seq += 20
                break
            assert r.status_code == 503 and time.monotonic() < deadline, r.text
            refused.update(range(seq, seq + 20))
            seq += 20
            time.sleep(0.05)
        for _ in range(5):
            assert c.post("/write", content=_body(seq)).status_code == 204
            acked.update(range(seq, seq + 20))
            seq += 20
        wal = c.get("/stats").json()["wal"]
    assert wal["unavailable_episodes"] >= 1 and wal["unavailable"] is None and not wal["failed"]
    episode_log = srv.log_path.read_text(errors="replace")[len(log_before):]
    assert len(re.findall("WAL writes refused", episode_log)) == wal["unavailable_episodes"]
    assert "Traceback" not in episode_log
    # one line per episode, not per request: far fewer log lines than refused requests
    assert len(episode_log.splitlines()) < 20 < statuses.count(503), episode_log
    # nothing acknowledged lost, nothing refused stored, no duplicates; also after a restart
    got = stored_seqs(srv.url, "full")
    assert len(got) == len(set(got)) and set(got) == acked
    assert srv.stop() == 0
    srv.start()
    got = stored_seqs(srv.url, "full")
    assert len(got) == len(set(got)) and set(got) == acked
    assert not (set(got) & refused)


def test_fsync_error_fails_closed_and_keeps_what_was_acknowledged(server_factory):
    """An fsync that fails (EIO injected into the live server with strace) fails the WAL closed:
    every later write gets 503 (none is acknowledged), and what was acknowledged before is there
    after a restart. The write whose own fsync failed has an unknown outcome, like a timeout."""
    import shutil
    import signal
    import subprocess

    srv = server_factory(storage={"wal_durability": "every_write"}).start()
    acked = set()
    with srv.client() as c:
        for i in range(5):
            assert c.post("/write", content=_body(i * 20)).status_code == 204
            acked.update(range(i * 20, i * 20 + 20))
        strace = subprocess.Popen(
            [shutil.which("strace") or "strace", "-f", "-qq", "-p", str(srv.proc.pid),
             "-e", "trace=fdatasync,fsync", "-e", "inject=fdatasync,fsync:error=EIO"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            time.sleep(1.0)  # strace attaches to every thread
            answers = [c.post("/write", content=_body(1000 + i * 20)) for i in range(5)]
        finally:
            strace.send_signal(signal.SIGINT)
            strace.wait(10)
        assert [r.status_code for r in answers] == [503] * 5, [r.text for r in answers]
        assert all(r.headers.get("retry-after") for r in answers)
        assert "fsync" in answers[0].json()["error"]
        # strace is gone, but the WAL stays failed: a retried fsync could lie (fsyncgate)
        r = c.post("/write", content=_body(2000))
        assert r.status_code == 503, r.text
        assert c.get("/stats").json()["wal"]["failed"] is True
    srv.kill()
    srv.start()
    got = stored_seqs(srv.url, "full")
    assert len(got) == len(set(got))
    # the group whose fsync failed has an unknown outcome (written, durability unknown): all of
    # it or none of it; every later write was refused before reaching the file: absent
    unknown = set(range(1000, 1020))
    assert set(got) - unknown == acked
    assert not (set(got) & unknown) or unknown <= set(got)
