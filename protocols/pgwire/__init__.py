"""rusts.protocols.pgwire: the PostgreSQL wire protocol (v3) server.

Layers, bottom up: ``_messages`` (event classes), ``_reader`` / ``_writer`` (bytes <-> events),
``_types`` (vectorised column encoders, parameter decoders), ``_scram`` (SCRAM-SHA-256),
``connection`` (the sans-I/O :class:`PgServerConnection` state machine), ``_state`` (transaction
status), ``_session`` (simple / extended query flows against a :class:`SqlBackend`), ``server``
(trio TCP server, :func:`serve_pgwire`). See docs/pgwire.md.
"""

from ._messages import NEED_DATA as NEED_DATA
from ._reader import PgProtocolError as PgProtocolError
from ._scram import ScramCredentials as ScramCredentials
from ._scram import ScramServer as ScramServer
from ._scram import make_credentials as make_credentials
from ._session import PgSession as PgSession
from ._session import result_from_rows as result_from_rows
from ._types import PgType as PgType
from ._types import decode_param as decode_param
from ._types import encode_column as encode_column
from ._types import encode_data_rows as encode_data_rows
from ._types import pg_type as pg_type
from .backend import PgAuth as PgAuth
from .backend import SqlBackend as SqlBackend
from .backend import SqlResult as SqlResult
from .connection import PgServerConnection as PgServerConnection
from .server import SERVER_VERSION as SERVER_VERSION
from .server import PgServer as PgServer
from .server import PgServerStatistics as PgServerStatistics
from .server import serve_pgwire as serve_pgwire
from . import _messages as events  # noqa: E402  (event classes: rusts.protocols.pgwire.events.Query...)

__all__ = [
    "NEED_DATA", "PgProtocolError", "ScramCredentials", "ScramServer", "make_credentials",
    "PgSession", "result_from_rows", "PgType", "decode_param", "encode_column",
    "encode_data_rows", "pg_type", "PgAuth", "SqlBackend", "SqlResult", "PgServerConnection",
    "SERVER_VERSION", "PgServer", "PgServerStatistics", "serve_pgwire", "events",
]
