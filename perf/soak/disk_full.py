"""Disk-full soak: the real server on a small tmpfs; fill it, keep writing, free it, repeat.

    python perf/soak/disk_full.py --episodes 20 --mode every_write

Each episode: a writer thread sends 20-line batches continuously; a ballast file fills the disk;
the writer runs on for ``--full-secs``; the ballast is removed. Measured per episode: seconds from
the disk being full to the first 503, seconds from space returning to the first 204 again; over the
run: answers by status, log lines per episode, server CPU seconds while full, and at the end (after
a restart) acknowledged points lost and refused points present. Needs root (mounts a tmpfs).
Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import subprocess
import sys
import tempfile
import threading
import time

import httpx

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "tests" / "reliability"))
from rel_harness import T0, Server, fill, stored_seqs  # noqa: E402


def cpu_secs(pid: int) -> float:
    f = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / 100.0


class Writer(threading.Thread):
    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.stop = threading.Event()
        self.log: list[tuple[float, int, int]] = []  # (time, status, first seq)
        self.seq = 0

    def run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=10) as c:
            while not self.stop.is_set():
                body = "\n".join(f"full,w=a seq={self.seq + i}i {T0 + (self.seq + i) * 1000}"
                                 for i in range(20))
                try:
                    st = c.post("/write", content=body).status_code
                except httpx.HTTPError:
                    st = -1
                self.log.append((time.monotonic(), st, self.seq))
                self.seq += 20


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--episodes", type=int, default=20)
    ap.add_argument("--full-secs", type=float, default=3.0)
    ap.add_argument("--mode", default="every_write")
    ap.add_argument("--size", default="16m")
    a = ap.parse_args()
    root = pathlib.Path(tempfile.mkdtemp(prefix="diskfull-"))
    data = root / "data"
    data.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={a.size}", "tmpfs", str(data)], check=True)
    srv = Server(root, storage={"data_dir": str(data), "wal_durability": a.mode,
                                "memtable": {"max_points": 5000, "max_age_secs": 1}})
    out: dict = {"mode": a.mode, "episodes": []}
    try:
        srv.start()
        w = Writer(srv.url)
        w.start()
        for _ in range(a.episodes):
            time.sleep(1.0)
            log0 = len(srv.log_path.read_text(errors="replace"))
            fill(data / "ballast")
            t_full = time.monotonic()
            cpu0 = cpu_secs(srv.proc.pid)
            time.sleep(a.full_secs)
            cpu_full = cpu_secs(srv.proc.pid) - cpu0
            (data / "ballast").unlink()
            t_free = time.monotonic()
            while not any(t > t_free and st == 204 for t, st, _ in w.log[-50:]):
                time.sleep(0.01)
                if time.monotonic() - t_free > 60:
                    break
            first503 = next((t for t, st, _ in w.log if t >= t_full and st == 503), None)
            back = next((t for t, st, _ in w.log if t >= t_free and st == 204), None)
            lines = srv.log_path.read_text(errors="replace")[log0:].count("\n")
            out["episodes"].append({
                "secs_to_503": None if first503 is None else round(first503 - t_full, 3),
                "secs_to_recovery": None if back is None else round(back - t_free, 3),
                "log_lines": lines, "server_cpu_secs_while_full": round(cpu_full, 2)})
        w.stop.set()
        w.join()
        statuses: dict[int, int] = {}
        acked, refused = set(), set()
        for _, st, s in w.log:
            statuses[st] = statuses.get(st, 0) + 1
            (acked if st == 204 else refused if st in (503, 507) else set()).update(range(s, s + 20))
        srv.stop()
        srv.start()
        have = stored_seqs(srv.url, "full")
        srv.stop()
        eps = out["episodes"]
        out.update({
            "answers": {str(k): v for k, v in sorted(statuses.items())},
            "acknowledged_points": len(acked), "acknowledged_lost": len(acked - set(have)),
            "refused_present": len(refused & set(have)), "duplicates": len(have) - len(set(have)),
            "max_secs_to_503": max(e["secs_to_503"] or 0 for e in eps),
            "max_secs_to_recovery": max(e["secs_to_recovery"] or 99 for e in eps),
            "max_log_lines_per_episode": max(e["log_lines"] for e in eps)})
    finally:
        if srv.proc is not None:
            srv.kill()
        subprocess.run(["umount", "-l", str(data)], check=False)
    ok = (out.get("acknowledged_lost") == 0 and out.get("refused_present") == 0
          and out.get("max_secs_to_503", 9) <= 1 and out.get("max_secs_to_recovery", 99) <= 5
          and "500" not in out.get("answers", {}))
    out["all_ok"] = ok
    print(json.dumps(out, indent=1))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
