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

from rusts.model import Column, FieldType, Frame, LineError, SeriesRows, WriteBatch, series_key

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


class Block:
    """Fast-path rows of one field layout, sorted by series (segments ``starts[i]:ends[i]``).

    ``keys[i]`` is the (measurement, tags) of segment i; ``values[j]`` is the column of field
    ``names[j]`` (type ``types[j]``) over all rows; every row has every field.
    """

    __slots__ = ("names", "types", "values", "timestamps", "line_numbers", "starts", "ends",
                 "keys")

    def __init__(self, names, types, values, timestamps, line_numbers, starts, ends, keys):
        self.names = names
        self.types = types
        self.values = values
        self.timestamps = timestamps
        self.line_numbers = line_numbers
        self.starts = starts
        self.ends = ends
        self.keys = keys

    def piece(self, i: int) -> Piece:
        s, e = self.starts[i], self.ends[i]
        meas, tags = self.keys[i]
        cols = {n: (t, v[s:e], None) for n, t, v in zip(self.names, self.types, self.values)}
        return Piece(meas, tags, self.timestamps[s:e], self.line_numbers[s:e], cols)

    def series_rows(self, i: int) -> SeriesRows:
        s, e = self.starts[i], self.ends[i]
        meas, tags = self.keys[i]
        cols = {n: Column(t, v[s:e]) for n, t, v in zip(self.names, self.types, self.values)}
        return SeriesRows(meas, tags, self.timestamps[s:e], cols, self.line_numbers[s:e])

    def frame(self) -> Frame:
        """The block as a :class:`~rusts.model.Frame` (no per-series objects)."""
        keys = self.keys
        starts = np.empty(len(keys) + 1, dtype=np.int64)
        starts[:-1] = self.starts
        starts[-1] = len(self.timestamps)
        cols = {n: Column(t, v) for n, t, v in zip(self.names, self.types, self.values)}
        return Frame([k[0] for k in keys], [k[1] for k in keys],
                     [series_key(m, t) for m, t in keys], starts, self.timestamps, cols,
                     self.line_numbers)

    def field_types(self):
        """(measurement, field, type) triples present in the block."""
        for meas in {k[0] for k in self.keys}:
            for name, ftype in zip(self.names, self.types):
                yield meas, name, ftype


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


def assemble(pieces: list[Piece], blocks: list[Block], errors: list[LineError], registry: dict,
             line_text: Callable[[int], str]) -> WriteBatch:
    """Resolve type conflicts, merge rows per series (input order) and build the batch."""
    seen: dict[tuple[str, str], set] = {}
    for b in blocks:
        for meas, name, ftype in b.field_types():
            seen.setdefault((meas, name), set()).add(ftype)
    for p in pieces:
        for name, (ftype, _, _) in p.columns.items():
            seen.setdefault((p.measurement, name), set()).add(ftype)
    clash = any(len(types) > 1 or registry.get(mf, next(iter(types))) not in types
                for mf, types in seen.items())
    if clash:  # rare: resolve row by row on per-series pieces
        pieces = pieces + [b.piece(i) for b in blocks for i in range(len(b.keys))]
        blocks = []
        pieces = _resolve_conflicts(pieces, registry, line_text, errors)
    else:
        for mf, types in seen.items():
            registry.setdefault(mf, next(iter(types)))
        if not pieces and blocks:
            nkeys = sum(len(b.keys) for b in blocks)
            if len(blocks) == 1 or len({k for b in blocks for k in b.keys}) == nkeys:
                # every series in one block (one field layout): the columnar form as it is
                errors.sort(key=lambda e: e.line_number)
                return WriteBatch.from_frames([b.frame() for b in blocks], errors)
    by_series: dict[tuple, list] = {}
    for b in blocks:
        for i, key in enumerate(b.keys):
            by_series.setdefault(key, []).append((b, i))
    for p in pieces:
        by_series.setdefault((p.measurement, p.tags), []).append(p)
    out = []
    for group in by_series.values():
        if len(group) == 1 and isinstance(group[0], tuple):
            b, i = group[0]
            out.append((int(b.line_numbers[b.starts[i]]), b.series_rows(i)))
            continue
        group = [g[0].piece(g[1]) if isinstance(g, tuple) else g for g in group]
        out.append((min(int(p.line_numbers[0]) for p in group), _merge(group)))
    out.sort(key=lambda r: r[0])
    errors.sort(key=lambda e: e.line_number)
    return WriteBatch(series=tuple(r[1] for r in out), errors=tuple(errors))
