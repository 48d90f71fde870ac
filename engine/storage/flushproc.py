"""Memtable flushes encoded in a worker process, so they do not hold this process's GIL.

Encoding a segment is Python work per series and block (``segment_writer._Writer.add_series`` and the
codecs). A flush of a fleet's memtable (thousands of series with a few rows each) takes seconds
of CPU; in a worker *thread* it holds the GIL for most of that time, and every write and query
that arrives meanwhile waits for it (each wake-up of the event loop waits for the GIL switch
interval, 5 ms, again). In a worker process the event loop keeps running; the only cost here is
pickling the table's arrays (a few MB, concatenated per field layout first).

One process for the whole Python process (all databases share it, one flush at a time), started
on first use as ``python -m rusts.storage.flushproc`` and reused. It is a plain subprocess speaking
length-prefixed pickles over its stdin/stdout, not ``multiprocessing``: the ``spawn`` and
``forkserver`` methods re-import the parent's ``__main__``, which would re-run any embedding
script without an ``if __name__ == "__main__"`` guard, and ``fork`` is unsafe in a threaded
process. The worker exits when its stdin closes (this process ended) and on its own when its
parent dies (a watchdog thread: a SIGKILLed server must not leave it writing), or quietly when
its reply meets a closed pipe (the parent died during the request). A file it was
still writing then is an orphan that the next recovery removes (the manifest never listed it).

Small tables are flushed in a thread (:func:`use_process`): for a few hundred series the pickling
and the process hop cost more than they save. ``RUSTS_FLUSH_PROCESS`` overrides: ``always``,
``never`` or ``auto`` (default). If the worker dies, the flush runs in this process instead.

:func:`configure` lets an embedding program (``rusts-import --direct``) use several worker
processes: a flush spanning several time partitions is then split by partition, each worker
encoding its share in parallel (a server keeps one, leaving the other cores to queries).
"""

from __future__ import annotations

import io
import logging
import os
import pickle
import struct
import subprocess
import sys
import threading

log = logging.getLogger("rusts.flushproc")

PROCESS_MIN_SERIES = 1000
"""Tables with at least this many series chunks (series x writes) use the worker process."""
PROCESS_MIN_POINTS = 50_000
"""...and so do tables of at least this many points (encoding them takes a few hundred ms of
Python work at least, pickling their arrays a few ms): a bulk load of few series must not hold
the server's GIL against its writes while a table is encoded."""

_LEN = struct.Struct("<Q")
_lock = threading.Lock()  # one request at a time; guards _proc
_proc: subprocess.Popen | None = None
_failures = 0
_mode_override: str | None = None
_extra: list["_Extra"] = []  # workers 2..n (configure); the first is _proc
_extra_lock = threading.Lock()


def mode() -> str:
    if _mode_override is not None:
        return _mode_override
    return os.environ.get("RUSTS_FLUSH_PROCESS", "auto").strip().lower() or "auto"


def configure(*, mode: str | None = None, workers: int = 1) -> tuple[str | None, int]:
    """Set this process's flush mode (``always``/``never``/``auto``; None: from
    ``RUSTS_FLUSH_PROCESS``) and how many worker processes a multi-partition flush is split
    across. Returns the previous ``(mode, workers)`` so that a caller can restore them."""
    global _mode_override
    with _extra_lock:
        prev = (_mode_override, 1 + len(_extra))
        _mode_override = mode
        want = max(1, int(workers)) - 1
        while len(_extra) > want:
            _extra.pop().stop()
        while len(_extra) < want:
            _extra.append(_Extra())
    return prev


def use_process(series_chunks: int, points: int = 0) -> bool:
    m = mode()
    if m in ("never", "0", "no", "off") or _failures >= 3:
        return False
    if m in ("always", "1", "yes", "on"):
        return True
    return series_chunks >= PROCESS_MIN_SERIES or points >= PROCESS_MIN_POINTS


def write_partitions_parts(payload, partition_ns: int) -> dict:
    """Partition -> SeriesData of a flush payload (the in-thread form's first step)."""
    from rusts.memory.sealed import table_partitions

    return table_partitions(payload, partition_ns)


def write_partitions(payload, partition_ns: int, paths: dict[int, str], options: dict) -> dict:
    """Partition -> SegmentInfo: build the per-series data of a flush payload and write one
    segment per partition at ``paths[partition]``. Runs in the worker process (or a thread)."""
    from rusts.storage.segment_writer import write_segments

    parts = sorted(write_partitions_parts(payload, partition_ns).items())
    infos = write_segments([(paths[part], series) for part, series in parts], **options)
    return {part: info for (part, _), info in zip(parts, infos)}


# ------------------------------------------------------------------------------- parent side


def strings_from_codes(codes, words: list):
    """The object array of str that :class:`_Pickler` sent as codes into ``words``."""
    import numpy as np

    table = np.empty(len(words), dtype=object)
    table[:] = words
    return table[codes]


class _Pickler(pickle.Pickler):
    """Pickles string columns of few distinct values (flags, names: most string fields) as
    their uint8 codes, sent out of band like the numeric arrays, and the distinct strings,
    instead of one pickled reference per value; the receiver rebuilds an object array whose
    equal values share one str (which the segment encoder's string coding relies on)."""

    def reducer_override(self, obj):
        np = sys.modules.get("numpy")
        if np is not None and type(obj) is np.ndarray and obj.dtype == object and obj.ndim == 1 \
                and len(obj) >= 4096:
            from rusts.codecs._batch import few_string_codes

            got = few_string_codes(obj, 255)
            if got is not None:
                return strings_from_codes, got
        return NotImplemented


def _send(fh, obj) -> None:
    """One message: ``<Q pickle length><Q buffer count><Q length per buffer>``, the pickle, then
    the numpy buffers out of band (pickle protocol 5): they are written straight from the arrays
    by the pipe's write, which releases the GIL, instead of being copied into the pickle under it
    (a 20 MB flush held the GIL ~10 ms that way)."""
    bufs: list = []
    out = io.BytesIO()
    _Pickler(out, protocol=5, buffer_callback=bufs.append).dump(obj)
    data = out.getbuffer()
    raws = [b.raw() for b in bufs]
    fh.write(_LEN.pack(len(data)) + _LEN.pack(len(raws)) + b"".join(_LEN.pack(r.nbytes) for r in raws))
    fh.write(data)
    for r in raws:
        fh.write(r)
    fh.flush()


def _read_exact(fh, n: int) -> bytes:
    data = fh.read(n)
    if len(data) < n:
        raise EOFError("flush worker closed its pipe")
    return data


def _recv(fh):
    n, k = struct.unpack("<QQ", _read_exact(fh, 16))
    lens = struct.unpack(f"<{k}Q", _read_exact(fh, 8 * k)) if k else ()
    data = _read_exact(fh, n)
    bufs = []
    for ln in lens:
        b = bytearray(ln)
        view, got = memoryview(b), 0
        while got < ln:
            r = fh.readinto(view[got:])
            if not r:
                raise EOFError("flush worker closed its pipe")
            got += r
        bufs.append(b)
    return pickle.loads(data, buffers=bufs)


def _start() -> subprocess.Popen:
    env = dict(os.environ)
    # the worker must import this same package tree
    env["PYTHONPATH"] = os.pathsep.join(p for p in [*sys.path, env.get("PYTHONPATH", "")] if p)
    return subprocess.Popen([sys.executable, "-m", "rusts.storage.flushproc", str(os.getpid())],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env,
                            close_fds=True, bufsize=1 << 16)


def _stop_locked() -> None:
    global _proc
    p, _proc = _proc, None
    if p is None:
        return
    try:
        p.stdin.close()
    except OSError:
        pass
    try:
        p.wait(timeout=5)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
    p.stdout.close()


def run_in_process(payload, partition_ns: int, paths: dict[int, str], options: dict) -> dict:
    """Blocking (call from a worker thread): :func:`write_partitions` in the worker process(es).

    With several workers (:func:`configure`) and several partitions, the partitions are split
    into one share per worker (balanced by rows) and encoded in parallel.
    Raises what a worker raised (e.g. StorageError); if a worker died, its share runs in
    this process instead and the worker is restarted next time.
    """
    with _extra_lock:
        extra = list(_extra)
    shares = split_partitions(payload, partition_ns, sorted(paths), 1 + len(extra)) if extra else None
    if not shares or len(shares) < 2:
        return _request((payload, partition_ns, paths, options),
                        lambda: write_partitions(payload, partition_ns, paths, options), "the flush")
    results: list = [None] * len(shares)
    errors: list = []

    def one(i: int) -> None:
        sub, parts = shares[i]
        sp = {p: paths[p] for p in parts}
        req = (sub, partition_ns, sp, options)
        fallback = lambda: write_partitions(sub, partition_ns, sp, options)  # noqa: E731
        try:
            results[i] = (_request(req, fallback, "the flush") if i == 0
                          else extra[i - 1].request(req, fallback))
        except BaseException as e:  # noqa: BLE001 - re-raised below, after every share ended
            errors.append(e)

    threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(1, len(shares))]
    for t in threads:
        t.start()
    one(0)
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    out: dict = {}
    for r in results:
        out.update(r)
    return out


def split_partitions(payload, partition_ns: int, parts: list[int], n: int) -> list | None:
    """Up to ``n`` shares ``(payload of its rows, its partitions)`` of a flush payload, its
    partitions in contiguous runs balanced by row count; None when there is one partition."""
    import numpy as np

    if n < 2 or len(parts) < 2:
        return None
    codes = [(ts // partition_ns) for _, _, _, ts, _, _ in payload["groups"]]
    cnt = {p: 0 for p in parts}
    for c in codes:
        u, k = np.unique(c, return_counts=True)
        for p, m in zip(u.tolist(), k.tolist()):
            cnt[p] = cnt.get(p, 0) + m
    total = sum(cnt.values())
    runs: list[list[int]] = [[]]
    acc = 0
    for p in parts:
        if runs[-1] and acc >= total * len(runs) / n and len(runs) < n:
            runs.append([])
        runs[-1].append(p)
        acc += cnt[p]
    if len(runs) < 2:
        return None
    shares = []
    for run in runs:
        lo, hi = run[0], run[-1]
        groups = []
        for (names, row_meas, row_sid, ts, cols, row_chunk), c in zip(payload["groups"], codes):
            sel = (c >= lo) & (c <= hi)
            if not sel.any():
                continue
            if sel.all():
                groups.append((names, row_meas, row_sid, ts, cols, row_chunk))
                continue
            sub = {k: (t, v[sel], None if m is None else m[sel]) for k, (t, v, m) in cols.items()}
            groups.append((names, None if row_meas is None else row_meas[sel], row_sid[sel], ts[sel],
                           sub, row_chunk[sel]))
        shares.append(({"groups": groups, "keys": payload["keys"]}, run))
    return shares


def call_in_process(name: str, args: tuple, fallback):
    """Blocking (call from a worker thread): run the worker's function ``name`` (see ``_CALLS``)
    with ``args`` in the worker process; ``fallback()`` runs here instead if the worker is not
    usable. Raises what the worker raised."""
    if mode() in ("never", "0", "no", "off") or _failures >= 3:
        return fallback()
    return _request(("call", name, args), fallback, name)


def _request(req, fallback, what: str):
    """Send ``req`` to the worker (started if needed) and return its answer; ``fallback()`` here
    when the worker cannot be used (it is restarted next time)."""
    global _proc, _failures
    result = None
    with _lock:
        try:
            if _proc is None or _proc.poll() is not None:
                _proc = _start()
                import atexit

                atexit.register(shutdown)
            _send(_proc.stdin, req)
            status, result = _recv(_proc.stdout)
        except (OSError, EOFError, pickle.PickleError) as e:
            _failures += 1
            log.error("worker process failed (%s); running %s in this process", e, what)
            try:
                if _proc is not None:
                    _proc.kill()
            except OSError:
                pass
            _stop_locked()
            status = None
    return _answer(status, result, fallback)


def _answer(status, result, fallback):
    """A worker's reply: its result, its exception raised, or ``fallback()`` when there was none
    (the worker failed and the work runs in this process)."""
    if status is None:
        return fallback()
    if status == "ok":
        return result
    if isinstance(result, BaseException):
        raise result
    from rusts.errors import StorageError

    raise StorageError(f"worker process: {result}")


def _compact(paths, out, kwargs):
    from rusts.lifecycle.compaction import compact_files

    return compact_files(paths, out, **kwargs)


_CALLS = {"compact": _compact}


def prestart() -> None:
    """Start the worker processes now (they import the encoder, ~0.5 s each, while the caller
    reads its first data) instead of at the first flush."""
    global _proc
    if mode() in ("never", "0", "no", "off"):
        return
    try:
        with _lock:
            if _proc is None or _proc.poll() is not None:
                _proc = _start()
                import atexit

                atexit.register(shutdown)
        with _extra_lock:
            extra = list(_extra)
        for w in extra:
            with w.lock:
                if w.proc is None or w.proc.poll() is not None:
                    w.proc = _start()
    except OSError as e:  # the first flush tries again (and falls back to this process)
        log.warning("cannot start a flush worker process: %s", e)


class _Extra:
    """A second (third, ...) worker process for :func:`run_in_process`'s shares (configure)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.proc: subprocess.Popen | None = None
        self.failures = 0

    def request(self, req, fallback):
        with self.lock:
            status = result = None
            if self.failures < 3:
                try:
                    if self.proc is None or self.proc.poll() is not None:
                        self.proc = _start()
                    _send(self.proc.stdin, req)
                    status, result = _recv(self.proc.stdout)
                except (OSError, EOFError, pickle.PickleError) as e:
                    self.failures += 1
                    log.error("worker process failed (%s); running the flush in this process", e)
                    self._stop_locked(kill=True)
                    status = None
        return _answer(status, result, fallback)

    def _stop_locked(self, kill: bool = False) -> None:
        p, self.proc = self.proc, None
        if p is None:
            return
        try:
            if kill:
                p.kill()
            p.stdin.close()
        except OSError:
            pass
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        p.stdout.close()

    def stop(self) -> None:
        with self.lock:
            self._stop_locked()


def running() -> bool:
    return _proc is not None and _proc.poll() is None


def shutdown() -> None:
    """Stop the worker processes (tests, exit); the next flush starts new ones."""
    with _lock:
        _stop_locked()
    with _extra_lock:
        extra = list(_extra)
    for w in extra:
        w.stop()


# ------------------------------------------------------------------------------- worker side


def _watch_parent(ppid: int) -> None:
    import time

    while True:
        time.sleep(0.5)
        if os.getppid() != ppid:
            os._exit(1)


def _serve(ppid: int) -> None:
    threading.Thread(target=_watch_parent, args=(ppid,), daemon=True).start()
    import rusts.storage.segment  # noqa: F401  (import once, before the first request)

    inp, out = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # nothing else may write to the reply pipe
    while True:
        try:
            req = _recv(inp)
        except EOFError:
            return
        try:
            if req and req[0] == "call":
                reply = ("ok", _CALLS[req[1]](*req[2]))
            else:
                reply = ("ok", write_partitions(*req))
        except Exception as e:  # noqa: BLE001 - sent back to the flusher, which retries
            reply = ("err", e)
        try:
            try:
                _send(out, reply)
            except (pickle.PickleError, TypeError, AttributeError):
                _send(out, ("err", f"{type(reply[1]).__name__}: {reply[1]}"))
        except OSError:
            # the server is gone (SIGKILLed mid-request): nobody reads the reply. End quietly;
            # os._exit, not return: the interpreter's exit would flush the reply pipe's buffer
            # again and print a BrokenPipeError into the server's log.
            os._exit(0)


if __name__ == "__main__":
    import signal

    # Ctrl-C in a terminal reaches the whole process group: the server shuts down and closes
    # this worker's stdin; a KeyboardInterrupt here would only print a traceback into its log
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from rusts import malloc

    malloc.tune()
    _serve(int(sys.argv[1]) if len(sys.argv) > 1 else os.getppid())
