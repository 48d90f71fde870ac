"""Crash soak: SIGKILL the real server at random moments during mixed work (three writers,
flushes, deletes, queries, compaction as it comes), restart on the same data directory, repeat;
then compare what is stored with the client-side history. Per WAL durability mode.

    python perf/soak/crash.py --kills 200 --modes every_write,periodic,os_default,none

Prints JSON per mode: kills, acknowledged points, lost (must be 0 except in mode none),
duplicates, wrong values, invented points, refused points present, deletes acknowledged and
deleted rows back, failed restarts, unexpected answers, problems reported at the end, seconds.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import random
import signal
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "tests" / "reliability"))
from rel_harness import History, Server, crash_cycle, verify  # noqa: E402


STOP = []  # set by SIGTERM: finish the current mode with the kills done so far, skip the rest


def soak(mode: str, kills: int, seed: int, verify_every: int, start_timeout: float) -> dict:
    rng = random.Random(f"{seed}-{mode}")
    root = pathlib.Path(tempfile.mkdtemp(prefix=f"crash-{mode}-"))
    srv = Server(root, storage={"wal_durability": mode, "wal_sync_interval_ms": 100,
                                "memtable": {"max_points": 2000, "max_age_secs": 1}})
    srv.start_timeout = start_timeout
    hist = History()
    failed_starts = 0
    checks = []
    t0 = time.time()
    done = 0
    for i in range(kills):
        if STOP:
            break
        done += 1
        try:
            crash_cycle(srv, hist, rng, min_secs=0.05, max_secs=2.0)
        except RuntimeError as e:  # the server did not start or answer /ready
            failed_starts += 1
            print(f"restart failed: {e}", file=sys.stderr)
            srv.kill()
        if verify_every and (i + 1) % verify_every == 0 and i + 1 < kills:
            out = verify(srv, hist)
            srv.kill()
            checks.append({k: out[k] for k in ("lost", "duplicates", "wrong_values", "invented")})
    out = verify(srv, hist)
    srv.stop()
    out.update(mode=mode, kills=done, failed_restarts=failed_starts, seconds=round(time.time() - t0, 1),
               intermediate_checks_failed=sum(1 for c in checks if any(c.values()) and
                                              (c["lost"] == 0 or mode != "none")))
    out["problems"] = out["problems"][:5]
    st = sorted(hist.start_secs)
    if st:  # a start that fails the timeout is not in here: it counts in failed_restarts
        out["start_to_ready_secs"] = {"median": round(st[len(st) // 2], 1), "max": round(st[-1], 1),
                                      "over_30s": sum(1 for x in st if x > 30)}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--kills", type=int, default=200)
    ap.add_argument("--modes", default="every_write,periodic,os_default,none")
    ap.add_argument("--seed", type=int, default=1)  # SIGTERM: stop early, report what was done
    ap.add_argument("--verify-every", type=int, default=25)
    ap.add_argument("--start-timeout", type=float, default=120.0,
                    help="seconds a restart may take to answer /ready before it counts as failed")
    a = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: STOP.append(1))
    runs = []
    for m in a.modes.split(","):
        if STOP:
            break
        runs.append(soak(m, a.kills, a.seed, a.verify_every, a.start_timeout))
        print(json.dumps(runs[-1]), file=sys.stderr, flush=True)  # each mode as soon as it is done
    ok = all(r["duplicates"] == 0 and r["wrong_values"] == 0 and r["invented"] == 0
             and r["refused_present"] == 0 and r["deleted_rows_back"] == 0 and r["failed_restarts"] == 0
             and not r["unexpected_answers"] and (r["lost"] == 0 or r["mode"] == "none") for r in runs)
    print(json.dumps({"runs": runs, "all_ok": ok}, indent=1))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
