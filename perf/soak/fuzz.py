"""Fuzz soak: many cases per target (tests/reliability/rel_fuzz.py: line protocol parser, JSON
query decoder, SQL front end, pgwire message reader; tests/reliability/rel_http_fuzz.py: the HTTP
request path).

    python perf/soak/fuzz.py --cases 1000000                     # seeded mutation engine
    python perf/soak/fuzz.py --engine atheris --target sql --cases 1000000   # coverage-guided
    python perf/soak/fuzz.py --target http --cases 1000000 --wire-cases 20000   # HTTP request path

``--target http`` (not part of ``all``) runs the generated requests in-process through the
server's serving loop with a real Database on a temporary directory, then ``--wire-cases`` of
them over loopback sockets against a rusts-server process; see rel_http_fuzz.py for the oracle.

The mutation engine mixes corpus mutations (byte flips, inserted syntax characters and keywords,
deletions, splices) with random bytes. A case fails when the target raises anything but a
RustsError (crash) or takes more than 1 s (hang). Prints JSON per target: cases, crashes, hangs,
slowest case in ms, cases per second, the first failing inputs (hex). atheris (when installed)
runs one target per process under libFuzzer with the corpus as seeds.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import random
import signal
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "tests" / "reliability"))
import rel_fuzz  # noqa: E402


STOP = []  # set by SIGTERM: the running target stops and reports the cases done


def run_mutation(target: str, cases: int, seed: int, skip: int = 0) -> dict:
    fn, _ = rel_fuzz.TARGETS[target]
    corpus = rel_fuzz.seeds(target)
    rng = random.Random(f"{seed}-{target}")
    crashes, hangs, slowest, examples, crash_examples = 0, 0, 0.0, [], []
    t0 = time.perf_counter()
    done = 0
    for i in range(cases):
        if STOP:
            break
        done += 1
        r = rng.random()
        if r < 0.8:
            data = rel_fuzz.mutate(rng.choice(corpus), rng, n=rng.choice((1, 2, 4, 8, 16)))
        else:
            data = rng.randbytes(rng.randint(0, 300))
        if i < skip:  # replaying a slice of the seeded sequence: generate, do not run
            done -= 1
            continue
        t = time.perf_counter()
        try:
            fn(data)
        except Exception as e:  # noqa: BLE001 - a crash is any non-RustsError
            crashes += 1
            if len(crash_examples) < 5:  # kept apart: slow cases must not crowd them out
                crash_examples.append({"case": i, "input": data.hex(), "error": repr(e)[:300]})
                print(json.dumps(crash_examples[-1]), file=sys.stderr, flush=True)
        dt = time.perf_counter() - t
        slowest = max(slowest, dt)
        if dt > 1.0:
            hangs += 1
            if len(examples) < 5:
                examples.append({"case": i, "input": data.hex(), "error": f"took {dt:.2f}s"})
    secs = time.perf_counter() - t0
    return {"target": target, "engine": "mutation", "cases": done, "crashes": crashes, "hangs": hangs,
            "slowest_ms": round(slowest * 1000, 1), "cases_per_sec": round(done / max(secs, 1e-9)),
            "seconds": round(secs, 1), "crash_examples": crash_examples, "slow_examples": examples}


def run_atheris(target: str, cases: int) -> None:
    import atheris

    fn, _ = rel_fuzz.TARGETS[target]
    fn(b"")  # import what the target uses, then instrument it for coverage
    atheris.instrument_all()
    corpus_dir = pathlib.Path(f"/tmp/rusts-fuzz-{target}")
    corpus_dir.mkdir(exist_ok=True)
    for i, s in enumerate(rel_fuzz.seeds(target)):
        (corpus_dir / f"seed{i}").write_bytes(s)
    atheris.Setup([sys.argv[0], f"-runs={cases}", "-timeout=1", "-rss_limit_mb=1024", str(corpus_dir)],
                  fn)
    atheris.Fuzz()


def run_http(a) -> int:
    import trio

    import rel_http_fuzz

    runs = [trio.run(lambda: rel_http_fuzz.fuzz_in_process(a.cases, a.seed, skip=a.skip, stop=STOP))]
    print(json.dumps(runs[-1]), file=sys.stderr, flush=True)
    if a.wire_cases and not STOP:
        runs.append(rel_http_fuzz.fuzz_wire(a.wire_cases, a.seed, stop=STOP))
    ok = all(r["failures"] == 0 for r in runs)
    print(json.dumps({"runs": runs, "all_ok": ok}, indent=1))
    return 0 if ok else 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--cases", type=int, default=1_000_000)
    ap.add_argument("--target", default="all", help=f"one of {', '.join(rel_fuzz.TARGETS)} or all")
    ap.add_argument("--engine", default="mutation", choices=("mutation", "atheris"))
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--skip", type=int, default=0,
                    help="replay: run only cases from this index on (the sequence is the same)")
    ap.add_argument("--wire-cases", type=int, default=20_000, help="--target http: cases over loopback sockets")
    a = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: STOP.append(1))
    if a.target == "http":
        return run_http(a)
    targets = list(rel_fuzz.TARGETS) if a.target == "all" else [a.target]
    if a.engine == "atheris":
        run_atheris(targets[0], a.cases)  # libFuzzer prints its own report; exits non-zero on a crash
        return 0
    runs = []
    for t in targets:
        if STOP:
            break
        runs.append(run_mutation(t, a.cases, a.seed, a.skip))
        print(json.dumps(runs[-1]), file=sys.stderr, flush=True)  # each target as soon as it is done
    ok = all(r["crashes"] == 0 and r["hangs"] == 0 for r in runs)
    print(json.dumps({"runs": runs, "all_ok": ok}, indent=1))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
