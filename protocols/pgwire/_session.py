"""One authenticated session: simple and extended query flows on top of the connection.

:class:`PgSession` is the application side of :class:`~.connection.PgServerConnection`. It holds
prepared statements and portals, calls the :class:`~.backend.SqlBackend`, and writes backend
messages through an ``async send(bytes)`` callable. It does no socket I/O itself, so tests drive
it with an in-memory sink.

Output is buffered and written on ReadyForQuery, Flush, and whenever more than ``flush_bytes``
are pending, which is how large results stream: rows are encoded ``chunk_rows`` at a time and the
socket write applies backpressure. A result is never turned into one big ``bytes``.

Prepared statements are described once, at Parse (``backend.describe``), which reports syntax
errors early as PostgreSQL does and gives Describe its answers. Portals run the statement at
their first Execute and keep the :class:`~.backend.SqlResult` so that an Execute with a row limit
can be resumed (PortalSuspended). Portals end at Sync outside a transaction block.

Cancellation: :meth:`PgSession.cancel` (from a CancelRequest) cancels the running backend call
through its trio cancel scope, or stops a result between two chunks; either way the statement
ends with ErrorResponse 57014.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence

import attrs
import numpy as np
import trio

from rusts.errors import QueryCancelled, QueryError, RustsError

from . import _messages as m
from ._reader import PgProtocolError
from ._state import TransactionState, classify, deallocate_target
from ._types import decode_param, pg_type
from .backend import SqlBackend, SqlResult
from .connection import PgServerConnection

log = logging.getLogger("rusts.protocols.pgwire")

TEXT_OID = 25
_PEER_GONE = (trio.BrokenResourceError, trio.ClosedResourceError)  # the client went away


@attrs.define(eq=False)
class _Statement:
    sql: str
    kind: str | None  # transaction-control kind, or None
    param_oids: tuple[int, ...]
    columns: tuple[tuple[str, str], ...] | None


@attrs.define(eq=False)
class _Portal:
    statement: _Statement
    params: list[object]
    result_formats: tuple[int, ...]
    result: SqlResult | None = None
    position: int = 0


def _expand_formats(formats: Sequence[int], n: int, what: str) -> tuple[int, ...]:
    if not formats:
        return (0,) * n
    if len(formats) == 1:
        return (formats[0],) * n
    if len(formats) != n:
        raise PgProtocolError(f"bind message has {len(formats)} {what} formats but "
                              f"{n} {what}s are expected")
    return tuple(formats)


def _fields(columns: Sequence[tuple[str, str]], formats: Sequence[int]) -> tuple[m.FieldDescription, ...]:
    out = []
    for (name, tname), fmt in zip(columns, formats):
        t = pg_type(tname)
        out.append(m.FieldDescription(name, t.oid, t.size, -1, fmt))
    return tuple(out)


def _error_event(exc: BaseException, offset: int = 0) -> m.ErrorResponse:
    if isinstance(exc, RustsError):
        pos = getattr(exc, "position", None)
        return m.ErrorResponse(exc.sqlstate, str(exc) or type(exc).__name__, "ERROR",
                               None if pos is None else int(pos) + offset)
    return m.ErrorResponse("XX000", f"internal error: {type(exc).__name__}: {exc}")


class PgSession:
    """Runs queries of one authenticated connection.

    Args:
        conn: the connection, already in phase 'ready'.
        backend: the session's SQL backend.
        send: ``async send(data)`` writing to the client.
        chunk_rows: rows encoded per DataRow batch.
        flush_bytes: pending output size that triggers a write.
    """

    def __init__(self, conn: PgServerConnection, backend: SqlBackend,
                 send: Callable[[bytes], Awaitable[None]], *, chunk_rows: int = 4096,
                 flush_bytes: int = 1 << 16) -> None:
        self.conn = conn
        self.backend = backend
        self._send = send
        self._chunk_rows = chunk_rows
        self._flush_bytes = flush_bytes
        self._out: list[bytes] = []
        self._pending = 0
        self._tx = TransactionState()
        self._statements: dict[str, _Statement] = {}
        self._portals: dict[str, _Portal] = {}
        self._scope: trio.CancelScope | None = None
        self._running = False
        self._cancel_requested = False

    @property
    def transaction_status(self) -> str:
        return self._tx.status

    # ----------------------------------------------------------------- output

    def _emit(self, event: m.BackendEvent) -> None:
        data = self.conn.send(event)
        self._out.append(data)
        self._pending += len(data)

    async def flush(self) -> None:
        """Write buffered output."""
        if self._out:
            data = b"".join(self._out)
            self._out.clear()
            self._pending = 0
            await self._send(data)

    async def _maybe_flush(self) -> None:
        if self._pending >= self._flush_bytes:
            await self.flush()

    def _error(self, exc: BaseException, offset: int = 0) -> None:
        if not isinstance(exc, RustsError):
            log.error("pgwire: backend failure", exc_info=exc)
        self._tx.on_error()
        self._emit(_error_event(exc, offset))

    # ----------------------------------------------------------------- cancellation

    def cancel(self) -> bool:
        """Cancel the running statement, if any. Returns whether one was running."""
        if not self._running:
            return False
        self._cancel_requested = True
        if self._scope is not None:
            self._scope.cancel()
        return True

    def _check_cancel(self) -> None:
        if self._cancel_requested:
            raise QueryCancelled("canceling statement due to user request")

    async def _execute(self, sql: str, params: Sequence[object] | None) -> SqlResult:
        self._check_cancel()
        with trio.CancelScope() as scope:
            self._scope = scope
            try:
                result = await self.backend.execute(sql, params)
            finally:
                self._scope = None
        if scope.cancelled_caught:
            raise QueryCancelled("canceling statement due to user request")
        return result

    # ----------------------------------------------------------------- dispatch

    async def handle(self, ev: object) -> None:
        """Process one frontend event."""
        if isinstance(ev, m.Query):
            await self._simple_query(ev.sql)
        elif isinstance(ev, m.Sync):
            if self._tx.status == "I":
                self._portals.clear()
            self._emit(m.ReadyForQuery(self._tx.status))
            await self.flush()
        elif isinstance(ev, m.Flush):
            await self.flush()
        elif isinstance(ev, (m.Parse, m.Bind, m.Describe, m.Execute, m.Close)):
            self._running = True
            self._cancel_requested = False
            try:
                await self._extended(ev)
            except _PEER_GONE:
                raise
            except Exception as exc:  # noqa: BLE001 - reported to the client
                self._error(exc)
            finally:
                self._running = False
                self._cancel_requested = False
        elif isinstance(ev, m.FunctionCall):
            self._error(QueryError("function call protocol is not supported", sqlstate="0A000"))
            self._emit(m.ReadyForQuery(self._tx.status))
            await self.flush()
        else:
            raise PgProtocolError(f"unexpected message {type(ev).__name__}")

    # ----------------------------------------------------------------- simple query

    async def _simple_query(self, sql: str) -> None:
        self._running = True
        self._cancel_requested = False
        try:
            try:
                statements = [s for s in self.backend.split_statements(sql) if s.strip()]
            except Exception as exc:  # noqa: BLE001
                self._error(exc)
                statements = None
            if statements == []:
                self._emit(m.EmptyQueryResponse())
            cursor = 0
            for stmt in statements or ():
                found = sql.find(stmt, cursor)
                offset = found if found >= 0 else 0
                if found >= 0:
                    cursor = found + len(stmt)
                try:
                    await self._simple_statement(stmt)
                except _PEER_GONE:
                    raise
                except Exception as exc:  # noqa: BLE001 - reported to the client
                    self._error(exc, offset)
                    break
        finally:
            self._running = False
            self._cancel_requested = False
        self._portals.pop("", None)
        if self._tx.status == "I":
            self._portals.clear()  # the implicit or committed transaction ended
        self._emit(m.ReadyForQuery(self._tx.status))
        await self.flush()

    async def _simple_statement(self, stmt: str) -> None:
        kind = classify(stmt)
        if self._tx.blocked(kind):
            raise self._tx.aborted_error()
        if kind is not None:
            self._transaction_control(kind, stmt)
            return
        result = await self._execute(stmt, None)
        self._notices(result)
        if result.columns:
            formats = (0,) * len(result.columns)
            self._emit(m.RowDescription(_fields(result.columns, formats)))
            await self._stream(result, 0, result.row_count, formats)
        self._emit(m.CommandComplete(result.command_tag))

    def _notices(self, result: SqlResult) -> None:
        for text in getattr(result, "notices", ()):  # e.g. damaged blocks missing from the answer
            self._emit(m.NoticeResponse("01000", text, "WARNING"))

    def _transaction_control(self, kind: str, sql: str = "") -> None:
        if kind == "deallocate":
            name = deallocate_target(sql)
            if name is None:
                self._statements.clear()
                self._emit(m.CommandComplete("DEALLOCATE ALL"))
                return
            if self._statements.pop(name, None) is None:
                raise QueryError(f'prepared statement "{name}" does not exist', sqlstate="26000")
            self._emit(m.CommandComplete("DEALLOCATE"))
            return
        if kind == "discard":
            self._statements.clear()
            self._portals.clear()
            self._emit(m.CommandComplete("DISCARD ALL"))
            return
        tag, warning = self._tx.apply(kind)
        if warning is not None:
            self._emit(m.NoticeResponse(warning[0], warning[1], "WARNING"))
        self._emit(m.CommandComplete(tag))

    async def _stream(self, result: SqlResult, start: int, stop: int, formats: Sequence[int]) -> None:
        types = tuple(t for _, t in result.columns)
        fmts = tuple(formats)
        for i in range(start, stop, self._chunk_rows):
            self._check_cancel()
            j = min(stop, i + self._chunk_rows)
            self._emit(m.DataRows(tuple(a[i:j] for a in result.arrays), types, fmts))
            await self._maybe_flush()

    # ----------------------------------------------------------------- extended query

    async def _extended(self, ev: object) -> None:
        if isinstance(ev, m.Parse):
            await self._parse(ev)
        elif isinstance(ev, m.Bind):
            self._bind(ev)
        elif isinstance(ev, m.Describe):
            self._describe(ev)
        elif isinstance(ev, m.Execute):
            await self._execute_portal(ev)
        elif isinstance(ev, m.Close):
            (self._statements if ev.kind == "S" else self._portals).pop(ev.name, None)
            self._emit(m.CloseComplete())

    async def _parse(self, ev: m.Parse) -> None:
        if ev.name and ev.name in self._statements:
            raise QueryError(f'prepared statement "{ev.name}" already exists', sqlstate="42P05")
        kind = classify(ev.sql)
        if self._tx.blocked(kind):
            raise self._tx.aborted_error()
        declared = tuple(ev.param_types)
        if kind is not None or not ev.sql.strip():
            stmt = _Statement(ev.sql, kind, declared, None)
        else:
            with trio.CancelScope() as scope:
                self._scope = scope
                try:
                    oids, columns = await self.backend.describe(ev.sql, declared)
                finally:
                    self._scope = None
            if scope.cancelled_caught:
                raise QueryCancelled("canceling statement due to user request")
            n = max(len(oids), len(declared))
            merged = []
            for i in range(n):
                d = declared[i] if i < len(declared) else 0
                b = oids[i] if i < len(oids) else 0
                merged.append(d or b or TEXT_OID)
            stmt = _Statement(ev.sql, None, tuple(merged), tuple(columns) if columns else None)
        self._statements[ev.name] = stmt
        self._emit(m.ParseComplete())

    def _bind(self, ev: m.Bind) -> None:
        stmt = self._statements.get(ev.statement)
        if stmt is None:
            raise QueryError(f'prepared statement "{ev.statement}" does not exist', sqlstate="26000")
        if ev.portal and ev.portal in self._portals:
            raise QueryError(f'portal "{ev.portal}" already exists', sqlstate="42P03")
        if self._tx.blocked(stmt.kind):
            raise self._tx.aborted_error()
        n = len(stmt.param_oids)
        if len(ev.params) != n:
            raise PgProtocolError(f'bind message supplies {len(ev.params)} parameters, but '
                                  f'prepared statement "{ev.statement}" requires {n}')
        pformats = _expand_formats(ev.param_formats, n, "parameter")
        params = [decode_param(raw, oid, fmt, i)
                  for i, (raw, oid, fmt) in enumerate(zip(ev.params, stmt.param_oids, pformats))]
        if stmt.columns is not None:
            _expand_formats(ev.result_formats, len(stmt.columns), "result column")
        self._portals[ev.portal] = _Portal(stmt, params, tuple(ev.result_formats))
        self._emit(m.BindComplete())

    def _describe(self, ev: m.Describe) -> None:
        if ev.kind == "S":
            stmt = self._statements.get(ev.name)
            if stmt is None:
                raise QueryError(f'prepared statement "{ev.name}" does not exist', sqlstate="26000")
            self._emit(m.ParameterDescription(stmt.param_oids))
            columns, formats = stmt.columns, None
        else:
            portal = self._portals.get(ev.name)
            if portal is None:
                raise QueryError(f'portal "{ev.name}" does not exist', sqlstate="34000")
            columns = portal.statement.columns
            if portal.result is not None:
                columns = portal.result.columns or None
            formats = portal.result_formats
        if columns:
            fmts = (0,) * len(columns) if formats is None else _expand_formats(
                formats, len(columns), "result column")
            self._emit(m.RowDescription(_fields(columns, fmts)))
        else:
            self._emit(m.NoData())

    async def _execute_portal(self, ev: m.Execute) -> None:
        portal = self._portals.get(ev.portal)
        if portal is None:
            raise QueryError(f'portal "{ev.portal}" does not exist', sqlstate="34000")
        stmt = portal.statement
        if self._tx.blocked(stmt.kind):
            raise self._tx.aborted_error()
        if stmt.kind is not None:
            self._transaction_control(stmt.kind, stmt.sql)
            return
        if not stmt.sql.strip():
            self._emit(m.EmptyQueryResponse())
            return
        if portal.result is None:
            portal.result = await self._execute(stmt.sql, portal.params)
            self._notices(portal.result)
        result = portal.result
        if not result.columns:
            self._emit(m.CommandComplete(result.command_tag))
            return
        formats = _expand_formats(portal.result_formats, len(result.columns), "result column")
        total = result.row_count
        start = portal.position
        stop = total if ev.max_rows <= 0 else min(total, start + ev.max_rows)
        await self._stream(result, start, stop, formats)
        portal.position = stop
        if stop < total:
            self._emit(m.PortalSuspended())
            return
        tag = result.command_tag
        if tag.startswith("SELECT ") and (start or ev.max_rows > 0):
            tag = f"SELECT {stop - start}"
        self._emit(m.CommandComplete(tag))


def result_from_rows(columns: Sequence[tuple[str, str]], rows: Sequence[Sequence[object]],
                     tag: str | None = None) -> SqlResult:
    """Build a :class:`SqlResult` from Python rows (small results, catalog answers, tests)."""
    arrays = []
    for i, (_, tname) in enumerate(columns):
        values = [r[i] for r in rows]
        arr = np.empty(len(values), dtype=object)
        arr[:] = values
        if None not in values:
            name = pg_type(tname).name
            if name in ("int2", "int4", "int8", "oid", "timestamp", "timestamptz"):
                arr = np.asarray(values, dtype=np.int64)
            elif name in ("float4", "float8"):
                arr = np.asarray(values, dtype=np.float64)
            elif name == "bool":
                arr = np.asarray(values, dtype=bool)
        arrays.append(arr)
    return SqlResult(tuple((n, t) for n, t in columns), tuple(arrays),
                     tag if tag is not None else f"SELECT {len(rows)}")

