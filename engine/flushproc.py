"""Memtable flushes encoded in a worker process, so they do not hold this process's GIL.

Encoding a segment is Python work per series and block (``segment._Writer.add_series`` and the
codecs). A flush of a fleet's memtable (thousands of series with a few rows each) takes seconds
of CPU; in a worker *thread* it holds the GIL for most of that time, and every write and query
that arrives meanwhile waits for it (each wake-up of the event loop waits for the GIL switch
interval, 5 ms, again). In a worker process the event loop keeps running; the only cost here is
pickling the table's arrays (a few memcpy per write chunk).

One process for the whole Python process (all databases share it), started on first use with
the ``spawn`` method (no fork of a threaded trio process), reused for every later flush. It exits
when this process exits, and on its own when its parent dies (a watchdog thread; a SIGKILLed
server must not leave it writing). A file it was still writing then is an orphan the next
recovery removes (the manifest never listed it).

Small tables are flushed in a thread (:func:`use_process`): starting the process costs about a
second, and for a few hundred series the thread is cheaper. ``RUSTS_FLUSH_PROCESS`` overrides:
``always``, ``never`` or ``auto`` (default).
"""

from __future__ import annotations

import logging
import os
import threading

log = logging.getLogger("rusts.flushproc")

_pool = None
_pool_lock = threading.Lock()
_broken = 0

PROCESS_MIN_SERIES = 1000
"""Tables with at least this many series chunks (series x writes) use the worker process."""


def mode() -> str:
    return os.environ.get("RUSTS_FLUSH_PROCESS", "auto").strip().lower() or "auto"


def use_process(series_chunks: int) -> bool:
    m = mode()
    if m in ("never", "0", "no", "off") or _broken >= 3:
        return False
    if m in ("always", "1", "yes", "on"):
        return True
    return series_chunks >= PROCESS_MIN_SERIES


def _watch_parent(ppid: int) -> None:
    import time

    while True:
        time.sleep(0.5)
        if os.getppid() != ppid:
            os._exit(1)


def _init_worker(ppid: int) -> None:
    threading.Thread(target=_watch_parent, args=(ppid,), daemon=True).start()
    import rusts.segment  # noqa: F401  (import once, not in the first flush)


def _get_pool():
    global _pool
    with _pool_lock:
        if _pool is None:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            import atexit

            atexit.register(shutdown)
            _pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"),
                                        initializer=_init_worker, initargs=(os.getpid(),))
        return _pool


def _reset_pool(pool) -> None:
    global _pool, _broken
    with _pool_lock:
        if _pool is pool:
            _pool = None
            _broken += 1
    try:
        pool.shutdown(wait=False, cancel_futures=True)
    except Exception:  # pragma: no cover
        pass


def write_partitions(payload, partition_ns: int, paths: dict[int, str], options: dict) -> dict:
    """Partition -> SegmentInfo: build the per-series data of a flush payload and write one
    segment per partition at ``paths[partition]``. Runs in the worker process (or a thread)."""
    from rusts.memtable import table_partitions
    from rusts.segment import write_segment

    parts = table_partitions(payload, partition_ns)
    out = {}
    for part, series in sorted(parts.items()):
        out[part] = write_segment(paths[part], series, **options)
    return out


def write_partitions_parts(payload, partition_ns: int) -> dict:
    """The in-thread form's first step: partition -> SeriesData."""
    from rusts.memtable import table_partitions

    return table_partitions(payload, partition_ns)


def run_in_process(payload, partition_ns: int, paths: dict[int, str], options: dict) -> dict:
    """Blocking: :func:`write_partitions` in the worker process (call from a worker thread).

    Falls back to running here if the worker process broke (killed, out of memory).
    """
    from concurrent.futures.process import BrokenProcessPool

    pool = _get_pool()
    try:
        fut = pool.submit(write_partitions, payload, partition_ns, paths, options)
        return fut.result()
    except BrokenProcessPool as e:
        log.error("flush worker process died (%s); flushing in this process", e)
        _reset_pool(pool)
        return write_partitions(payload, partition_ns, paths, options)


def shutdown() -> None:
    """Stop the worker process (tests; normally it ends with this process)."""
    global _pool
    with _pool_lock:
        pool, _pool = _pool, None
    if pool is not None:
        pool.shutdown(wait=True)
