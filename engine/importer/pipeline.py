"""The reading side of an import: files -> normalised, deduplicated, prepared units of work.

:func:`units` walks the input files from a (file, position) start, reads each in batches,
normalises them (rusts.importer.mapping), drops rows already in the database (``keys``) and
calls ``prepare`` on each unit, so that the writer (REST or direct) gets its payload ready-made:
an Arrow IPC body, a line-protocol body or a :class:`~rusts.model.WriteBatch`. It runs in a
worker thread in both modes, overlapping reading with writing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import attrs

from rusts.importer.mapping import Normalised, Plan, make_plan, normalise
from rusts.importer.sources import open_source


@attrs.frozen
class Options:
    kind: str  # parquet | csv | lp
    files: tuple[str, ...]
    measurement: str = "imported"
    timestamp_column: str = "timestamp"
    tags: tuple[str, ...] = ()
    skip: tuple[str, ...] = ()
    batch_size: int = 10_000
    int_unit: str = "ns"
    delimiter: str = ","

    def plan(self, schema) -> Plan:
        return make_plan(schema, measurement=self.measurement, timestamp_column=self.timestamp_column,
                         tags=self.tags, skip=self.skip, int_unit=self.int_unit)


@attrs.define
class Unit:
    """One batch: where it ends in its file, how many source rows it covers, what was dropped."""

    file_index: int
    path: str
    position: int  # in the file, after this batch (rows, or bytes for line protocol)
    rows: int  # source rows (or lines) read
    first_row: int = 1  # 1-based row (line) number of the first one in its file
    norm: Normalised | None = None  # Arrow formats
    lp: bytes | None = None  # line-protocol files
    plan: Plan | None = None
    duplicates: int = 0
    payload: Any = None


def units(opts: Options, start_file: int = 0, start_pos: int = 0, keys=None,
          prepare: Callable[[Unit], Any] | None = None, plans: dict | None = None) -> Iterator[Unit]:
    """Every batch of every file from ``(start_file, start_pos)`` on."""
    for i, path in enumerate(opts.files):
        if i < start_file:
            continue
        skip = start_pos if i == start_file else 0
        src = open_source(opts.kind, path, opts.delimiter)
        if opts.kind == "lp":
            line = 1
            for chunk, n, pos in src.chunks(opts.batch_size, skip):
                u = Unit(i, path, pos, n, line, lp=chunk)
                line += n
                if prepare is not None:
                    u.payload = prepare(u)
                yield u
            continue
        plan = opts.plan(src.schema)
        if plans is not None:
            plans[path] = plan
        row = skip + 1
        for rb, pos in src.batches(opts.batch_size, skip):
            norm = normalise(rb, plan, row)
            row += rb.num_rows
            u = Unit(i, path, pos, rb.num_rows, row - rb.num_rows, norm=norm, plan=plan)
            if keys is not None and norm.batch.num_rows:
                u.norm, u.duplicates = keys.filter(norm)
            if prepare is not None:
                u.payload = prepare(u)
            yield u


def account(stats, u: Unit) -> None:
    """Count a unit's read, duplicate and client-side rejected rows."""
    stats.rows_read += u.rows
    stats.duplicates += u.duplicates
    if u.norm is not None:
        for reason, n in u.norm.rejected.items():
            stats.reject(reason, n)
