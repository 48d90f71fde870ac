"""Shared helpers of the reliability suite (tests/reliability and perf/soak): the real server
harness of tests/integration, tmpfs filling, reading back what is stored."""

from __future__ import annotations

import importlib.util
import pathlib
import sys

_IT = pathlib.Path(__file__).resolve().parents[1] / "integration" / "conftest.py"
_spec = importlib.util.spec_from_file_location("rusts_reliability_server", _IT)
_server_mod = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = _server_mod
_spec.loader.exec_module(_server_mod)
Server = _server_mod.Server

T0 = 1_700_000_000_000_000_000
ALL = {"start": 0, "end": 2**63 - 1}


def fill(path: pathlib.Path) -> int:
    """Write ``path`` until the file system is full; returns the bytes written."""
    chunk = b"\0" * 65536
    n = 0
    with open(path, "wb", buffering=0) as f:
        for size in (65536, 4096, 512, 1):
            while True:
                try:
                    n += f.write(chunk[:size])
                except OSError:
                    break
    return n


def stored_seqs(url: str, measurement: str, field: str = "seq") -> list[int]:
    """Every value of ``field`` stored in ``measurement`` (duplicates kept)."""
    import httpx

    with httpx.Client(base_url=url, timeout=60) as c:
        r = c.post("/query", json={"measurement": measurement, "time_range": ALL, "fields": [field]})
        assert r.status_code == 200, r.text
        return [row["fields"][field] for row in r.json()["results"] if field in row["fields"]]
