"""The SQL sandbox: no statement reaches the server's files, the network, extensions or settings.

Two layers:

1. Every DuckDB connection rusts opens goes through :func:`connect` (or :func:`lock_down` for a
   connection that first fills its own tables): external access off (no file or HTTP reads or
   writes, ``COPY ... TO``, ``ATTACH``, ``EXPORT``/``IMPORT DATABASE``, secrets, extension
   ``INSTALL``/``LOAD``), extension autoloading and autoinstalling off, community and unsigned
   extensions off, then the configuration locked so no ``SET``/``PRAGMA`` can undo any of it. This
   is the guarantee: DuckDB itself refuses, whatever SQL gets through.
2. Before DuckDB, :func:`check_statement` walks the parsed statement (sqlglot) and refuses every
   DuckDB table function or table macro that is not on :data:`ALLOWED_FUNCTIONS`
   (``read_csv``, ``read_text``, ``glob``, ``parquet_metadata``, ``duckdb_settings``, ``query``...),
   wherever it stands, with a :class:`~rusts.errors.SandboxError` (SQLSTATE 42501
   insufficient_privilege, HTTP 400) that names the function. Statements other than queries
   (``COPY``, ``ATTACH``, ``INSTALL``, ``LOAD``, ``SET``, ``PRAGMA``...) never reach DuckDB: the SQL
   front end accepts only queries, ``SHOW``, ``DELETE`` and ``DROP TABLE``.

:func:`map_permission_error` turns DuckDB's own refusal (layer 1) into the same error.
"""

from __future__ import annotations

import functools
import threading

from sqlglot import exp

from rusts.errors import SandboxError

#: DuckDB settings applied to every connection before its configuration is locked.
SANDBOX_SETTINGS: tuple[tuple[str, str], ...] = (
    ("enable_external_access", "false"),
    ("autoload_known_extensions", "false"),
    ("autoinstall_known_extensions", "false"),
    ("allow_community_extensions", "false"),
    ("allow_unsigned_extensions", "false"),
)

#: Table functions a query may use: they compute rows, they read nothing.
ALLOWED_FUNCTIONS = frozenset({
    "generate_series", "range", "unnest", "repeat", "repeat_row", "json_each", "json_tree",
    "generate_subscripts",
})

_REFUSED = ("SQL cannot read or write the server's files, the network, extensions or settings")


def lock_down(con, settings: tuple[tuple[str, str], ...] = ()) -> None:
    """Sandbox an open DuckDB connection: apply ``settings`` (e.g. ``(("TimeZone", "'UTC'"),)``,
    values as SQL literals; a setting DuckDB does not know is skipped), then
    :data:`SANDBOX_SETTINGS`, then lock the configuration. Call after the connection's own
    set-up (creating and filling tables) and before any client SQL runs on it."""
    import duckdb

    for name, value in settings:
        try:
            con.execute(f"SET {name} = {value}")
        except duckdb.Error:  # e.g. TimeZone without ICU: timestamps are naive UTC anyway
            pass
    for name, value in SANDBOX_SETTINGS:
        con.execute(f"SET {name} = {value}")
    con.execute("SET lock_configuration = true")


def connect(settings: tuple[tuple[str, str], ...] = (("TimeZone", "'UTC'"),)):
    """A new in-memory DuckDB connection, sandboxed (:func:`lock_down`)."""
    import duckdb

    con = duckdb.connect(":memory:", config={"enable_external_access": False,
                                             "autoload_known_extensions": False,
                                             "autoinstall_known_extensions": False})
    lock_down(con, settings)
    return con


_LOCK = threading.Lock()


@functools.lru_cache(maxsize=1)
def refused_functions() -> tuple[frozenset[str], frozenset[str]]:
    """(refused in FROM, refused anywhere): every DuckDB table function and table macro not in
    :data:`ALLOWED_FUNCTIONS`, and of those the ones that are not also a scalar or aggregate
    function (``glob`` is both: the ``GLOB`` operator stays usable). Read from DuckDB itself, so
    a new DuckDB's new readers are refused too."""
    with _LOCK:
        con = connect(())
        try:
            rows = con.execute(
                "SELECT DISTINCT lower(function_name), function_type FROM duckdb_functions()").fetchall()
        finally:
            con.close()
    table = {n for n, t in rows if t in ("table", "table_macro")} - ALLOWED_FUNCTIONS
    other = {n for n, t in rows if t in ("scalar", "aggregate", "macro")}
    return frozenset(table), frozenset(table - other)


def _names(node: exp.Func) -> set[str]:
    if isinstance(node, exp.Anonymous):
        return {str(node.name).lower()}
    return {n.lower() for n in type(node).sql_names()}


def check_statement(ast: exp.Expression) -> None:
    """Raise :class:`SandboxError` if the parsed statement calls a function that could reach the
    host (a DuckDB table function or table macro outside :data:`ALLOWED_FUNCTIONS`)."""
    in_from, anywhere = refused_functions()
    for node in ast.find_all(exp.Func):
        names = _names(node)
        bad = names & (in_from if isinstance(node.parent, exp.Table) else anywhere)
        if bad:
            raise SandboxError(f"function {sorted(bad)[0]}() is not allowed: {_REFUSED}")


def check_tokens(sql: str) -> None:
    """For text the parser rejects: refuse it as the sandbox would when it calls a refused
    function (``name(`` with a name from :func:`refused_functions`), so the error says why."""
    from sqlglot.tokens import Tokenizer, TokenType

    try:
        toks = Tokenizer().tokenize(sql)
    except Exception:  # noqa: BLE001 - the parser's own error stands
        return
    in_from, _ = refused_functions()
    for a, b in zip(toks, toks[1:]):
        if b.token_type == TokenType.L_PAREN and a.text.lower() in in_from:
            raise SandboxError(f"function {a.text.lower()}() is not allowed: {_REFUSED}")


@functools.lru_cache(maxsize=1024)
def check_text(sql: str) -> None:
    """:func:`check_statement` on SQL text (PostgreSQL dialect); text that does not parse is left
    to the statement's own parser (DuckDB's lock still holds). Cached: a refusal is an exception,
    which lru_cache does not store, so refusals re-check."""
    import sqlglot

    try:
        stmts = sqlglot.parse(sql, dialect="postgres")
    except Exception:  # noqa: BLE001 - not parseable here: the executor reports the syntax error
        check_tokens(sql)
        return
    for s in stmts:
        if s is not None:
            check_statement(s)


def is_permission_error(e: BaseException) -> bool:
    try:
        import duckdb
    except ImportError:  # pragma: no cover
        return False
    return isinstance(e, duckdb.PermissionException) or "the configuration has been locked" in str(e)


def map_permission_error(e: BaseException) -> SandboxError:
    """DuckDB's own refusal (external access off, configuration locked) as a SandboxError."""
    msg = str(e).split("\n")[0]
    for prefix in ("Permission Error: ", "Invalid Input Error: "):
        if msg.startswith(prefix):
            msg = msg[len(prefix):]
    return SandboxError(f"{msg}: {_REFUSED}")
