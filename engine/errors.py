"""The one error hierarchy of rusts.

Every exception that crosses a module boundary is a :class:`RustsError`. Protocol edges turn
them into responses: each class carries ``http_status`` and ``sqlstate`` hints so the HTTP app and
the pgwire server answer without guessing.
"""

from __future__ import annotations


class RustsError(Exception):
    """Base class of every error rusts raises on purpose."""

    http_status: int = 500
    sqlstate: str = "XX000"

    def __init__(self, message: str, **details: object) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def __str__(self) -> str:
        return self.message


class ConfigError(RustsError):
    """A configuration file, key or command-line value is invalid. ``key`` names it."""

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message, key=key)
        self.key = key


class ProtocolError(RustsError):
    """Input from a client does not follow its protocol."""

    http_status = 400
    sqlstate = "08P01"



class QueryError(RustsError):
    """A query is malformed or asks for something unsupported (client error)."""

    http_status = 400
    sqlstate = "42601"

    def __init__(self, message: str, sqlstate: str | None = None, position: int | None = None) -> None:
        super().__init__(message, position=position)
        if sqlstate is not None:
            self.sqlstate = sqlstate
        self.position = position


class UnknownColumnError(QueryError):
    sqlstate = "42703"


class UnknownTableError(QueryError):
    sqlstate = "42P01"


class UnsupportedError(QueryError):
    sqlstate = "0A000"


class QueryCancelled(RustsError):
    """The query was cancelled by the client or exceeded its time limit."""

    http_status = 408
    sqlstate = "57014"


class QueryLimitError(QueryError):
    """A query needs more than its limits allow (``query.memory_limit_mb``, ``query.max_rows``)."""

    http_status = 400
    sqlstate = "53200"


class AuthError(RustsError):
    """Missing or wrong credentials."""

    http_status = 401
    sqlstate = "28P01"


class ForbiddenError(RustsError):
    """Valid credentials that do not allow this action (scope or measurement)."""

    http_status = 403
    sqlstate = "42501"


class SandboxError(QueryError):
    """SQL that would reach the host (files, network, extensions, settings): refused."""

    sqlstate = "42501"


class WriteError(RustsError):
    """A write could not be accepted (schema conflict, limits)."""

    http_status = 400
    sqlstate = "22000"


class OverloadedError(RustsError):
    """The engine cannot take more writes right now; retry after ``retry_after`` seconds."""

    http_status = 503
    sqlstate = "53000"

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message, retry_after=retry_after)
        self.retry_after = retry_after


class StorageError(RustsError):
    """A storage operation failed (I/O error, full disk, closed engine)."""

    http_status = 500
    sqlstate = "58030"


class StorageUnavailableError(StorageError):
    """Storage cannot take writes right now (an I/O error); retry after ``retry_after`` seconds.

    HTTP answers 503 with ``Retry-After``; nothing of the rejected write was acknowledged.
    """

    http_status = 503

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.details = {"retry_after": retry_after}
        self.retry_after = retry_after


class DiskFullError(StorageUnavailableError):
    """The disk is full (ENOSPC, EDQUOT): writes are refused until space returns."""

    sqlstate = "53100"


class WalFailedError(StorageUnavailableError):
    """The WAL failed closed (an fsync failed): every write is refused until a restart.

    A failed fsync is never retried (fsyncgate), so nothing more can be made durable in this
    process; the data acknowledged before the failure is safe and replays at the next start.
    """


class CorruptionError(StorageError):
    """Stored bytes fail validation. ``path`` and ``offset`` say where."""

    def __init__(self, message: str, path: str | None = None, offset: int | None = None) -> None:
        super().__init__(message)
        self.details = {"path": path, "offset": offset}
        self.path = path
        self.offset = offset


class CodecError(CorruptionError):
    """An encoded block is truncated, corrupt or of an unknown codec."""


class DataDirLockedError(StorageError):
    """Another process holds the data directory."""


class ClosedError(StorageError):
    """The engine or an actor has been shut down."""

    http_status = 503
