"""Intermediate columnar pieces shared by the fast and the exact paths.

A :class:`Piece` holds rows of one series (measurement + sorted tags) whose fields all have one
type per field. The fast path makes one piece per (series, field layout); the exact path one
per (series, field-type signature). :func:`assemble` resolves field type conflicts in line
order, merges the pieces of each series back into input order and builds the
:class:`~rusts.model.WriteBatch`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from rusts.model import Column, FieldType, LineError, SeriesRows, WriteBatch

_TYPE_NAMES = {
    FieldType.FLOAT: "float",
    FieldType.INTEGER: "integer",
    FieldType.UNSIGNED: "unsigned",
    FieldType.STRING: "string",
    FieldType.BOOLEAN: "boolean",
}


class Piece:
    """Rows of one series. ``columns``: field -> (type, values, mask or None)."""

    __slots__ = ("measurement", "tags", "timestamps", "line_numbers", "columns")

    def __init__(self, measurement: str, tags: tuple, timestamps: np.ndarray,
                 line_numbers: np.ndarray, columns: dict):
        self.measurement = measurement
        self.tags = tags
        self.timestamps = timestamps
        self.line_numbers = line_numbers
        self.columns = columns

    def take(self, index: np.ndarray) -> "Piece":
        cols = {}
        for name, (ftype, values, mask) in self.columns.items():
            m = None if mask is None else mask[index]
            if m is not None:
                if not m.any():
                    continue
                if m.all():
                    m = None
            cols[name] = (ftype, values[index], m)
        return Piece(self.measurement, self.tags, self.timestamps[index],
                     self.line_numbers[index], cols)


def conflict_message(field: str, measurement: str, new: FieldType, old: FieldType) -> str:
    return (f'field type conflict: input field "{field}" on measurement "{measurement}" is type '
            f"{_TYPE_NAMES[new]}, already exists as type {_TYPE_NAMES[old]}")


def _resolve_conflicts(pieces: list[Piece], registry: dict, line_text: Callable[[int], str],
                       errors: list[LineError]) -> list[Piece]:
    """Reject, in line order, rows whose field type differs from the first type seen."""
    seen: dict[tuple[str, str], set] = {}
    for p in pieces:
        for name, (ftype, _, _) in p.columns.items():
            seen.setdefault((p.measurement, name), set()).add(ftype)
    conflicting = set()
    for mf, types in seen.items():
        old = registry.get(mf)
        if len(types) > 1 or (old is not None and old not in types):
            conflicting.add(mf)
    if conflicting:
        # rows that carry a conflicting field, in line order: (line, piece, row)
        events = []
        for pi, p in enumerate(pieces):
            rows = set()
            for name, (_, _, mask) in p.columns.items():
                if (p.measurement, name) in conflicting:
                    idx = np.arange(len(p.line_numbers)) if mask is None else np.flatnonzero(mask)
                    rows.update(idx.tolist())
            for r in rows:
                events.append((int(p.line_numbers[r]), pi, r))
        events.sort()
        rejected: dict[int, list[int]] = {}
        for line, pi, r in events:
            p = pieces[pi]
            reason = None
            for name, (ftype, _, mask) in p.columns.items():
                mf = (p.measurement, name)
                if mf not in conflicting or (mask is not None and not mask[r]):
                    continue
                old = registry.get(mf)
                if old is not None and old != ftype:
                    reason = conflict_message(name, p.measurement, ftype, old)
                    break
            if reason is not None:
                rejected.setdefault(pi, []).append(r)
                errors.append(LineError(line, line_text(line), reason))
                continue
            for name, (ftype, _, mask) in p.columns.items():
                mf = (p.measurement, name)
                if mf in conflicting and (mask is None or mask[r]):
                    registry.setdefault(mf, ftype)
        if rejected:
            kept = []
            for pi, p in enumerate(pieces):
                bad = rejected.get(pi)
                if bad:
                    keep = np.ones(len(p.line_numbers), dtype=bool)
                    keep[bad] = False
                    if not keep.any():
                        continue
                    p = p.take(np.flatnonzero(keep))
                kept.append(p)
            pieces = kept
    for p in pieces:
        for name, (ftype, _, _) in p.columns.items():
            registry.setdefault((p.measurement, name), ftype)
    return pieces


def _merge(group: list[Piece]) -> SeriesRows:
    first = group[0]
    if len(group) == 1:
        cols = {name: Column(t, v, m) for name, (t, v, m) in first.columns.items()}
        return SeriesRows(first.measurement, first.tags, first.timestamps, cols,
                          first.line_numbers)
    lines = np.concatenate([p.line_numbers for p in group])
    order = np.argsort(lines, kind="stable")
    ts = np.concatenate([p.timestamps for p in group])[order]
    sizes = [len(p.line_numbers) for p in group]
    total = sum(sizes)
    starts = np.cumsum([0] + sizes[:-1])
    names: dict[str, FieldType] = {}
    for p in group:
        for name, (t, _, _) in p.columns.items():
            names.setdefault(name, t)
    cols = {}
    for name, ftype in names.items():
        values = np.zeros(total, dtype=ftype.dtype) if ftype != FieldType.STRING else \
            np.full(total, "", dtype=object)
        mask = np.zeros(total, dtype=bool)
        for p, s, n in zip(group, starts, sizes):
            col = p.columns.get(name)
            if col is None:
                continue
            _, v, m = col
            if m is None:
                values[s:s + n] = v
                mask[s:s + n] = True
            else:
                values[s:s + n][m] = v[m]
                mask[s:s + n] = m
        values = values[order]
        mask = mask[order]
        cols[name] = Column(ftype, values, None if mask.all() else mask)
    return SeriesRows(first.measurement, first.tags, ts, cols, lines[order])


def assemble(pieces: list[Piece], errors: list[LineError], registry: dict,
             line_text: Callable[[int], str]) -> WriteBatch:
    """Resolve type conflicts, merge pieces per series (input order) and build the batch."""
    pieces = _resolve_conflicts(pieces, registry, line_text, errors)
    by_series: dict[tuple, list[Piece]] = {}
    for p in pieces:
        by_series.setdefault((p.measurement, p.tags), []).append(p)
    groups = sorted(by_series.values(), key=lambda g: min(int(p.line_numbers[0]) for p in g))
    series = tuple(_merge(g) for g in groups)
    errors.sort(key=lambda e: e.line_number)
    return WriteBatch(series=series, errors=tuple(errors))
