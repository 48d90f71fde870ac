"""Fixtures of the reliability suite: real servers, a small tmpfs that fills up.

Helpers shared with perf/soak live in rel_harness.py (this folder is put on sys.path)."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from rel_harness import Server  # noqa: E402


@pytest.fixture
def server_factory(tmp_path):
    servers = []

    def make(root: pathlib.Path | None = None, **overrides) -> Server:
        if root is None:
            root = tmp_path / f"srv{len(servers)}"
            root.mkdir()
        s = Server(root, **overrides)
        servers.append(s)
        return s

    yield make
    for s in servers:
        if s.proc is not None:
            s.kill()


@pytest.fixture
def small_tmpfs(tmp_path):
    """A directory on its own 8 MiB tmpfs (mounted here, unmounted at teardown): a disk that fills."""
    d = tmp_path / "tmpfs"
    d.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(d)], check=True)
    try:
        yield d
    finally:
        subprocess.run(["umount", "-l", str(d)], check=False)


