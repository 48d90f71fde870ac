"""Power-loss soak: record the reliability workload once per WAL mode and seed, then build and
check simulated power-cut states (tests/reliability/rel_powerloss.py: unsynced writes lost,
renames not durable, any subset of dirty pages persisted, torn and zero-filled tails).

    python perf/soak/power_loss.py --states 20000
    python perf/soak/power_loss.py --states 10000 --modes periodic --max-secs 3600   # one mode

SIGTERM (or --max-secs) stops early and still prints the figures of the states checked.

Prints JSON: states checked per mode, failed opens, wrong answers (wrong / invented / duplicate /
deleted-back rows), acknowledged points lost (every_write; periodic: covered by a WAL fsync),
events recorded, seconds; the first failures with their seed and cut point.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import random
import shutil
import signal
import sys
import tempfile
import time

import trio

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "tests" / "reliability"))
import rel_powerloss as pl  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--states", type=int, default=20_000, help="total, split over the modes")
    ap.add_argument("--modes", default="every_write,periodic")
    ap.add_argument("--workloads", type=int, default=4, help="recorded workloads per mode")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--max-secs", type=float, default=0, help="stop early after this long (0: never)")
    a = ap.parse_args()
    stop = []  # SIGTERM: stop early and report what was checked
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    modes = a.modes.split(",")
    root = pathlib.Path(tempfile.mkdtemp(prefix="powerloss-"))
    out = {"modes": {}, "failures": []}
    t0 = time.time()
    per_workload = max(1, a.states // (len(modes) * a.workloads))
    for mode in modes:
        m = out["modes"].setdefault(mode, {"states": 0, "failed_opens": 0, "wrong_answers": 0,
                                           "acknowledged_lost": 0, "events": 0})
        for w in range(a.workloads):
            if out.get("stopped_early"):
                break
            rec, log = pl.record(root / f"{mode}-{w}" / "live", mode)
            m["events"] += rec.count
            rng = random.Random(f"{a.seed}-{mode}-{w}")
            for i in range(per_workload):
                if stop or (a.max_secs and time.time() - t0 > a.max_secs):
                    out["stopped_early"] = True
                    break
                k = rng.randrange(rec.count + 1)
                d = root / "state"
                rec.crash_state(k, rng, d)
                m["states"] += 1
                try:
                    trio.run(pl.check_state, d, mode, k, log)
                except AssertionError as e:
                    msg = str(e)
                    m["acknowledged_lost" if "lost" in msg else "wrong_answers"] += 1
                    if len(out["failures"]) < 10:
                        out["failures"].append({"mode": mode, "workload": w, "state": i, "k": k, "error": msg[:300]})
                except BaseException as e:  # noqa: BLE001 - the open itself failed
                    m["failed_opens"] += 1
                    if len(out["failures"]) < 10:
                        out["failures"].append({"mode": mode, "workload": w, "state": i, "k": k,
                                                "error": repr(e)[:300]})
            shutil.rmtree(root / f"{mode}-{w}", ignore_errors=True)
    out["seconds"] = round(time.time() - t0, 1)
    out["states"] = sum(m["states"] for m in out["modes"].values())
    out["all_ok"] = not out["failures"]
    shutil.rmtree(root, ignore_errors=True)
    print(json.dumps(out, indent=1))
    return 0 if out["all_ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
