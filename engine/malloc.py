"""Process-wide allocator settings for the server and its worker process.

Every query and every write allocates numpy arrays of hundreds of kilobytes. glibc serves
allocations above ``M_MMAP_THRESHOLD`` (128 KiB at start, raised dynamically only after such a
block is freed) with a fresh ``mmap`` and returns them with ``munmap``, so each such array is
page-faulted in again, page by page. On the virtual machines this runs on a page fault costs
microseconds: measured on the dashboard scan (90,700 rows, `rusts.memory.recent.scan`), 3.4-6.3 ms with
the defaults against 0.9-1.5 ms with big blocks kept in the heap — the same numpy work, four
times faster.

:func:`tune` raises the mmap threshold to its maximum (32 MiB on 64-bit glibc) and the heap trim
threshold to 128 MiB: freed memory up to that much stays in the process for the next query
instead of going back to the kernel. The server and the worker process call it at start; an
application embedding :mod:`rusts.db` decides for itself (it changes the whole process).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

MMAP_THRESHOLD = 32 * 1024 * 1024
TRIM_THRESHOLD = 128 * 1024 * 1024


def tune() -> bool:
    """Apply the settings; False where the C library has no ``mallopt`` (not glibc)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    ok = mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
    ok = mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1 and ok
    return ok
