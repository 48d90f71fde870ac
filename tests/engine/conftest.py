"""Fixtures shared by the engine tests."""

from __future__ import annotations

import random

import pytest

T0 = 1_700_000_000_000_000_000
S = 10**9


def one_host_lines(rng: random.Random, t_lo: int, t_hi: int, n: int, fields: dict, hosts: int = 3) -> bytes:
    """``n`` random lines of measurement ``m`` for hosts ``h0..``, at whole seconds in
    ``[t_lo, t_hi)`` after T0; ``fields``: name -> (probability, value maker(rng)) (a line that
    drew none gets the first field)."""
    out = []
    first = next(iter(fields))
    for _ in range(n):
        t = T0 + rng.randrange(t_lo, t_hi) * S
        parts = [f"{k}={make(rng)}" for k, (p, make) in fields.items() if rng.random() < p]
        if not parts:
            parts = [f"{first}={fields[first][1](rng)}"]
        out.append(f"m,host=h{rng.randrange(hosts)} {','.join(parts)} {t}")
    return "\n".join(out).encode()


@pytest.fixture
def random_lines():
    return one_host_lines
