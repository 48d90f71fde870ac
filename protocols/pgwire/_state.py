"""Transaction-block bookkeeping for the ReadyForQuery status byte (pure, no I/O).

The engine has no multi-statement transactions, so BEGIN/COMMIT/ROLLBACK are accepted as
no-ops, but clients depend on the status byte and on PostgreSQL's failed-block rule:

* 'I' idle: statements run in their own implicit transaction; an error leaves the status 'I'.
* 'T' inside BEGIN ... : an error moves to 'E'.
* 'E' failed block: every statement except COMMIT/ROLLBACK/ROLLBACK TO fails with 25P02 until
  the block ends; COMMIT of a failed block answers "ROLLBACK".

:func:`classify` recognises transaction-control statements from their leading keywords (after
comments), which is all PostgreSQL itself needs to decide what a failed block lets through.
"""

from __future__ import annotations

import re

from rusts.errors import QueryError

_LEADING = re.compile(r"(?:\s+|--[^\n]*(?:\n|$)|/\*.*?\*/)*", re.S)
_WORD = re.compile(r"[A-Za-z_]+")


def _words(sql: str, n: int) -> list[str]:
    pos = _LEADING.match(sql).end()
    out: list[str] = []
    while len(out) < n:
        mt = _WORD.match(sql, pos)
        if mt is None:
            break
        out.append(mt.group().lower())
        pos = _LEADING.match(sql, mt.end()).end()
    return out


def classify(sql: str) -> str | None:
    """'begin', 'commit', 'rollback', 'rollback_to', 'savepoint', 'release', or the session
    commands 'deallocate' / 'discard' (prepared statements live in the protocol layer), or None."""
    w = _words(sql, 4)
    if not w:
        return None
    head = w[0]
    if head == "deallocate":
        return "deallocate"
    if head == "discard" and w[1:2] == ["all"]:
        return "discard"
    if head == "begin" or (head == "start" and w[1:2] == ["transaction"]):
        return "begin"
    if head in ("commit", "end"):
        return "commit"
    if head in ("rollback", "abort"):
        rest = w[1:]
        if rest[:1] in (["work"], ["transaction"]):
            rest = rest[1:]
        return "rollback_to" if rest[:1] == ["to"] else "rollback"
    if head == "savepoint":
        return "savepoint"
    if head == "release":
        return "release"
    return None


class TransactionState:
    """The session's transaction status: 'I', 'T' or 'E'."""

    def __init__(self) -> None:
        self.status = "I"

    def blocked(self, kind: str | None) -> bool:
        """True when a statement of this kind must fail with 25P02 (failed block)."""
        return self.status == "E" and kind not in ("commit", "rollback", "rollback_to")

    @staticmethod
    def aborted_error() -> QueryError:
        return QueryError("current transaction is aborted, commands ignored until end of "
                          "transaction block", sqlstate="25P02")

    def apply(self, kind: str) -> tuple[str, tuple[str, str] | None]:
        """Run a transaction-control statement.

        Returns:
            ``(command tag, (sqlstate, message) of a warning or None)``.

        Raises:
            QueryError: 25P01 for SAVEPOINT / RELEASE / ROLLBACK TO outside a block.
        """
        status = self.status
        if kind == "begin":
            if status != "I":
                return "BEGIN", ("25001", "there is already a transaction in progress")
            self.status = "T"
            return "BEGIN", None
        if kind in ("commit", "rollback"):
            self.status = "I"
            if status == "I":
                return kind.upper(), ("25P01", "there is no transaction in progress")
            return ("ROLLBACK" if status == "E" else kind.upper()), None
        if status == "I":
            what = {"savepoint": "SAVEPOINT", "release": "RELEASE SAVEPOINT",
                    "rollback_to": "ROLLBACK TO SAVEPOINT"}[kind]
            raise QueryError(f"{what} can only be used in transaction blocks", sqlstate="25P01")
        if kind == "rollback_to":
            self.status = "T"
            return "ROLLBACK", None
        return kind.upper(), None

    def on_error(self) -> None:
        """An error happened: a block becomes failed."""
        if self.status == "T":
            self.status = "E"


_DEALLOCATE = re.compile(r"\s*deallocate\s+(?:prepare\s+)?(\"(?:[^\"]|\"\")+\"|[^\s;]+)\s*;?\s*$",
                         re.I | re.S)


def deallocate_target(sql: str) -> str | None:
    """The statement name of ``DEALLOCATE [PREPARE] name``; None for ``DEALLOCATE ALL``.

    Raises:
        QueryError: 42601 when the statement does not have that shape.
    """
    mt = _DEALLOCATE.match(_LEADING.sub(" ", sql, count=1))
    if mt is None:
        raise QueryError("syntax error in DEALLOCATE", sqlstate="42601")
    name = mt.group(1)
    if name.startswith('"'):
        return name[1:-1].replace('""', '"')
    return None if name.lower() == "all" else name.lower()
