"""Query control: deadlines and cancellation that really stop a query's work.

Every query runs under one :class:`QueryControl` (set by its query worker,
:mod:`rusts.actors.query_worker`). CPU work leaves the event loop through :func:`offload`, the one
place that decides between running inline (little data: a thread hop costs more) and a worker
thread. When the query's deadline passes, its client goes away (HTTP disconnect, pgwire
CancelRequest) or the server stops, the control is cancelled and

* code running in the worker thread sees it at its next :func:`checkpoint` (the executor, the
  vector and columnar paths and the scans call it between series and blocks) and raises
  :class:`~rusts.errors.QueryCancelled`;
* registered interrupters run at once: DuckDB's ``connection.interrupt()`` stops a running
  statement within milliseconds.

The worker thread keeps its CPU limiter slot until it has really stopped, so the limiter counts
work that still burns CPU, and :func:`busy_threads` says how many are running.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import threading
from collections.abc import Callable
from typing import Any

import trio

from rusts.errors import QueryCancelled, QueryLimitError

_current: contextvars.ContextVar[QueryControl | None] = contextvars.ContextVar("rusts_query_control",
                                                                                default=None)
_thread = threading.local()

INHERITED: list[contextvars.ContextVar] = []
"""Context variables a query takes from the task that asked for it into the worker that runs it
(and its threads): e.g. the damaged-block collector of :mod:`rusts.storage.damage`."""


def inherit(var: contextvars.ContextVar) -> contextvars.ContextVar:
    """Register ``var`` to follow queries from the asking task into the query worker."""
    if var not in INHERITED:
        INHERITED.append(var)
    return var
_running = 0
_running_lock = threading.Lock()


class QueryControl:
    """The deadline and cancellation state of one query, shared by the loop and worker threads.

    Args:
        timeout: seconds from now until the query is stopped (``inf``: no limit).
    """

    __slots__ = ("deadline", "timeout", "reason", "memory_limit", "held", "inherited", "_cancelled",
                 "_interrupters", "_lock", "_scopes")

    def __init__(self, timeout: float = math.inf, memory_limit: int | None = None) -> None:
        self.timeout = float(timeout)
        self.memory_limit = memory_limit
        self.held = 0
        # the asking task's values of the INHERITED context variables
        self.inherited = [(v, v.get()) for v in INHERITED if v.get(None) is not None]
        self.deadline = trio.current_time() + self.timeout if math.isfinite(self.timeout) else math.inf
        self.reason: str | None = None
        self._cancelled = False
        self._interrupters: list[Callable[[], Any]] = []
        self._scopes: list[trio.CancelScope] = []
        self._lock = threading.Lock()

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    def cancel(self, reason: str = "query cancelled") -> None:
        """Stop the query: later checkpoints raise, interrupters and cancel scopes fire.
        Thread-safe for the flag and interrupters; scopes are cancelled only from the loop."""
        with self._lock:
            if self._cancelled:
                return
            self._cancelled = True
            self.reason = reason
            fns = list(self._interrupters)
        for fn in fns:
            try:
                fn()
            except Exception:  # noqa: BLE001 - an interrupter that fails must not hide the others
                pass
        try:
            trio.lowlevel.current_trio_token()
        except RuntimeError:
            return  # in a worker thread: the loop side notices the flag
        for s in self._scopes:
            s.cancel()

    def add_interrupter(self, fn: Callable[[], Any]) -> Callable[[], None]:
        """Call ``fn()`` (from any thread) when the query is cancelled; at once if it already is.
        Returns a function that unregisters it."""
        with self._lock:
            if not self._cancelled:
                self._interrupters.append(fn)

                def remove() -> None:
                    with self._lock:
                        if fn in self._interrupters:
                            self._interrupters.remove(fn)
                return remove
        fn()
        return lambda: None

    def charge(self, nbytes: int) -> None:
        """Count ``nbytes`` of data this query holds (scanned tables, raw rows); past the
        ``memory_limit`` the query fails with :class:`QueryLimitError` instead of growing."""
        self.held += int(nbytes)
        if self.memory_limit is not None and self.held > self.memory_limit:
            raise QueryLimitError(
                f"query needs more than its memory limit of {self.memory_limit >> 20} MiB "
                f"(query.memory_limit_mb): narrow the time range, select fewer columns or aggregate")

    def check(self) -> None:
        if self._cancelled:
            raise QueryCancelled(self.reason or "query cancelled")

    def error(self) -> QueryCancelled:
        return QueryCancelled(self.reason or "query cancelled")

    def timed_out(self) -> None:
        self.cancel(f"query exceeded the {self.timeout:g}s time limit")


def current() -> QueryControl | None:
    """The control of the query this task (or worker thread) is running, if any."""
    ctl = getattr(_thread, "control", None)
    return ctl if ctl is not None else _current.get()


def checkpoint() -> None:
    """Raise :class:`QueryCancelled` when the current query was stopped. Cheap: call it between
    series and blocks of any loop that can run long."""
    ctl = getattr(_thread, "control", None)
    if ctl is not None and ctl._cancelled:
        raise ctl.error()


def charge(nbytes: int) -> None:
    """Charge ``nbytes`` to the current query's memory budget (no-op outside a query)."""
    ctl = current()
    if ctl is not None:
        ctl.charge(nbytes)


def busy_threads() -> int:
    """Worker threads currently running query work (cancelled ones until they have stopped)."""
    return _running


@contextlib.contextmanager
def under(ctl: QueryControl):
    """``with under(ctl):`` runs the block as query ``ctl``: :func:`current` in this task, stopped
    (with :class:`QueryCancelled`) by the control's deadline or :meth:`QueryControl.cancel`."""
    token = _current.set(ctl)
    tokens = [(var, var.set(value)) for var, value in ctl.inherited]
    try:
        with trio.CancelScope(deadline=ctl.deadline) as scope:
            ctl._scopes.append(scope)
            if ctl.cancelled:
                scope.cancel()
            try:
                yield ctl
            finally:
                ctl._scopes.remove(scope)
        if scope.cancelled_caught:
            if not ctl.cancelled:  # the deadline passed
                ctl.timed_out()
            raise ctl.error()
    finally:
        for var, t in reversed(tokens):
            var.reset(t)
        _current.reset(token)


async def run_under(ctl: QueryControl, fn: Callable[..., Any], *args):
    """``await fn(*args)`` as query ``ctl`` (see :func:`under`)."""
    with under(ctl):
        return await fn(*args)


async def offload(work: Callable[[], Any], *, small: bool = False, limiter: trio.CapacityLimiter | None = None):
    """Run ``work()`` for the current query: inline when ``small`` (a thread hop would cost more
    than the work), else in a worker thread under the CPU limiter.

    The thread sees the query's control (:func:`checkpoint`); when the query is cancelled or
    times out, the control is cancelled at once (interrupting DuckDB), the caller gets
    :class:`QueryCancelled` without waiting, and the thread gives its limiter slot back only when
    it has really stopped.
    """
    ctl = _current.get()
    if small:
        if ctl is not None:
            ctl.check()
        return work()
    if limiter is None:
        from rusts.messages import cpu_limiter

        limiter = cpu_limiter()

    def in_thread():
        global _running
        with _running_lock:
            _running += 1
        _thread.control = ctl
        try:
            if ctl is not None:
                ctl.check()
            return work()
        finally:
            _thread.control = None
            with _running_lock:
                _running -= 1

    if ctl is None:
        return await trio.to_thread.run_sync(in_thread, limiter=limiter)
    try:
        return await trio.to_thread.run_sync(in_thread, limiter=limiter, abandon_on_cancel=True)
    except trio.Cancelled:
        # deadline, client gone or shutdown: make the abandoned thread stop
        if not ctl.cancelled:
            if trio.current_time() >= ctl.deadline:
                ctl.timed_out()
            else:
                ctl.cancel()
        raise


