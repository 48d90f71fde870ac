"""Corruption soak: N seeded corruptions (truncation, bit flips, zeroed pages, overwritten runs,
deleted files) of the WAL, segments, manifest, series index and schema of a pristine data
directory, each opened and checked as in tests/reliability/test_corruption.py.

    python perf/soak/corruption.py --cases 2000

Prints JSON: cases, failed opens, wrong answers (wrong/invented/duplicate rows), rows lost without
a report, cases where damage was reported, rows lost in total and how many of them were named in
the answer's ``missing`` ranges, per file kind.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import random
import shutil
import sys
import tempfile
import time

import trio

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "tests" / "reliability"))
import test_corruption as tc  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--cases", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=100_000)
    a = ap.parse_args()
    root = pathlib.Path(tempfile.mkdtemp(prefix="corrupt-soak-"))
    trio.run(tc._build, root / "live", root / "snap")
    out = {"cases": 0, "failed_opens": 0, "wrong_answers": 0, "unreported_loss": 0, "other_failures": 0,
           "reported": 0, "rows_lost": 0, "rows_named_missing": 0, "by_kind": {}, "examples": []}
    t0 = time.time()
    for i in range(a.cases):
        shutil.rmtree(root / f"case{i - 1}", ignore_errors=True)
        d = root / f"case{i}"  # a new path per case: the block cache is keyed by file path
        shutil.copytree(root / "snap", d)
        (d / "LOCK").unlink(missing_ok=True)
        rng = random.Random(a.seed + i)
        kind, action, path = tc.damage(d, rng)
        k = out["by_kind"].setdefault(kind, {"cases": 0, "reported": 0, "rows_lost": 0})
        k["cases"] += 1
        out["cases"] += 1
        try:
            res = trio.run(tc._check, d, kind, action, path)
        except BaseException as e:  # noqa: BLE001 - classify every failure
            msg = repr(e)
            bucket = ("wrong_answers" if any(w in msg for w in ("wrong value", "invented", "duplicate"))
                      else "unreported_loss" if "without a report" in msg or "lost" in msg
                      else "failed_opens" if "open" in msg.lower() or "Corruption" in msg
                      else "other_failures")
            out[bucket] += 1
            if len(out["examples"]) < 10:
                out["examples"].append({"seed": a.seed + i, "kind": kind, "action": action,
                                        "error": msg[:300]})
            continue
        out["rows_lost"] += res["lost"]
        out["rows_named_missing"] += res["explained"]
        k["rows_lost"] += res["lost"]
        if res["problems"]:
            out["reported"] += 1
            k["reported"] += 1
    out["seconds"] = round(time.time() - t0, 1)
    shutil.rmtree(root, ignore_errors=True)
    ok = not (out["failed_opens"] or out["wrong_answers"] or out["unreported_loss"] or out["other_failures"])
    out["all_ok"] = ok
    print(json.dumps(out, indent=1))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
