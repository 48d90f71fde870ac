"""SIGKILL at random moments during mixed work, for each WAL durability mode.

Three writers ingest unique points on their own connections while a fourth client flushes,
deletes ranges of a side measurement, and queries (JSON and SQL); the server is killed at a
random moment (seeded), restarted on the same data directory (damage accumulates, as in real
life) and killed again. At the end the stored data is compared with the client-side history:

* every mode except ``none``: no acknowledged point lost (a process crash keeps the page cache,
  so even ``periodic`` and ``os_default`` lose nothing that was acknowledged);
* ``none``: only points not yet flushed may be lost;
* every mode: no point duplicated, invented or changed, no refused point stored, no range whose
  delete was acknowledged comes back, no 5xx other than 503, and the server always restarts and
  answers /ready (``Server.start`` waits for it).

The long version (200 kills per mode) is perf/soak/crash.py.
"""

from __future__ import annotations

import random

import pytest

from rel_harness import History, crash_cycle, verify

KILLS = {"every_write": 3, "periodic": 2, "os_default": 1, "none": 1}


@pytest.mark.parametrize("mode", list(KILLS))
def test_sigkill_during_mixed_work(server_factory, mode: str) -> None:
    srv = server_factory(storage={"wal_durability": mode, "wal_sync_interval_ms": 100,
                                  "memtable": {"max_points": 2000, "max_age_secs": 1}})
    rng = random.Random(f"crash-{mode}")
    hist = History()
    for _ in range(KILLS[mode]):
        crash_cycle(srv, hist, rng)
    out = verify(srv, hist)
    assert out["acknowledged"] > 0
    assert out["duplicates"] == 0 and out["wrong_values"] == 0 and out["invented"] == 0, out
    assert out["refused_present"] == 0, out
    assert out["deleted_rows_back"] == 0, out
    assert not out["unexpected_answers"], out
    if mode != "none":
        assert out["lost"] == 0, out
