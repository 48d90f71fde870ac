"""TSBS cpu-only shaped data: 100 hosts x 24 h at 10 s, 10 float fields with 2 decimals (seeded).

``python perf/tsbs.py --out /tmp/tsbs.lp`` writes the line protocol (864,000 lines, time-major like
TSBS) and prints a JSON summary. Other perf scripts import :func:`generate` / :func:`batches`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

FIELDS = ["usage_user", "usage_system", "usage_idle", "usage_nice", "usage_iowait", "usage_irq",
          "usage_softirq", "usage_steal", "usage_guest", "usage_guest_nice"]
REGIONS = ["us-east-1", "us-west-1", "us-west-2", "eu-west-1", "eu-central-1", "ap-southeast-1",
           "ap-southeast-2", "ap-northeast-1", "sa-east-1"]
START = 1451606400_000_000_000  # 2016-01-01, as TSBS
STEP = 10_000_000_000


def host_tags(n_hosts: int, seed: int = 1) -> list[str]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n_hosts):
        region = REGIONS[rng.integers(len(REGIONS))]
        out.append(
            f"hostname=host_{i},region={region},datacenter={region}{'abc'[rng.integers(3)]},"
            f"rack={rng.integers(100)},os=Ubuntu{['16.10', '16.04', '15.10'][rng.integers(3)]},"
            f"arch={['x64', 'x86'][rng.integers(2)]},team={['SF', 'NYC', 'LON', 'CHI'][rng.integers(4)]},"
            f"service={rng.integers(20)},service_version={rng.integers(2)},"
            f"service_environment={['production', 'staging', 'test'][rng.integers(3)]}")
    return out


def values(n_hosts: int, n_steps: int, seed: int = 7) -> np.ndarray:
    """Random walks clamped to [0, 100], rounded to 2 decimals: shape (steps, hosts, fields)."""
    rng = np.random.default_rng(seed)
    steps = rng.normal(0, 1.5, size=(n_steps, n_hosts, len(FIELDS)))
    start = rng.uniform(0, 100, size=(1, n_hosts, len(FIELDS)))
    walk = np.clip(start + np.cumsum(steps, axis=0), 0, 100)
    return np.round(walk, 2)


def generate(n_hosts: int = 100, hours: float = 24, seed: int = 7) -> list[bytes]:
    """All lines, time-major (every host at t0, then t1, ...)."""
    n_steps = int(hours * 3600 * 1e9 // STEP)
    tags = host_tags(n_hosts)
    vals = values(n_hosts, n_steps, seed)
    prefix = [f"cpu,{t} ".encode() for t in tags]
    lines = []
    fmt = ",".join(f"{f}=%s" for f in FIELDS)
    for s in range(n_steps):
        ts = f" {START + s * STEP}".encode()
        row = vals[s].tolist()
        for h in range(n_hosts):
            lines.append(prefix[h] + (fmt % tuple(row[h])).encode() + ts)
    return lines


def batches(lines: list[bytes], size: int = 5000) -> list[bytes]:
    return [b"\n".join(lines[i:i + size]) for i in range(0, len(lines), size)]


def cached(n_hosts: int = 100, hours: float = 24, path: str | None = None) -> list[bytes]:
    path = path or f"/tmp/rusts-tsbs-{n_hosts}h{hours}.lp"
    if os.path.exists(path):
        with open(path, "rb") as f:
            return f.read().split(b"\n")
    lines = generate(n_hosts, hours)
    with open(path + ".tmp", "wb") as f:
        f.write(b"\n".join(lines))
    os.replace(path + ".tmp", path)
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--hosts", type=int, default=100)
    ap.add_argument("--hours", type=float, default=24)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    t = time.perf_counter()
    lines = cached(a.hosts, a.hours, a.out)
    print(json.dumps({"lines": len(lines), "values": len(lines) * len(FIELDS),
                      "bytes": sum(len(x) + 1 for x in lines), "seconds": round(time.perf_counter() - t, 2)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
