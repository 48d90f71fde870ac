"""Who is asking and what they may do: :class:`Principal`, scopes and measurement limits.

A principal has scopes among ``read``, ``write`` and ``admin`` and optionally a list of
measurements it is limited to: exact names or prefixes ending in ``*`` (``cpu*`` matches ``cpu``,
``cpu_load``...). ``admin`` (deletes, drops, retention policies, flush) includes ``read`` and
``write``; ``read`` and ``write`` are independent, so a collector's write-only token reads nothing.

The principal of the running request or statement lives in a context variable
(:func:`current` / :func:`acting_as`): the HTTP before-hook and the pgwire session set it, the
SQL path reads it, so no signature between them has to carry it.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterable

import attrs

from rusts.errors import ConfigError

READ, WRITE, ADMIN = "read", "write", "admin"
SCOPES = (READ, WRITE, ADMIN)


def parse_scopes(value, path: str = "scopes") -> frozenset[str]:
    """``"read write"``, ``"read,write"`` or ``["read", "write"]`` -> a set of known scopes."""
    if isinstance(value, str):
        items = value.replace(",", " ").split()
    elif isinstance(value, (list, tuple, set, frozenset)):
        items = list(value)
    else:
        raise ConfigError(f"{path}: expected a list of scopes (read, write, admin), got {value!r}", key=path)
    out = set()
    for s in items:
        if not isinstance(s, str) or s.strip().lower() not in SCOPES:
            raise ConfigError(f"{path}: unknown scope {s!r} (expected read, write or admin)", key=path)
        out.add(s.strip().lower())
    return frozenset(out)


def parse_measurements(value, path: str = "measurements") -> tuple[str, ...] | None:
    """``None`` (all), ``"cpu,mem*"`` or ``["cpu", "mem*"]`` -> a tuple of names/prefixes."""
    if value is None:
        return None
    if isinstance(value, str):
        items = [x.strip() for x in value.split(",")]
    elif isinstance(value, (list, tuple)):
        items = list(value)
    else:
        raise ConfigError(f"{path}: expected a list of measurement names or prefixes like 'cpu*', "
                          f"got {value!r}", key=path)
    out = []
    for m in items:
        if not isinstance(m, str) or not m or ("*" in m[:-1]):
            raise ConfigError(f"{path}: expected a measurement name or a prefix ending in '*', got {m!r}",
                              key=path)
        out.append(m)
    if not out:
        raise ConfigError(f"{path}: empty list (omit the key to allow every measurement)", key=path)
    return tuple(out)


@attrs.frozen
class Principal:
    """An authenticated caller: ``subject``, ``scopes``, ``measurements`` (None = all)."""

    subject: str
    scopes: frozenset = frozenset(SCOPES)
    measurements: tuple[str, ...] | None = None

    def has(self, action: str) -> bool:
        return action in self.scopes or ADMIN in self.scopes

    def covers(self, measurement: str) -> bool:
        if self.measurements is None:
            return True
        for pat in self.measurements:
            if pat.endswith("*"):
                if measurement.startswith(pat[:-1]):
                    return True
            elif measurement == pat:
                return True
        return False

    def allows(self, action: str, measurement: str | None = None) -> bool:
        return self.has(action) and (measurement is None or self.covers(measurement))

    @property
    def all_measurements(self) -> bool:
        return self.measurements is None

    def visible(self, names: Iterable[str]) -> list[str]:
        """The names this principal may read, in order."""
        if not self.has(READ):
            return []
        if self.measurements is None:
            return list(names)
        return [n for n in names if self.covers(n)]

    def describe(self) -> str:
        lim = "" if self.measurements is None else f" on {','.join(self.measurements)}"
        return f"{self.subject!r} (scopes {' '.join(sorted(self.scopes)) or 'none'}{lim})"


#: What an internal caller (or a server without auth) acts as.
SYSTEM = Principal("system")

_CURRENT: contextvars.ContextVar[Principal | None] = contextvars.ContextVar("rusts_principal", default=None)


def current() -> Principal | None:
    """The principal of the running request/statement (None: none was set)."""
    return _CURRENT.get()


def set_current(p: Principal | None) -> None:
    """Set the principal for the rest of the current task (the HTTP before-hook)."""
    _CURRENT.set(p)


@contextlib.contextmanager
def acting_as(p: Principal | None):
    """Run a block as ``p`` (pgwire statements, tests)."""
    tok = _CURRENT.set(p)
    try:
        yield p
    finally:
        _CURRENT.reset(tok)
