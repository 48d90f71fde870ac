"""What the pgwire server drives: the SQL backend interface, its result type, and auth settings.

The server is protocol only. For each connection it calls ``backend_factory(startup_params)``
and then, per statement, :meth:`SqlBackend.execute` (and :meth:`SqlBackend.describe` for the
extended protocol). Transaction control (BEGIN/START TRANSACTION, COMMIT/END, ROLLBACK/ABORT,
SAVEPOINT, RELEASE) is answered by the server itself and never reaches the backend; SET and SHOW
do reach it.

Errors: the backend raises :class:`rusts.errors.RustsError` subclasses. The client receives
``ErrorResponse`` with ``err.sqlstate`` and ``str(err)``; for a :class:`rusts.errors.QueryError`
with ``position`` set, the position is reported too, read as a **1-based character offset into
the statement string passed to execute/describe** (the server shifts it to the whole query
string). Any other exception is reported as XX000 and logged; the session survives.

Parameters (``params``) arrive decoded by type (see ``_types.decode_param``): int, float, bool,
Decimal, str, bytes, datetime (timezone-aware UTC for timestamptz), date, or None for NULL.
A text-format parameter of unspecified type stays ``str``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

import attrs
import numpy as np

from ._scram import ScramCredentials, make_credentials


@attrs.frozen(eq=False)
class SqlResult:
    """The result of one statement, columnar.

    Attributes:
        columns: ``(name, pg type name)`` per column; type names: timestamp, timestamptz, float8,
            float4, int8, int4, int2, text, bool, numeric, oid, name, char, bytea, json (and
            varchar, date). An empty tuple means the statement returns no rows (SET, BEGIN...).
        arrays: one numpy array per column, all the same length. Object arrays may hold None
            (NULL). Timestamp columns are int64 ns since the Unix epoch (an object array with
            None when nulls exist). Float NaN is a value, not NULL.
        command_tag: e.g. "SELECT 3", "SET", "SHOW".
        notices: messages sent as NoticeResponse (severity WARNING, SQLSTATE 01000) before the
            rows, e.g. the time ranges of damaged blocks missing from the answer.
    """

    columns: tuple[tuple[str, str], ...]
    arrays: tuple[np.ndarray, ...]
    command_tag: str
    notices: tuple[str, ...] = ()

    @property
    def row_count(self) -> int:
        return len(self.arrays[0]) if self.arrays else 0


@runtime_checkable
class SqlBackend(Protocol):
    """One session's SQL engine (created per connection by the backend factory)."""

    async def execute(self, sql: str, params: Sequence[object] | None = None) -> SqlResult:
        """Run one statement."""
        ...

    async def describe(self, sql: str, param_types: Sequence[int]
                       ) -> tuple[list[int], tuple[tuple[str, str], ...] | None]:
        """Parameter type oids (0 = unknown, reported as text) and result columns (None when
        the statement returns no rows) of one statement, without running it."""
        ...

    def split_statements(self, sql: str) -> list[str]:
        """Split a simple-query string into statements (empty list for an empty query)."""
        ...


@attrs.define(eq=False)
class PgAuth:
    """Authentication settings of the pgwire server.

    Attributes:
        users: user name -> stored password (cleartext, SCRAM-SHA-256 verifier, bcrypt or argon2
            hash; :mod:`rusts.security.passwords`).
        method: "scram-sha-256" (default) or "password" (cleartext, use with TLS).
        jwt_verifier: when set, a password for which it returns a truthy value (the token's
            identity, handed to the backend factory) is accepted (a JWT). A JWT
            cannot travel inside SCRAM, so with method "scram-sha-256" users that are not in
            ``users`` are asked for a cleartext password instead, to be checked as a JWT.
    """

    users: dict[str, str] = attrs.field(factory=dict)
    method: str = attrs.field(default="scram-sha-256",
                              validator=attrs.validators.in_(("scram-sha-256", "password")))
    jwt_verifier: Callable[[str], bool] | None = None
    _scram_cache: dict[str, ScramCredentials] = attrs.field(factory=dict, init=False, repr=False)

    def check_password(self, user: str, password: str) -> object:
        """True when ``password`` is the user's password; for a JWT the verifier accepts, what
        the verifier returned (truthy: the token's identity); else False."""
        from rusts.security.passwords import verify

        expected = self.users.get(user)
        if expected is not None:
            return verify(expected, password)
        if self.jwt_verifier is not None and password:
            try:
                return self.jwt_verifier(password) or False
            except Exception:  # a verifier that raises rejects the token
                return False
        return False

    def scram_credentials(self, user: str) -> ScramCredentials | None:
        """Stored SCRAM credentials for a known user (derived once from a plain password, or
        the configured SCRAM verifier), then cached."""
        from rusts.security.passwords import kind, parse_scram

        password = self.users.get(user)
        if password is None:
            return None
        creds = self._scram_cache.get(user)
        if creds is None:
            k = kind(password)
            if k == "scram":
                creds = parse_scram(password)
            elif k == "plain":
                creds = make_credentials(password)
            else:
                return None
            self._scram_cache[user] = creds
        return creds

    def uses_scram(self, user: str) -> bool:
        """Whether this user authenticates with SCRAM (else cleartext password): users whose
        password is stored as a bcrypt/argon2 hash cannot, nor can token logins."""
        if self.method != "scram-sha-256":
            return False
        if user in self.users:
            from rusts.security.passwords import kind

            return kind(self.users[user]) in ("plain", "scram")
        return self.jwt_verifier is None
