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

    def zeros(self, n: int) -> np.ndarray:
        """``n`` values of this type standing for "no value": 0, False or the empty string."""
        if self is FieldType.STRING:
            return np.full(n, "", dtype=object)
        return np.zeros(n, dtype=_DTYPES[self])

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


class Frame:
    """Rows of many series sharing one field layout, columnar across the series.

    The many-series write path keeps a request in this shape from the parser to the memtable, so
    its cost does not grow with one Python object per series. Rows are grouped by series (series
    ``i`` owns rows ``starts[i]:starts[i + 1]``, in input order, later rows win), every column
    has one entry per row (``mask`` None: every row has the field). ``measurements[i]``,
    ``tags[i]`` and ``keys[i]`` (the canonical :func:`series_key`) describe series ``i``; a frame
    may hold several measurements that share a field layout.
    """

    __slots__ = ("measurements", "tags", "keys", "starts", "timestamps", "columns", "line_numbers", "_layout")

    def __init__(self, measurements, tags, keys, starts: np.ndarray, timestamps: np.ndarray,
                 columns: Mapping[str, Column], line_numbers: np.ndarray) -> None:
        self.measurements = measurements
        self.tags = tags
        self.keys = keys
        self.starts = starts
        self.timestamps = timestamps
        self.columns = columns
        self.line_numbers = line_numbers
        self._layout = None

    def layout(self) -> tuple:
        """``(the measurement when all series share one, else None; ((field, type, has mask),
        ...))``, computed once (a frame is not changed after it is built)."""
        lay = self._layout
        if lay is None:
            ms = self.measurements
            m0 = ms[0] if len(ms) else None
            uniform = len(ms) <= 1 or ms.count(m0) == len(ms)
            lay = self._layout = (m0 if uniform else None,
                                  tuple((n, int(c.type), c.mask is not None) for n, c in self.columns.items()))
        return lay

    def __len__(self) -> int:
        return len(self.timestamps)

    @property
    def series_count(self) -> int:
        return len(self.keys)

    def counts(self) -> np.ndarray:
        """Rows per series (int64)."""
        return np.diff(self.starts)

    def row_series(self) -> np.ndarray:
        """For every row, the index of its series in this frame."""
        return np.repeat(np.arange(len(self.keys), dtype=np.int64), self.counts())

    def series_rows(self) -> list[SeriesRows]:
        """One :class:`SeriesRows` per series (the per-series form; costs objects per series)."""
        out = []
        st = self.starts.tolist()
        cols = list(self.columns.items())
        ts, ln = self.timestamps, self.line_numbers
        for i, (m, tags) in enumerate(zip(self.measurements, self.tags)):
            a, b = st[i], st[i + 1]
            sc = {}
            for name, c in cols:
                if c.mask is None:
                    sc[name] = Column(c.type, c.values[a:b])
                else:
                    mk = c.mask[a:b]
                    if mk.any():
                        sc[name] = Column(c.type, c.values[a:b], None if mk.all() else mk)
            out.append(SeriesRows(m, tags, ts[a:b], sc, ln[a:b]))
        return out

    def take_rows(self, keep: np.ndarray) -> "Frame | None":
        """The frame without the rows where boolean ``keep`` is False (None when none is left)."""
        if keep.all():
            return self
        if not keep.any():
            return None
        counts = np.add.reduceat(keep.astype(np.int64), self.starts[:-1]) if len(self.keys) else \
            np.zeros(0, np.int64)
        alive = np.flatnonzero(counts > 0)
        starts = np.zeros(len(alive) + 1, dtype=np.int64)
        np.cumsum(counts[alive], out=starts[1:])
        al = alive.tolist()
        cols = {}
        for name, c in self.columns.items():
            mk = None if c.mask is None else c.mask[keep]
            if mk is not None and mk.all():
                mk = None
            cols[name] = Column(c.type, c.values[keep], mk)
        return Frame([self.measurements[i] for i in al], [self.tags[i] for i in al],
                     [self.keys[i] for i in al], starts, self.timestamps[keep], cols,
                     self.line_numbers[keep])


def frames_of_series(series) -> tuple[Frame, ...]:
    """Group :class:`SeriesRows` into frames: one per (measurement, column names, types, masks)."""
    groups: dict[tuple, list] = {}
    for s in series:
        if not len(s):
            continue
        sig = (s.measurement, tuple((n, int(c.type), c.mask is not None) for n, c in s.columns.items()))
        groups.setdefault(sig, []).append(s)
    out = []
    for (m, sig), group in groups.items():
        counts = np.fromiter((len(s) for s in group), np.int64, len(group))
        starts = np.zeros(len(group) + 1, dtype=np.int64)
        np.cumsum(counts, out=starts[1:])
        cols = {}
        for name, ftype, has_mask in sig:
            ft = FieldType(ftype)
            vals = [np.asarray(s.columns[name].values) for s in group]
            values = np.concatenate(vals) if len(vals) > 1 else vals[0]
            if values.dtype != ft.dtype:
                values = values.astype(ft.dtype)
            mask = None
            if has_mask:
                mask = np.concatenate([s.columns[name].mask for s in group])
                if mask.all():
                    mask = None
            cols[name] = Column(ft, values, mask)
        ts = np.concatenate([s.timestamps for s in group]) if len(group) > 1 else group[0].timestamps
        ln = np.concatenate([s.line_numbers for s in group]) if len(group) > 1 else group[0].line_numbers
        out.append(Frame([m] * len(group), [s.tags for s in group], [s.key for s in group], starts,
                         np.asarray(ts, dtype=np.int64), cols, ln))
    return tuple(out)


class WriteBatch:
    """The parser's output for one request body: columnar series and per-line errors.

    Two equivalent forms, each derived from the other on first use: ``series`` (one
    :class:`SeriesRows` per series) and ``frames`` (:class:`Frame`, columnar across series: the
    write path's form). The parser builds frames for ordinary bodies, so a write of a few hundred
    one-row series never creates per-series objects.
    """

    __slots__ = ("_series", "_frames", "errors")

    def __init__(self, series=None, errors=(), *, frames=None) -> None:
        if series is None and frames is None:
            series = ()
        self._series = None if series is None else tuple(series)
        self._frames = None if frames is None else tuple(f for f in frames if len(f))
        self.errors = tuple(errors)

    @classmethod
    def from_frames(cls, frames, errors=()) -> "WriteBatch":
        return cls(None, errors, frames=frames)

    @property
    def series(self) -> tuple[SeriesRows, ...]:
        if self._series is None:
            out = []
            for f in self._frames:
                out.extend(f.series_rows())
            if len(self._frames) > 1:  # input order of the first line, as the parser gives it
                out.sort(key=lambda s: int(s.line_numbers[0]) if len(s) else 0)
            self._series = tuple(out)
        return self._series

    @property
    def frames(self) -> tuple[Frame, ...]:
        if self._frames is None:
            self._frames = frames_of_series(self._series)
        return self._frames

    @property
    def has_frames(self) -> bool:
        """Whether the columnar form exists already (no conversion needed)."""
        return self._frames is not None

    @property
    def series_count(self) -> int:
        if self._series is not None:
            return len(self._series)
        return sum(f.series_count for f in self._frames)

    @property
    def point_count(self) -> int:
        if self._frames is not None:
            return sum(len(f) for f in self._frames)
        return sum(len(s) for s in self._series)

    @property
    def value_count(self) -> int:
        n = 0
        if self._frames is not None:
            for f in self._frames:
                for c in f.columns.values():
                    n += len(c.values) if c.mask is None else int(c.mask.sum())
            return n
        for s in self._series:
            for c in s.columns.values():
                n += len(c.values) if c.mask is None else int(c.mask.sum())
        return n

    def __repr__(self) -> str:
        return f"WriteBatch(points={self.point_count}, errors={len(self.errors)})"


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
