"""Counters, the progress line (stderr) and the final summary (stdout)."""

from __future__ import annotations

import json
import sys
import time
from collections import Counter

import attrs


@attrs.define
class Stats:
    """What an import did. ``rejected`` counts rows by reason; ``examples`` keeps the first few
    rejected rows as (file, row, reason) so the summary can point at them."""

    rows_read: int = 0
    points_written: int = 0
    values_written: int = 0
    duplicates: int = 0
    batches: int = 0
    rejected: Counter = attrs.Factory(Counter)
    examples: list = attrs.Factory(list)
    started: float = attrs.Factory(time.monotonic)
    resumed_rows: int = 0  # rows a previous run had committed (--resume)
    flush_secs: float = 0.0  # direct mode: the final flush to segments (part of the total time)

    def reject(self, reason: str, count: int, where: str | None = None) -> None:
        if count:
            self.rejected[reason] += count
            if where is not None and len(self.examples) < 5:
                self.examples.append(f"{where}: {reason}")

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())

    def elapsed(self) -> float:
        return max(time.monotonic() - self.started, 1e-9)

    def to_json(self, **extra) -> dict:
        el = self.elapsed()
        return {"rows_read": self.rows_read, "points_written": self.points_written,
                "values_written": self.values_written, "rows_skipped_duplicates": self.duplicates,
                "rows_rejected": self.rejected_total, "rejected_reasons": dict(self.rejected),
                "batches": self.batches, "seconds": round(el, 3),
                "rows_per_sec": round(self.rows_read / el, 1),
                "points_per_sec": round(self.points_written / el, 1),
                "values_per_sec": round(self.values_written / el, 1), "final_flush_secs": round(self.flush_secs, 3),
                **extra}


class Progress:
    """A progress line on stderr: redrawn in place on a terminal (rows, rows/s, ETA), a plain line
    every ``interval`` seconds otherwise; silent with ``quiet``."""

    def __init__(self, stats: Stats, total_rows: int | None, *, quiet: bool = False,
                 interval: float | None = None, stream=None) -> None:
        self.stats = stats
        self.total = total_rows
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.interval = interval if interval is not None else (0.2 if self.tty else 5.0)
        self._last = time.monotonic()
        self._drawn = False

    def line(self) -> str:
        s = self.stats
        el = s.elapsed()
        rate = s.rows_read / el
        parts = [f"{s.rows_read:,} rows"]
        if self.total:
            parts[0] += f" of {self.total:,} ({100.0 * (s.rows_read + s.resumed_rows) / self.total:.1f}%)"
        parts.append(f"{s.points_written:,} written")
        if s.duplicates:
            parts.append(f"{s.duplicates:,} duplicates skipped")
        if s.rejected_total:
            parts.append(f"{s.rejected_total:,} rejected")
        parts.append(f"{rate:,.0f} rows/s")
        if self.total and rate > 0:
            left = max(self.total - s.rows_read - s.resumed_rows, 0) / rate
            parts.append(f"ETA {int(left) // 60}:{int(left) % 60:02d}")
        return ", ".join(parts)

    def update(self, force: bool = False) -> None:
        if self.quiet:
            return
        now = time.monotonic()
        if not force and now - self._last < self.interval:
            return
        self._last = now
        if self.tty:
            self.stream.write("\r\x1b[2K" + self.line())
            self._drawn = True
        else:
            self.stream.write("progress: " + self.line() + "\n")
        self.stream.flush()

    def done(self) -> None:
        if self.quiet:
            return
        if self.tty and self._drawn:
            self.stream.write("\r\x1b[2K" + self.line() + "\n")
            self.stream.flush()


def print_summary(stats: Stats, *, title: str, target: str, as_json: bool, out=None, **extra) -> None:
    out = out or sys.stdout
    if as_json:
        out.write(json.dumps(stats.to_json(target=target, **extra)) + "\n")
        return
    el = stats.elapsed()
    lines = [f"{title}:", f"  Target: {target}", f"  Rows read: {stats.rows_read:,}",
             f"  Points written: {stats.points_written:,}", f"  Values written: {stats.values_written:,}",
             f"  Rows skipped (duplicates): {stats.duplicates:,}",
             f"  Rows rejected: {stats.rejected_total:,}"]
    for reason, n in stats.rejected.most_common():
        lines.append(f"    {n:,} x {reason}")
    for ex in stats.examples:
        lines.append(f"    e.g. {ex}")
    if stats.resumed_rows:
        lines.append(f"  Rows committed by an earlier run (resumed): {stats.resumed_rows:,}")
    for k, v in extra.items():
        lines.append(f"  {k.replace('_', ' ').capitalize()}: {v}")
    if stats.flush_secs:
        lines.append(f"  Final flush to segments: {stats.flush_secs:.2f}s (included in the total time)")
    lines += [f"  Batches: {stats.batches:,}", f"  Total time: {el:.2f}s",
              f"  Throughput: {stats.rows_read / el:,.0f} rows/s, {stats.values_written / el:,.0f} values/s"]
    out.write("\n".join(lines) + "\n")
    out.flush()
