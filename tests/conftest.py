"""Shared fixtures. Async tests run under pytest-trio (trio_mode)."""

from __future__ import annotations

import pathlib

import pytest


@pytest.fixture
def data_dir(tmp_path: pathlib.Path) -> pathlib.Path:
    d = tmp_path / "data"
    d.mkdir()
    return d
