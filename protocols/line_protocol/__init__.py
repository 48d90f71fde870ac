"""InfluxDB line protocol parser: request body -> columnar :class:`~rusts.model.WriteBatch`.

Semantics follow InfluxDB 1.x (``models.ParsePointsWithPrecision``, master-1.x, with unsigned
integers enabled); ``docs/line_protocol.md`` lists every choice where the reference parsers
disagree. A bad line becomes a :class:`~rusts.model.LineError` and every good line is still
returned (partial write).

Design (sans-I/O, no Python loop per point on the hot path):

* ``_lp_fast`` handles ordinary lines with Arrow C++ kernels: split, dictionary-encode the
  series keys and field layouts, cast whole value columns at once.
* ``_lp_exact`` is a byte-by-byte port of 1.x's scanner. It handles whatever the fast path
  declines (escapes, quotes with spaces, odd whitespace, errors) and reports 1.x's messages.
* ``_lp_pieces`` resolves field type conflicts in line order (the first type seen for a
  measurement+field wins, later lines with another type are rejected whole), merges pieces of
  a series back into input order and builds one :class:`~rusts.model.SeriesRows` per series.

:class:`LineProtocolParser` is the incremental form: it cuts the stream only after a logical
line is complete (a LF inside a quoted string does not end a line) and carries line numbers and
the field types already seen across :meth:`~LineProtocolParser.feed` calls, so feeding a body
in any pieces gives the same rows and errors as :func:`parse`.
"""

from __future__ import annotations

import logging
import re
import time
from types import MappingProxyType

import numpy as np

from rusts.errors import ProtocolError
from rusts.model import FieldType, LineError, WriteBatch
from rusts.protocols.line_protocol import exact as ex
from rusts.protocols.line_protocol import fast
from rusts.protocols.line_protocol.pieces import Piece, assemble

__all__ = ["PRECISIONS", "LineProtocolParser", "line_getter", "parse"]

_log = logging.getLogger(__name__)
_CONTENT = re.compile(rb"[^ \t\x00\n]")

PRECISIONS = MappingProxyType({
    "ns": 1, "n": 1,
    "us": 1_000, "u": 1_000,
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
})
"""Precision name -> nanoseconds per unit."""


def line_getter(body: bytes):
    """``original_line(n)``: line ``n`` (1-based) of ``body``, for error reports (the body is
    split only when a report asks)."""
    lines = None

    def original_line(n: int) -> str:
        nonlocal lines
        if lines is None:
            lines = body.split(b"\n")
        return lines[n - 1].decode("utf-8", "replace").rstrip("\r") if 0 < n <= len(lines) else ""

    return original_line


def _multiplier(precision: str) -> int:
    try:
        return PRECISIONS[precision]
    except (KeyError, TypeError):
        raise ProtocolError(f"invalid precision {precision!r}: expected one of "
                            f"{', '.join(PRECISIONS)}", precision=precision) from None


def _now(multiplier: int) -> int:
    now = time.time_ns()
    return now - now % multiplier  # 1.x truncates the server time to the precision


MAX_LINE_BYTES = 1 << 20
"""Default longest line (``server.max_line_bytes``); longer lines are rejected, quoted in part."""
QUOTE_BYTES = 200
"""How much of a too-long line its error quotes."""


def parse(body: bytes, *, precision: str = "ns", default_time: int | None = None,
          max_line_bytes: int | None = MAX_LINE_BYTES) -> WriteBatch:
    """Parse a whole line protocol request body.

    Args:
        body: The request body (bytes-like).
        precision: Unit of the timestamps in ``body``; a key of :data:`PRECISIONS`.
        default_time: Nanoseconds given to lines without a timestamp. None means the current
            time (read once), truncated to ``precision``.
        max_line_bytes: Longer lines are rejected (a LineError quoting their first 200 bytes);
            None: no limit.

    Returns:
        One SeriesRows per distinct series, plus a LineError per rejected line.

    Raises:
        ProtocolError: ``precision`` is unknown.
    """
    mult = _multiplier(precision)
    if default_time is None:
        default_time = _now(mult)
    return _parse_body(bytes(body), mult, int(default_time), 1, {}, max_line_bytes=max_line_bytes)


class LineProtocolParser:
    """Incremental parser (h11 style): feed chunks, get batches of the complete lines.

    Args:
        precision: As for :func:`parse`.
        default_time: As for :func:`parse`; when None the current time is read once, here.

    Raises:
        ProtocolError: ``precision`` is unknown.
    """

    def __init__(self, *, precision: str = "ns", default_time: int | None = None,
                 max_line_bytes: int | None = MAX_LINE_BYTES) -> None:
        self._max_line = max_line_bytes
        self._mult = _multiplier(precision)
        self._default = _now(self._mult) if default_time is None else int(default_time)
        self._buf = bytearray()
        self._line = 1
        self._registry: dict = {}
        self._finished = False

    def feed(self, data: bytes) -> WriteBatch:
        """Add ``data``; return the batch of every logical line completed so far."""
        if self._finished:
            raise ProtocolError("feed() after finish()")
        if not data:
            return WriteBatch(())
        if not isinstance(data, bytes):
            data = bytes(data)  # bytearray, memoryview
        self._buf += data
        if b"\n" not in data:
            return WriteBatch(())
        buf = bytes(self._buf)
        cut = _complete_prefix(buf)
        if cut == 0:
            return WriteBatch(())
        del self._buf[:cut]
        return self._parse(buf[:cut])

    def finish(self) -> WriteBatch:
        """End of input: parse what remains (a last line without a trailing LF)."""
        self._finished = True
        buf = bytes(self._buf)
        self._buf.clear()
        return self._parse(buf) if buf else WriteBatch(())

    def _parse(self, chunk: bytes) -> WriteBatch:
        batch = _parse_body(chunk, self._mult, self._default, self._line, self._registry,
                            max_line_bytes=self._max_line)
        self._line += chunk.count(b"\n")
        return batch


# ------------------------------------------------------------------------------ driver


def _logical_lines(body: bytes, lines, starts: np.ndarray):
    """Find lines whose logical extent differs from the physical one.

    Returns (mask of physical lines that may take the fast path,
    [(physical index, start, end)] of the logical lines that need the exact parser).
    """
    n = len(starts)
    may_fast = np.ones(n, dtype=bool)
    merged = []
    if b'"' not in body and b"\\" not in body:
        return may_fast, merged
    susp = fast.suspicious_lines(lines)
    consumed = -1
    for p in np.flatnonzero(susp).tolist():
        if p <= consumed:
            continue
        s = int(starts[p])
        e = ex.scan_line_jumping(body, s)
        q = p + body.count(b"\n", s, e)
        may_fast[p:q + 1] = False
        merged.append((p, s, e))
        consumed = q
    return may_fast, merged


def _complete_prefix(buf: bytes) -> int:
    """Length of the longest prefix of ``buf`` made of complete logical lines (0 if none)."""
    last_nl = buf.rfind(b"\n")
    if last_nl < 0:
        return 0
    head = buf[:last_nl + 1]
    if b'"' not in head and b"\\" not in head:
        return last_nl + 1
    lines, starts = fast.split_lines(buf)
    _, merged = _logical_lines(buf, lines, starts)
    merged_at = {s: e for _, s, e in merged}
    n = len(buf)
    cut = pos = 0
    while pos < n:
        e = merged_at.get(pos)
        if e is None:
            e = buf.find(b"\n", pos)
            if e < 0:
                e = n
        if e >= n:
            break  # the last line has no LF yet
        if e == n - 1 and buf[e - 1] == 92 and _active_backslash(buf, pos, e - 1):
            break  # 1.x skips a backslash+LF only when more bytes follow: wait for them
        cut = pos = e + 1
    return cut


def _active_backslash(buf: bytes, start: int, at: int) -> bool:
    """Whether 1.x's scanLine, started at ``start``, reaches ``at`` (not skipped by a escape)."""
    i = start
    while i < at:
        i += 2 if buf[i] == 92 else 1
    return i == at


def _slow_pieces(points: list[tuple[int, ex.ParsedPoint]], default_time: int) -> list[Piece]:
    groups: dict[tuple, list] = {}
    for line, pt in points:
        sig = tuple((name, ft) for name, (ft, _) in pt.fields.items())
        groups.setdefault((pt.measurement, pt.tags, sig), []).append((line, pt))
    pieces = []
    for (meas, tags, sig), rows in groups.items():
        lines = np.array([r[0] for r in rows], dtype=np.int64)
        ts = np.array([default_time if r[1].timestamp is None else r[1].timestamp
                       for r in rows], dtype=np.int64)
        cols = {}
        for name, ft in sig:
            vals = [r[1].fields[name][1] for r in rows]
            if ft == FieldType.STRING:
                arr = np.empty(len(vals), dtype=object)
                arr[:] = vals
            else:
                arr = np.array(vals, dtype=ft.dtype)
            cols[name] = (ft, arr, None)
        pieces.append(Piece(meas, tags, ts, lines, cols))
    return pieces


SMALL_BODY = 2048
"""Bodies shorter than this go straight to the exact parser: the fast path's fixed cost (about
30 Arrow kernel calls, 1-2 ms) is higher than parsing a few lines byte by byte."""


def _cut_long_lines(body: bytes, first_line: int, limit: int) -> tuple[bytes, list[LineError]]:
    """Blank out the physical lines longer than ``limit`` bytes (line numbers stay) and give each
    an error quoting only its first :data:`QUOTE_BYTES` bytes."""
    nl = np.flatnonzero(np.frombuffer(body, np.uint8) == 10)
    starts = np.concatenate(([0], nl + 1))
    ends = np.concatenate((nl, [len(body)]))
    long = np.flatnonzero(ends - starts > limit)
    if not len(long):
        return body, []
    parts, errors, pos = [], [], 0
    for i in long.tolist():
        s, e = int(starts[i]), int(ends[i])
        parts.append(body[pos:s])
        pos = e
        head = ex.decode(body[s:s + QUOTE_BYTES])
        errors.append(LineError(first_line + i, head + "...",
                                f"line too long: {e - s} bytes (server.max_line_bytes = {limit}); "
                                f"it starts with '{head}'"))
    parts.append(body[pos:])
    return b"".join(parts), errors


def _parse_body(body: bytes, mult: int, default_time: int, first_line: int,
                registry: dict, fast_path: bool | None = None,
                max_line_bytes: int | None = None) -> WriteBatch:
    if max_line_bytes is not None and len(body) > max_line_bytes:
        body, too_long = _cut_long_lines(body, first_line, max_line_bytes)
        if too_long:
            batch = _parse_body(body, mult, default_time, first_line, registry, fast_path)
            errors = sorted(list(batch.errors) + too_long, key=lambda e: e.line_number)
            if batch.has_frames:
                return WriteBatch.from_frames(batch.frames, errors)
            return WriteBatch(batch.series, errors)
    return _parse_body_limited(body, mult, default_time, first_line, registry, fast_path)


def _parse_body_limited(body: bytes, mult: int, default_time: int, first_line: int,
                        registry: dict, fast_path: bool | None = None) -> WriteBatch:
    """Parse ``body`` whose first line has number ``first_line``.

    ``registry`` maps (measurement, field) -> FieldType seen so far and is updated.
    ``fast_path``: None chooses by size, True forces the vectorised path, False sends every line
    through the exact parser and its byte-by-byte line scanner (the tests' oracle). All three
    give the same result.
    """
    if not _CONTENT.search(body):  # only what 1.x skips as blank lines
        return WriteBatch(())
    if fast_path is None:
        if len(body) >= SMALL_BODY:
            saved = dict(registry)
            try:
                return _parse(body, mult, default_time, first_line, registry, True, False)
            except Exception:  # a fast-path bug must not cost the write: use the exact parser
                _log.exception("line protocol fast path failed; parsing %d bytes exactly",
                               len(body))
                registry.clear()
                registry.update(saved)
        return _parse(body, mult, default_time, first_line, registry, False, False)
    return _parse(body, mult, default_time, first_line, registry, fast_path, not fast_path)


def _parse(body: bytes, mult: int, default_time: int, first_line: int, registry: dict,
           fast_path: bool, oracle: bool) -> WriteBatch:
    if fast_path:
        lines, starts = fast.split_lines(body)
    else:
        starts = np.concatenate(([0], np.flatnonzero(np.frombuffer(body, np.uint8) == 10) + 1))
    nphys = len(starts)
    ends = np.empty(nphys, dtype=np.int64)
    ends[:-1] = starts[1:] - 1
    ends[-1] = len(body)
    line_numbers = np.arange(first_line, first_line + nphys, dtype=np.int64)

    if fast_path:
        may_fast, merged = _logical_lines(body, lines, starts)
        if body.endswith(b"\n"):
            may_fast[-1] = False  # the empty "line" after the final LF
        blocks, slow_idx = fast.parse_fast(lines, np.flatnonzero(may_fast), line_numbers,
                                           mult, default_time, body)
        todo = [(p, int(starts[p]), int(ends[p])) for p in slow_idx.tolist()] + merged
    else:
        blocks = []
        scan = ex.scan_line if oracle else ex.scan_line_jumping
        todo = [(no - first_line, s, e)
                for no, s, e in ex.iter_logical_lines(body, first_line, scan)]

    errors: list[LineError] = []
    points = []
    for p, s, e in todo:
        block = body[s:e]
        st = ex.skip_whitespace(block, 0)
        if st >= len(block) or block[st] == 35:  # blank or '#' comment
            continue
        line_no = int(line_numbers[p])
        try:
            points.append((line_no, ex.parse_point(block[st:], mult)))
        except ex.PointError as err:
            errors.append(LineError(line_no, ex.decode(block),
                                    f"unable to parse '{ex.decode(block[st:])}': {err}"))
    pieces = []
    if points:
        points.sort(key=lambda r: r[0])
        pieces = _slow_pieces(points, default_time)

    def line_text(line_no: int) -> str:
        s = int(starts[line_no - first_line])
        return ex.decode(body[s:ex.scan_line_jumping(body, s)])

    return assemble(pieces, blocks, errors, registry, line_text)
