"""Event classes of the PostgreSQL frontend/backend protocol 3.0.

Frontend events (what :meth:`PgServerConnection.next_event` returns) and backend events (what
:meth:`PgServerConnection.send` accepts) are frozen attrs classes, one per protocol message. The
byte layouts live in ``_reader.py`` (frontend -> event) and ``_writer.py`` (event -> bytes);
``docs/pgwire.md`` describes the protocol subset.

:class:`DataRows` is the one deliberate departure from one-event-per-message: it carries a slice of
a columnar result (numpy arrays) and encodes to *many* DataRow messages at once, vectorised, so a
large result never becomes one Python object per row.
"""

from __future__ import annotations

from collections.abc import Mapping

import attrs
import numpy as np


class _Sentinel:
    def __init__(self, name: str) -> None:
        self._name = name

    def __repr__(self) -> str:
        return self._name


NEED_DATA = _Sentinel("NEED_DATA")
"""Returned by ``next_event`` when more bytes are needed to complete the next message."""


# --------------------------------------------------------------------------- frontend events


@attrs.frozen
class SSLRequest:
    """The client asks to switch to TLS before the startup message."""


@attrs.frozen
class GSSENCRequest:
    """The client asks for GSSAPI encryption (always declined)."""


@attrs.frozen
class CancelRequest:
    """Sent on a fresh connection: cancel the running query of session ``process_id``."""

    process_id: int
    secret_key: int


@attrs.frozen
class StartupMessage:
    """Protocol 3.x startup: ``params`` holds user, database, application_name, options..."""

    protocol_minor: int
    params: Mapping[str, str]


@attrs.frozen
class PasswordMessage:
    """A cleartext password (answer to AuthenticationCleartextPassword)."""

    password: str


@attrs.frozen
class SASLInitialResponse:
    """First SASL message: the chosen mechanism and the client-first-message (or None)."""

    mechanism: str
    data: bytes | None


@attrs.frozen
class SASLResponse:
    """A later SASL message (SCRAM client-final-message)."""

    data: bytes


@attrs.frozen
class Query:
    """Simple query: one string, possibly several statements."""

    sql: str


@attrs.frozen
class Parse:
    """Extended query: prepare ``sql`` as statement ``name`` ("" = unnamed)."""

    name: str
    sql: str
    param_types: tuple[int, ...] = ()


@attrs.frozen
class Bind:
    """Extended query: bind raw parameter values to a statement, creating portal ``portal``."""

    portal: str
    statement: str
    param_formats: tuple[int, ...] = ()
    params: tuple[bytes | None, ...] = ()
    result_formats: tuple[int, ...] = ()


@attrs.frozen
class Describe:
    """Describe a prepared statement (``kind`` 'S') or a portal ('P')."""

    kind: str
    name: str


@attrs.frozen
class Execute:
    """Run a portal; ``max_rows`` 0 means all rows."""

    portal: str
    max_rows: int = 0


@attrs.frozen
class Close:
    """Close a prepared statement ('S') or a portal ('P')."""

    kind: str
    name: str


@attrs.frozen
class Sync:
    """End of an extended-query batch: the server answers ReadyForQuery."""


@attrs.frozen
class Flush:
    """Ask the server to send what it has buffered."""


@attrs.frozen
class Terminate:
    """The client says goodbye."""


@attrs.frozen
class FunctionCall:
    """The legacy fastpath function call (answered with an error)."""

    function_oid: int


@attrs.frozen
class ConnectionClosed:
    """The peer closed its side (``receive_data(b"")``)."""


FrontendEvent = (SSLRequest | GSSENCRequest | CancelRequest | StartupMessage | PasswordMessage
                 | SASLInitialResponse | SASLResponse | Query | Parse | Bind | Describe | Execute
                 | Close | Sync | Flush | Terminate | FunctionCall | ConnectionClosed)


# --------------------------------------------------------------------------- backend events


@attrs.frozen
class SSLResponse:
    """Answer to SSLRequest: 'S' (``accept``, TLS handshake follows) or 'N'."""

    accept: bool


@attrs.frozen
class GSSENCResponse:
    """Answer to GSSENCRequest: always 'N'."""


@attrs.frozen
class AuthenticationOk:
    """Authentication succeeded."""


@attrs.frozen
class AuthenticationCleartextPassword:
    """Ask for a cleartext password."""


@attrs.frozen
class AuthenticationSASL:
    """Start SASL, offering ``mechanisms``."""

    mechanisms: tuple[str, ...] = ("SCRAM-SHA-256",)


@attrs.frozen
class AuthenticationSASLContinue:
    """A SASL challenge (SCRAM server-first-message)."""

    data: bytes


@attrs.frozen
class AuthenticationSASLFinal:
    """SASL outcome data (SCRAM server-final-message)."""

    data: bytes


@attrs.frozen
class ParameterStatus:
    """Report a run-time parameter (server_version, TimeZone...)."""

    name: str
    value: str


@attrs.frozen
class BackendKeyData:
    """Process id and secret a client needs to send a CancelRequest."""

    process_id: int
    secret_key: int


@attrs.frozen
class NegotiateProtocolVersion:
    """The newest minor version supported, and the startup options not recognised."""

    newest_minor: int
    unrecognized: tuple[str, ...] = ()


@attrs.frozen
class ReadyForQuery:
    """Ready for a new query; ``status`` is 'I' idle, 'T' in a block, 'E' failed block."""

    status: str = "I"


@attrs.frozen
class FieldDescription:
    """One column of a RowDescription."""

    name: str
    type_oid: int
    type_size: int = -1
    type_modifier: int = -1
    format: int = 0
    table_oid: int = 0
    column_number: int = 0


@attrs.frozen
class RowDescription:
    """The columns of the rows that follow."""

    fields: tuple[FieldDescription, ...]


@attrs.frozen(eq=False)
class DataRows:
    """Rows of a columnar result, encoded as one DataRow message each.

    ``arrays`` are equally long numpy arrays (one per column), ``type_names`` the pg type name of
    each column (see ``_types``) and ``formats`` 0 (text) or 1 (binary) per column.
    """

    arrays: tuple[np.ndarray, ...]
    type_names: tuple[str, ...]
    formats: tuple[int, ...]


@attrs.frozen
class CommandComplete:
    """A statement finished; ``tag`` is e.g. "SELECT 3"."""

    tag: str


@attrs.frozen
class EmptyQueryResponse:
    """The query string was empty."""


@attrs.frozen
class ErrorResponse:
    """An error. ``severity`` ERROR keeps the session, FATAL/PANIC end it.

    ``position`` is a 1-based character index into the query string, or None.
    """

    code: str
    message: str
    severity: str = "ERROR"
    position: int | None = None
    detail: str | None = None
    hint: str | None = None


@attrs.frozen
class NoticeResponse:
    """A notice (warning) that does not interrupt anything."""

    code: str
    message: str
    severity: str = "NOTICE"


@attrs.frozen
class ParseComplete:
    """Parse succeeded."""


@attrs.frozen
class BindComplete:
    """Bind succeeded."""


@attrs.frozen
class CloseComplete:
    """Close succeeded (also for names that did not exist)."""


@attrs.frozen
class NoData:
    """Describe: the statement returns no rows."""


@attrs.frozen
class ParameterDescription:
    """Describe statement: the type oid of each parameter."""

    type_oids: tuple[int, ...]


@attrs.frozen
class PortalSuspended:
    """Execute stopped at its row limit; the portal can be resumed."""


BackendEvent = (SSLResponse | GSSENCResponse | AuthenticationOk | AuthenticationCleartextPassword
                | AuthenticationSASL | AuthenticationSASLContinue | AuthenticationSASLFinal
                | ParameterStatus | BackendKeyData | NegotiateProtocolVersion | ReadyForQuery
                | RowDescription | DataRows | CommandComplete | EmptyQueryResponse | ErrorResponse
                | NoticeResponse | ParseComplete | BindComplete | CloseComplete | NoData
                | ParameterDescription | PortalSuspended)
