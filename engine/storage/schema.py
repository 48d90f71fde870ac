"""The schema registry: the type of every field of every measurement.

A field's type is fixed by the first write that contains it (as in InfluxDB). A later line that
sends the field with another type is rejected, alone: the other lines of the write are stored
and the client gets a partial-write error naming the line, e.g.
``field type conflict: input field "usage" on measurement "cpu" is type integer, already exists
as type float``.

:meth:`SchemaRegistry.check` works per (series, column), never per point: each column of a
:class:`~rusts.model.SeriesRows` has one type, so deciding a conflict is one dict lookup per
column; only the line numbers of the rejected rows are gathered, with numpy masks. Within one
batch, a field not yet registered takes the type of its earliest line (smallest line number), so
the result does not depend on the order in which the parser grouped series. Lines are dropped
whole (all their fields), because a point is written atomically or not at all.
Edge case, accepted: if the earliest line of a new field is itself rejected for a conflict on
another field, the lines that disagreed with it are rejected too and the field stays unregistered.

On disk: ``index_dir/schema.json``, ``{"version": 1, "crc32": 123, "measurements": {"cpu":
{"usage": "float"}}}`` (``crc32``: CRC-32 of the ``measurements`` object as canonical JSON, sorted
keys, no spaces; files without it are accepted), rewritten atomically (write a temp file, fsync, rename, fsync the directory) by
:meth:`SchemaRegistry.persist`. A missing file gives an empty registry with ``needs_rebuild``; an
unreadable one is renamed aside (``schema.json.corrupt``, never deleted), reported in
``problems`` and rebuilt by the engine with :meth:`SchemaRegistry.ensure` from segment columns.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import zlib
from collections.abc import Callable

import numpy as np

from rusts.errors import StorageError
from rusts.model import FieldType, LineError, SeriesRows, WriteBatch
from rusts.storage.fsutil import fsync_dir as _fsync_dir

log = logging.getLogger(__name__)

SCHEMA_NAME = "schema.json"
_TYPE_NAMES = {t: t.name.lower() for t in FieldType}
_NAME_TYPES = {name: t for t, name in _TYPE_NAMES.items()}


def type_name(ftype: FieldType) -> str:
    """The InfluxDB name of a field type: float, integer, unsigned, string, boolean."""
    return _TYPE_NAMES[FieldType(ftype)]


def conflict_message(field: str, measurement: str, got: FieldType, have: FieldType) -> str:
    return (f'field type conflict: input field "{field}" on measurement "{measurement}" is type '
            f'{type_name(got)}, already exists as type {type_name(have)}')


class SchemaRegistry:
    """Measurement -> field -> :class:`FieldType`, persisted as ``schema.json``.

    Attributes:
        problems: Damage found on open, or type disagreements seen by :meth:`ensure`.
        needs_rebuild: The file was missing or damaged; call :meth:`ensure` from segments.
    """

    def __init__(self, index_dir: str | os.PathLike | None = None) -> None:
        self.index_dir = None if index_dir is None else os.fspath(index_dir)
        self.problems: list[str] = []
        self.needs_rebuild = False
        self._fields: dict[str, dict[str, FieldType]] = {}
        self._dirty = False
        self.generation = 0  # bumped by every change (catalog caches key on it)
        self._lock = threading.Lock()
        self._limits = None

    @property
    def path(self) -> str | None:
        return None if self.index_dir is None else os.path.join(self.index_dir, SCHEMA_NAME)

    @classmethod
    def open(cls, index_dir: str | os.PathLike) -> "SchemaRegistry":
        """Load ``index_dir/schema.json`` (missing -> empty registry with ``needs_rebuild``).

        Raises:
            StorageError: The file exists but cannot be read or moved aside.
        """
        reg = cls(index_dir)
        path = reg.path
        try:
            with open(path, "rb") as fh:
                raw = fh.read()
        except FileNotFoundError:
            reg.needs_rebuild = True
            return reg
        except OSError as exc:
            raise StorageError(f"cannot read schema {path}: {exc}") from exc
        try:
            reg._fields = _decode(raw)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            aside = path + ".corrupt"
            try:
                os.replace(path, aside)
            except OSError as exc2:
                raise StorageError(f"cannot move damaged schema {path} aside: {exc2}") from exc2
            reg.problems.append(f"{path}: unreadable ({exc}); moved to {aside}")
            reg.needs_rebuild = True
            log.warning("schema: %s", reg.problems[-1])
        return reg

    # ------------------------------------------------------------------ queries

    def measurements(self) -> list[str]:
        """Measurements with at least one field, sorted."""
        return sorted(m for m, f in self._fields.items() if f)

    def fields(self, measurement: str) -> dict[str, FieldType]:
        """A copy of ``field -> type`` for ``measurement`` (empty if unknown)."""
        return dict(self._fields.get(measurement, {}))

    def field_type(self, measurement: str, field: str) -> FieldType | None:
        return self._fields.get(measurement, {}).get(field)

    # ------------------------------------------------------------------ mutation

    def ensure(self, measurement: str, field: str, ftype: FieldType) -> None:
        """Register a field seen in a segment (rebuild path). A different existing type wins and
        the disagreement is listed in ``problems``."""
        ftype = FieldType(ftype)
        fields = self._fields.setdefault(measurement, {})
        have = fields.get(field)
        if have is None:
            fields[field] = ftype
            self._dirty = True
            self.generation += 1
        elif have != ftype:
            self.problems.append(f'field "{field}" on measurement "{measurement}" is '
                                 f"{type_name(have)} but a segment holds {type_name(ftype)}")

    def drop_measurement(self, measurement: str) -> None:
        """Forget ``measurement``'s fields and persist at once."""
        if self._fields.pop(measurement, None) is not None:
            self._dirty = True
            self.generation += 1
            self.persist()

    def check(self, batch: WriteBatch,
              original_line: Callable[[int], str] | None = None) -> WriteBatch:
        """Drop the lines whose field types conflict; register the new fields of the rest.

        Args:
            batch: The parser's output.
            original_line: Returns the text of a 1-based line, for the error report.

        Returns:
            The batch without the conflicting lines, its errors extended with one
            :class:`LineError` per rejected line (sorted by line number).
        """
        if self._limits is not None:
            batch = self._limit_series(batch, original_line)
        if batch.has_frames:
            out = self._check_frames(batch)
            if out is not None:
                return out
        # One entry per (series, column) that has at least one value.
        entries: list[tuple[int, str, FieldType, np.ndarray]] = []
        first_line: dict[tuple[str, str], tuple[int, FieldType]] = {}
        for si, s in enumerate(batch.series):
            for name, col in s.columns.items():
                lines = s.line_numbers if col.mask is None else s.line_numbers[col.mask]
                if not len(lines):
                    continue
                entries.append((si, name, col.type, lines))
                key = (s.measurement, name)
                if self.field_type(s.measurement, name) is None:
                    first = int(lines.min())
                    prev = first_line.get(key)
                    if prev is None or first < prev[0]:
                        first_line[key] = (first, col.type)

        bad_chunks: list[np.ndarray] = []
        messages: dict[int, str] = {}
        for si, name, ftype, lines in entries:
            m = batch.series[si].measurement
            have = self.field_type(m, name)
            if have is None:
                have = first_line[(m, name)][1]
            if have == ftype:
                continue
            bad_chunks.append(lines)
            msg = conflict_message(name, m, ftype, have)
            for ln in lines.tolist():  # per rejected line: each needs its own error anyway
                if ln not in messages:
                    messages[ln] = msg

        if not bad_chunks:
            self._register(batch.series)
            return batch

        bad = np.unique(np.concatenate(bad_chunks))
        kept: list[SeriesRows] = []
        for s in batch.series:
            drop = np.isin(s.line_numbers, bad)
            if not drop.any():
                kept.append(s)
            elif not drop.all():
                kept.append(s.take(np.flatnonzero(~drop)))
        self._register(kept)
        errors = list(batch.errors)
        errors.extend(LineError(ln, original_line(ln) if original_line else "", messages[ln])
                      for ln in bad.tolist())
        errors.sort(key=lambda e: e.line_number)
        return WriteBatch(tuple(kept), tuple(errors))

    def limit_series(self, index, max_series: int | None, max_per_measurement: int | None) -> None:
        """Make :meth:`check` reject the lines that would create series beyond ``max_series`` in
        the database or ``max_per_measurement`` in one measurement (``storage.max_series`` and
        ``storage.max_series_per_measurement``; None = no limit), counted in ``index``."""
        self._limits = None if max_series is None and max_per_measurement is None else (
            index, max_series, max_per_measurement)

    def _limit_series(self, batch: WriteBatch, original_line) -> WriteBatch:
        """Partial-write semantics: the lines of new series past a limit are rejected with an error
        naming the limit; every other line stays. Cheap while far from the limits (a bound on the
        batch's series count); exact (one dict lookup per series key) when close."""
        index, max_all, max_per = self._limits
        if batch.has_frames:
            n = sum(len(f.keys) for f in batch.frames)
            meas = {m for f in batch.frames for m in set(f.measurements)}
        else:
            n = len(batch.series)
            meas = {s.measurement for s in batch.series}
        if (max_all is None or len(index) + n <= max_all) and (
                max_per is None or all(index.measurement_series_count(m) + n <= max_per for m in meas)):
            return batch
        series = batch.series
        get = index.get
        new = [(int(s.line_numbers.min()), i) for i, s in enumerate(series) if get(s.key) is None]
        total = len(index)
        per: dict[str, int] = {}
        rejected: dict[int, str] = {}
        for _, i in sorted(new):
            m = series[i].measurement
            have = per.get(m)
            if have is None:
                have = per[m] = index.measurement_series_count(m)
            if max_all is not None and total >= max_all:
                rejected[i] = (f"series limit reached: the database has {total} series "
                               f"(storage.max_series = {max_all}); this line would create another")
            elif max_per is not None and have >= max_per:
                rejected[i] = (f'series limit reached: measurement "{m}" has {have} series '
                               f"(storage.max_series_per_measurement = {max_per}); this line would "
                               f"create another")
            else:
                total += 1
                per[m] = have + 1
        if not rejected:
            return batch
        errors = list(batch.errors)
        for i, msg in rejected.items():
            errors.extend(LineError(ln, original_line(ln) if original_line else "", msg)
                          for ln in series[i].line_numbers.tolist())
        errors.sort(key=lambda e: e.line_number)
        kept = tuple(s for i, s in enumerate(series) if i not in rejected)
        return WriteBatch(kept, tuple(errors))

    def _check_frames(self, batch: WriteBatch) -> WriteBatch | None:
        """The columnar form's check: one lookup per (frame, measurement, column), no step per
        series. Returns None when a line must be rejected (the per-series check then decides
        which, with its messages)."""
        pending: dict[tuple[str, str], tuple[int, FieldType]] = {}  # new field -> (first line, type)
        for f in batch.frames:
            ms = set(f.measurements) if len(f.measurements) > 1 else f.measurements
            for m in ms:
                have = self._fields.get(m)
                for name, col in f.columns.items():
                    t = None if have is None else have.get(name)
                    if t is None:
                        if col.mask is not None:
                            return None  # rare: let the general path find the first line
                        if len(ms) > 1:
                            rows = np.flatnonzero(np.repeat(np.asarray(f.measurements) == m,
                                                            f.counts()))
                            first = int(f.line_numbers[rows].min())
                        else:
                            first = int(f.line_numbers.min())
                        prev = pending.get((m, name))
                        if prev is not None and prev[1] != col.type:
                            return None
                        if prev is None or first < prev[0]:
                            pending[(m, name)] = (first, col.type)
                    elif t != col.type:
                        return None
        for (m, name), (_, ftype) in pending.items():
            fields = self._fields.get(m)
            if fields is None:
                fields = self._fields[m] = {}
            fields[name] = ftype
            self._dirty = True
            self.generation += 1
        return batch

    def _register(self, series) -> None:
        for s in series:
            fields = self._fields.get(s.measurement)
            if fields is None:
                fields = self._fields[s.measurement] = {}
            for name, col in s.columns.items():
                if name not in fields and (col.mask is None or col.mask.any()):
                    fields[name] = col.type
                    self._dirty = True
                    self.generation += 1

    # ------------------------------------------------------------------ persistence

    @property
    def dirty(self) -> bool:
        """True when fields were registered since the last :meth:`persist`."""
        return self._dirty

    def persist(self) -> None:
        """Write ``schema.json`` atomically if anything changed.

        Raises:
            StorageError: The file could not be written.
        """
        self.write_snapshot(self.take_snapshot())

    def take_snapshot(self) -> dict | None:
        """What :meth:`write_snapshot` writes (None: nothing changed). Take it in the thread that
        registers fields (the event loop); the file write may then run in a worker thread."""
        if self.index_dir is None:
            self._dirty = False
            return None
        with self._lock:
            if not self._dirty:
                return None
            self._dirty = False
            return {m: {f: type_name(t) for f, t in sorted(fields.items())}
                    for m, fields in sorted(self._fields.items()) if fields}

    def write_snapshot(self, snapshot: dict | None) -> None:
        """Write a :meth:`take_snapshot` result atomically (no-op for None).

        Raises:
            StorageError: The file could not be written (the registry is marked dirty again).
        """
        if snapshot is None or self.index_dir is None:
            return
        with self._lock:
            path = self.path
            tmp = path + ".tmp"
            try:
                os.makedirs(self.index_dir, exist_ok=True)
                data = json.dumps({"version": 1, "crc32": _crc(snapshot), "measurements": snapshot},
                                  indent=1, ensure_ascii=False).encode("utf-8")
                with open(tmp, "wb") as fh:
                    fh.write(data)
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, path)
                _fsync_dir(self.index_dir)
            except OSError as exc:
                self._dirty = True
                self.generation += 1
                raise StorageError(f"cannot persist schema {path}: {exc}") from exc


def _crc(measurements: dict) -> int:
    """CRC-32 of the canonical JSON of the ``measurements`` object (key order, spacing fixed)."""
    text = json.dumps(measurements, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return zlib.crc32(text.encode("utf-8"))


def _decode(raw: bytes) -> dict[str, dict[str, FieldType]]:
    doc = json.loads(raw.decode("utf-8"))
    if not isinstance(doc, dict) or doc.get("version") != 1:
        raise ValueError("not a version 1 schema file")
    if "crc32" in doc and doc["crc32"] != _crc(doc["measurements"]):  # older files have none
        raise ValueError("schema checksum mismatch")
    out: dict[str, dict[str, FieldType]] = {}
    for m, fields in doc["measurements"].items():
        out[str(m)] = {str(f): _NAME_TYPES[t] for f, t in fields.items()}
    return out



__all__ = ["SchemaRegistry", "conflict_message", "type_name", "SCHEMA_NAME"]
