"""The data model shared by every layer: columnar write batches, field types, series keys.

Batches are columnar from the parser onward: a :class:`SeriesRows` holds every row of one series
from one write as numpy arrays, never one Python object per point.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

import attrs
import numpy as np


class FieldType(enum.IntEnum):
    """Field value types. The integer values are stored on disk: never renumber."""

    FLOAT = 0
    INTEGER = 1
    UNSIGNED = 2
    STRING = 3
    BOOLEAN = 4

    @property
    def dtype(self) -> np.dtype:
        return _DTYPES[self]

    @property
    def sql_name(self) -> str:
        return _SQL_NAMES[self]

    @classmethod
    def of_dtype(cls, dtype: np.dtype) -> "FieldType":
        kind = np.dtype(dtype).kind
        if kind == "f":
            return cls.FLOAT
        if kind == "i":
            return cls.INTEGER
        if kind == "u":
            return cls.UNSIGNED
        if kind == "b":
            return cls.BOOLEAN
        return cls.STRING


_DTYPES = {
    FieldType.FLOAT: np.dtype(np.float64),
    FieldType.INTEGER: np.dtype(np.int64),
    FieldType.UNSIGNED: np.dtype(np.uint64),
    FieldType.STRING: np.dtype(object),
    FieldType.BOOLEAN: np.dtype(bool),
}
_SQL_NAMES = {
    FieldType.FLOAT: "float8",
    FieldType.INTEGER: "int8",
    FieldType.UNSIGNED: "numeric",
    FieldType.STRING: "text",
    FieldType.BOOLEAN: "bool",
}


@attrs.frozen(eq=False)
class Column:
    """One field's values for the rows of a :class:`SeriesRows` (or a segment block).

    ``values`` has one entry per row; where ``mask`` is False the entry is meaningless (the row
    has no value for this field). ``mask`` is None when every row has a value.
    Strings are numpy object arrays of ``str``.
    """

    type: FieldType
    values: np.ndarray
    mask: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.values)

    def valid(self) -> np.ndarray:
        """The present values only."""
        return self.values if self.mask is None else self.values[self.mask]

    def take(self, index: np.ndarray) -> "Column":
        """Rows at ``index`` (an integer or boolean index array)."""
        mask = None if self.mask is None else self.mask[index]
        if mask is not None and mask.all():
            mask = None
        return Column(self.type, self.values[index], mask)


@attrs.frozen(eq=False)
class SeriesRows:
    """All rows of one series in one write, columnar.

    ``tags`` is sorted by key with unique keys. ``timestamps`` are int64 ns in input order (not
    necessarily sorted, duplicates allowed: later rows win). Every column has len(timestamps)
    entries. ``line_numbers`` (int64, 1-based) maps each row back to its line in the request body
    so that per-line errors can be reported.
    """

    measurement: str
    tags: tuple[tuple[str, str], ...]
    timestamps: np.ndarray
    columns: Mapping[str, Column]
    line_numbers: np.ndarray

    def __len__(self) -> int:
        return len(self.timestamps)

    @property
    def key(self) -> str:
        return series_key(self.measurement, self.tags)

    def take(self, index: np.ndarray) -> "SeriesRows":
        cols = {}
        for name, col in self.columns.items():
            c = col.take(index)
            if c.mask is None or c.mask.any():
                cols[name] = c
        return SeriesRows(self.measurement, self.tags, self.timestamps[index], cols,
                          self.line_numbers[index])


@attrs.frozen
class LineError:
    """A rejected line of a write: 1-based line number, the line's text, and why."""

    line_number: int
    original_line: str
    error_message: str

    def to_json(self) -> dict:
        return {"line_number": self.line_number, "original_line": self.original_line,
                "error_message": self.error_message}


@attrs.frozen(eq=False)
class WriteBatch:
    """The parser's output for one request body: columnar series and per-line errors."""

    series: tuple[SeriesRows, ...]
    errors: tuple[LineError, ...] = ()

    @property
    def point_count(self) -> int:
        return sum(len(s) for s in self.series)

    @property
    def value_count(self) -> int:
        n = 0
        for s in self.series:
            for c in s.columns.values():
                n += len(c.values) if c.mask is None else int(c.mask.sum())
        return n


def _escape(text: str, specials: str) -> str:
    if not any(ch in text for ch in specials):
        return text
    out = text.replace("\\", "\\\\") if "\\" in specials else text
    for ch in specials:
        if ch != "\\":
            out = out.replace(ch, "\\" + ch)
    return out


def series_key(measurement: str, tags: tuple[tuple[str, str], ...]) -> str:
    """The canonical series key: ``measurement,k1=v1,k2=v2`` with line-protocol escapes."""
    parts = [_escape(measurement, ", ")]
    for k, v in tags:
        parts.append(f"{_escape(k, ',= ')}={_escape(v, ',= ')}")
    return ",".join(parts)


def parse_series_key(key: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    """Inverse of :func:`series_key`."""
    parts: list[str] = []
    cur: list[str] = []
    i = 0
    while i < len(key):
        ch = key[i]
        if ch == "\\" and i + 1 < len(key) and key[i + 1] in ", =":
            cur.append("\x00" + key[i + 1])  # marker for escaped char
            i += 2
            continue
        if ch == ",":
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
        i += 1
    parts.append("".join(cur))

    def unesc(s: str) -> str:
        return s.replace("\x00", "")

    measurement = unesc(parts[0])
    tags = []
    for p in parts[1:]:
        # split on the first unescaped '='
        j = 0
        while j < len(p):
            if p[j] == "\x00":
                j += 2
                continue
            if p[j] == "=":
                break
            j += 1
        tags.append((unesc(p[:j]), unesc(p[j + 1:])))
    return measurement, tuple(tags)
