"""The data model shared by every layer: columnar write batches, field types, series keys.

Batches are columnar from the parser onward: a :class:`SeriesRows` holds every row of one series
from one write as numpy arrays, never one Python object per point.
"""

from __future__ import annotations

import enum
import functools
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


_KEY_SPECIALS = "\\, ="


def _escape(text: str, specials: str) -> str:
    """Backslash-escape ``specials`` (the backslash itself always), so keys split unambiguously."""
    if "\\" not in text and not any(ch in text for ch in specials):
        return text
    out = text.replace("\\", "\\\\")
    for ch in specials:
        out = out.replace(ch, "\\" + ch)
    return out


@functools.lru_cache(maxsize=1 << 17)
def series_key(measurement: str, tags: tuple[tuple[str, str], ...]) -> str:
    """The canonical series key: ``measurement,k1=v1,k2=v2``; ``\\ , =`` and space are escaped.

    Memoised: every write computes the key of each series several times (schema check, series
    id lookup, memtable), and a fleet of many series repeats the same tag sets every report.
    """
    parts = [_escape(measurement, ", =")]
    for k, v in tags:
        parts.append(f"{_escape(k, ', =')}={_escape(v, ', =')}")
    return ",".join(parts)


def _split_unescaped(text: str, sep: str, maxsplit: int = -1) -> list[str]:
    """Split on ``sep`` where it is not escaped (pieces keep their escapes)."""
    out, start, i, n = [], 0, 0, len(text)
    while i < n:
        ch = text[i]
        if ch == "\\" and i + 1 < n:
            i += 2
            continue
        if ch == sep and maxsplit != 0:
            out.append(text[start:i])
            start = i + 1
            maxsplit -= 1
        i += 1
    out.append(text[start:])
    return out


def _unescape(text: str) -> str:
    if "\\" not in text:
        return text
    out = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch == "\\" and i + 1 < n:
            out.append(text[i + 1])
            i += 2
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def parse_series_key(key: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    """Inverse of :func:`series_key`."""
    if "\\" not in key:
        parts = key.split(",")
        return parts[0], tuple(tuple(p.partition("=")[::2]) for p in parts[1:])  # type: ignore[misc]
    raw = _split_unescaped(key, ",")
    tags = []
    for p in raw[1:]:
        kv = _split_unescaped(p, "=", 1)
        tags.append((_unescape(kv[0]), _unescape(kv[1]) if len(kv) > 1 else ""))
    return _unescape(raw[0]), tuple(tags)
