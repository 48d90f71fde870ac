"""File-system durability helpers shared by every on-disk format."""

from __future__ import annotations

import os


def fsync_dir(path: str | os.PathLike) -> None:
    """fsync a directory, so that files created, renamed or removed in it survive a power cut.

    Raises OSError: a failed fsync is never ignored (after a failed fsync the kernel may have
    dropped the dirty pages, so retrying and believing the second answer would lie).
    """
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
