"""Fixtures of the reliability suite: real servers, a small tmpfs that fills up.

Helpers shared with perf/soak live in rel_harness.py (this folder is put on sys.path)."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import rel_harness  # noqa: E402

_server_fixtures = sys.modules[rel_harness.Server.__module__]


server_factory = _server_fixtures.server_factory  # the integration suite's, shared


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


