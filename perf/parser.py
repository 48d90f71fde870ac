"""Line protocol parser throughput: TSBS cpu-only lines and a mixed-type data set.

Run: ``.venv/bin/python perf/parser.py [--batches N] [--lines 5000] [--profile]``.
Prints one JSON object: lines/s and field values/s (best of the batches, single core) per data
set. Data is generated with a fixed seed. ``--profile`` prints a cProfile summary of one batch.
"""

from __future__ import annotations

import argparse
import json
import random
import time

from rusts.protocols.line_protocol import parse

CPU_FIELDS = ["usage_user", "usage_system", "usage_idle", "usage_nice", "usage_iowait",
              "usage_irq", "usage_softirq", "usage_steal", "usage_guest", "usage_guest_nice"]
REGIONS = ["eu-west-1", "us-east-1", "us-west-2", "ap-south-1", "sa-east-1"]


def tsbs_cpu(n_lines: int, hosts: int = 100, seed: int = 1, t0: int = 1451606400000000000):
    """TSBS cpu-only style lines: 100 hosts, 10 tags, 10 float fields, 10 s interval."""
    rnd = random.Random(seed)
    out = []
    for i in range(n_lines):
        h = i % hosts
        region = REGIONS[h % len(REGIONS)]
        key = (f"cpu,hostname=host_{h},region={region},datacenter={region}{'abc'[h % 3]},"
               f"rack={h % 97},os=Ubuntu16.10,arch=x64,team=SF,service={h % 19},"
               f"service_version={h % 2},service_environment=test")
        fields = ",".join(f"{f}={round(rnd.random() * 100, 2)}" for f in CPU_FIELDS)
        out.append(f"{key} {fields} {t0 + (i // hosts) * 10_000_000_000}")
    return ("\n".join(out) + "\n").encode()


def mixed(n_lines: int, hosts: int = 50, seed: int = 2, t0: int = 1451606400000000000):
    """Three measurements with float, integer, unsigned, boolean and string fields."""
    rnd = random.Random(seed)
    out = []
    for i in range(n_lines):
        h = i % hosts
        t = t0 + (i // hosts) * 1_000_000_000
        kind = i % 3
        if kind == 0:
            out.append(f"mem,host=h{h},dc=dc{h % 4} used={rnd.randrange(1 << 40)}i,"
                       f"free={rnd.randrange(1 << 40)}u,used_percent={rnd.random() * 100:.3f},"
                       f"swap_on={'true' if rnd.random() < 0.5 else 'false'} {t}")
        elif kind == 1:
            out.append(f"net,host=h{h},iface=eth{h % 2} bytes_recv={rnd.randrange(1 << 50)}i,"
                       f"bytes_sent={rnd.randrange(1 << 50)}i,err_in={rnd.randrange(10)}i,"
                       f"drop_in={rnd.randrange(10)}i,up=t {t}")
        else:
            out.append(f"status,host=h{h} state=\"{rnd.choice(['ok', 'warn', 'crit'])}\","
                       f"code={rnd.randrange(600)}i,load={rnd.random() * 4:.2f},"
                       f"message=\"disk_{rnd.randrange(100)}\" {t}")
    return ("\n".join(out) + "\n").encode()


def measure(bodies: list[bytes]) -> dict:
    """Best wall-clock and best CPU time over the batches (CPU time is less noisy when other
    processes share the cores)."""
    best = best_cpu = float("inf")
    points = values = 0
    for body in bodies:
        t0, c0 = time.perf_counter(), time.process_time()
        batch = parse(body, default_time=0)
        dt, dc = time.perf_counter() - t0, time.process_time() - c0
        assert not batch.errors, batch.errors[:3]
        points, values = batch.point_count, batch.value_count
        best, best_cpu = min(best, dt), min(best_cpu, dc)
    return {"lines_per_batch": points, "values_per_batch": values,
            "best_batch_s": round(best, 5), "best_batch_cpu_s": round(best_cpu, 5),
            "lines_per_s": round(points / best), "values_per_s": round(values / best),
            "lines_per_cpu_s": round(points / best_cpu),
            "values_per_cpu_s": round(values / best_cpu)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--batches", type=int, default=10)
    ap.add_argument("--lines", type=int, default=5000)
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    tsbs = [tsbs_cpu(args.lines, seed=s) for s in range(args.batches)]
    mix = [mixed(args.lines, seed=s) for s in range(args.batches)]
    parse(tsbs[0])  # warm up imports and kernels
    if args.profile:
        import cProfile
        import pstats
        prof = cProfile.Profile()
        prof.enable()
        for body in tsbs:
            parse(body, default_time=0)
        prof.disable()
        pstats.Stats(prof).sort_stats("cumulative").print_stats(25)
    wide = [tsbs_cpu(args.lines, hosts=args.lines, seed=s) for s in range(args.batches)]
    parse(wide[0])  # fill the series-key cache as a running server would have
    print(json.dumps({"tsbs_cpu_only": measure(tsbs), "mixed_types": measure(mix),
                      "tsbs_one_series_per_line": measure(wide)}, indent=1))


if __name__ == "__main__":
    main()
