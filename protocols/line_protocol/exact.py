"""Exact, per-line InfluxDB 1.x line protocol scanner (the reference semantics).

This module is the slow path and the oracle. It follows the behaviour of InfluxDB 1.x
``models.ParsePointsWithPrecision`` (branch master-1.x, unsigned support enabled) byte by byte:

* :func:`scan_line` finds where a logical line ends. A ``\\n`` inside a quoted field value does
  not end the line, and a backslash skips the next byte (when at least two bytes follow it).
* :func:`parse_point` takes one logical line (leading whitespace already skipped) and returns a
  :class:`ParsedPoint` or raises :class:`PointError` with 1.x's message (``missing fields``,
  ``invalid boolean``, ``bad timestamp`` ...).

Escape rules (as in 1.x): the measurement name and field keys drop the backslash before ``,``,
``"``, space and ``=``; tag keys and values drop it before ``,``, space and ``=``; string field
values unescape only ``\\"`` and ``\\\\``. Every other backslash is kept as a literal byte.
Escapes are detected the 1.x way, by looking only at the previous byte, so ``a\\\\ b`` treats the
space as escaped.

The vectorised fast path in :mod:`rusts.protocols.line_protocol.fast` must produce exactly what this
module produces for every line it accepts; the tests check that property on generated input.
"""

from __future__ import annotations

import re

from rusts.model import FieldType

MIN_NANO_TIME = -(2**63) + 2
MAX_NANO_TIME = 2**63 - 2
MAX_KEY_LENGTH = 65535
TIME_RANGE_MESSAGE = f"time outside range {MIN_NANO_TIME} - {MAX_NANO_TIME}"

_BS, _SP, _COMMA, _EQ, _QUOTE, _NL, _TAB, _NUL = 92, 32, 44, 61, 34, 10, 9, 0
_WS = (_SP, _TAB, _NUL)

_NAME_UNESCAPE = re.compile(rb'\\([," =])')
_TAG_UNESCAPE = re.compile(rb"\\([, =])")
_STRING_UNESCAPE = re.compile(rb'\\([\\"])')

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_UINT64_MAX = 2**64 - 1

_TRUE = frozenset((b"t", b"T", b"true", b"True", b"TRUE"))
_BOOLEANS = _TRUE | frozenset((b"f", b"F", b"false", b"False", b"FALSE"))


class PointError(Exception):
    """A line is invalid; ``args[0]`` is InfluxDB 1.x's reason (without the line)."""


class ParsedPoint:
    """One parsed line: unescaped measurement, sorted tags, fields and the timestamp.

    ``fields`` maps field key -> (FieldType, value) with the last occurrence of a duplicate
    key winning. ``timestamp`` is in nanoseconds, or None when the line has none.
    """

    __slots__ = ("measurement", "tags", "fields", "timestamp")

    def __init__(self, measurement, tags, fields, timestamp):
        self.measurement = measurement
        self.tags = tags
        self.fields = fields
        self.timestamp = timestamp

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        return (f"ParsedPoint({self.measurement!r}, {self.tags!r}, {self.fields!r}, "
                f"{self.timestamp!r})")


def decode(raw: bytes) -> str:
    """Bytes of a name, key or string value to str (invalid UTF-8 becomes U+FFFD)."""
    return raw.decode("utf-8", "replace")


def unescape_name(raw: bytes) -> bytes:
    """Measurement names and field keys (1.x ``escape.Unescape``)."""
    return _NAME_UNESCAPE.sub(rb"\1", raw) if b"\\" in raw else raw


def unescape_tag(raw: bytes) -> bytes:
    """Tag keys and values (1.x ``unescapeTag``)."""
    return _TAG_UNESCAPE.sub(rb"\1", raw) if b"\\" in raw else raw


def unescape_string(raw: bytes) -> bytes:
    """String field values: only ``\\"`` and ``\\\\`` are escapes."""
    return _STRING_UNESCAPE.sub(rb"\1", raw) if b"\\" in raw else raw


def skip_whitespace(buf: bytes, i: int) -> int:
    """First index at or after ``i`` that is not a space, TAB or NUL."""
    n = len(buf)
    while i < n and buf[i] in _WS:
        i += 1
    return i


def scan_line(body: bytes, i: int) -> int:
    """End (exclusive, the index of the terminating LF or len) of the logical line at ``i``."""
    n = len(body)
    quoted = False
    fields = False
    equals = commas = 0
    while i < n:
        c = body[i]
        if c == _BS and i + 2 < n:
            i += 2
            continue
        if c == _SP:
            fields = True
        if fields:
            if not quoted and c == _EQ:
                equals += 1
                i += 1
                continue
            if not quoted and c == _COMMA:
                commas += 1
                i += 1
                continue
            if c == _QUOTE and equals > commas:
                quoted = not quoted
                i += 1
                continue
        if c == _NL and not quoted:
            break
        i += 1
    return i


_LINE_SPECIAL = re.compile(rb'[\\ =,"\n]')


def scan_line_jumping(body: bytes, i: int) -> int:
    """:func:`scan_line` that jumps between the bytes it reacts to (same result, faster)."""
    n = len(body)
    quoted = False
    fields = False
    equals = commas = 0
    search = _LINE_SPECIAL.search
    while True:
        m = search(body, i)
        if m is None:
            return n
        i = m.start()
        c = body[i]
        if c == _BS:
            i += 2 if i + 2 < n else 1
            continue
        if c == _SP:
            fields = True
        elif c == _NL:
            if not quoted:
                return i
        elif fields:
            if c == _QUOTE:
                if equals > commas:
                    quoted = not quoted
            elif not quoted:
                if c == _EQ:
                    equals += 1
                else:
                    commas += 1
        i += 1


# --------------------------------------------------------------------------- key section


def scan_key(buf: bytes) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
    """Scan ``measurement[,k=v...]`` at the start of ``buf``.

    Returns (end index, raw measurement, [(raw tag key, raw tag value)] in input order).
    """
    n = len(buf)
    if n == 0 or buf[0] == _COMMA:
        raise PointError("missing measurement")
    i = 0
    has_tags = False
    while True:
        i += 1
        if i >= n:
            raise PointError("missing fields")
        if buf[i - 1] == _BS:
            continue
        c = buf[i]
        if c == _COMMA:
            has_tags = True
            break
        if c == _SP:
            break
    name_end = i
    tags: list[tuple[bytes, bytes]] = []
    if has_tags:
        i += 1
        while True:
            # tag key
            kstart = i
            if i >= n or buf[i] in (_SP, _COMMA, _EQ):
                raise PointError("missing tag key")
            while True:
                i += 1
                if i >= n:
                    raise PointError("missing tag value")
                c = buf[i]
                if (c == _SP or c == _COMMA) and buf[i - 1] != _BS:
                    raise PointError("missing tag value")
                if c == _EQ and buf[i - 1] != _BS:
                    break
            kend = i
            i += 1
            # tag value
            vstart = i
            if i >= n or buf[i] == _COMMA or buf[i] == _SP:
                raise PointError("missing tag value")
            done = False
            while True:
                i += 1
                if i >= n:
                    raise PointError("missing fields")
                c = buf[i]
                if c == _EQ and buf[i - 1] != _BS:
                    raise PointError("invalid tag format")
                if c == _COMMA and buf[i - 1] != _BS:
                    break
                if c == _SP and buf[i - 1] != _BS:
                    done = True
                    break
            tags.append((buf[kstart:kend], buf[vstart:i]))
            if done:
                break
            i += 1
    keys = [k for k, _ in tags]
    if len(set(keys)) != len(keys):
        raise PointError("duplicate tags")
    return i, buf[:name_end], tags


def finish_key(name: bytes, raw_tags) -> tuple[str, tuple[tuple[str, str], ...]]:
    """(unescaped measurement, sorted unescaped tags) from :func:`scan_key` output."""
    measurement = decode(unescape_name(name))
    if not raw_tags:
        return measurement, ()
    tags = sorted((decode(unescape_tag(k)), decode(unescape_tag(v))) for k, v in raw_tags)
    return measurement, tuple(tags)


# ------------------------------------------------------------------------ fields section


def _scan_number(buf: bytes, i: int) -> int:
    n = len(buf)
    start = i
    is_int = is_unsigned = False
    if i < n and buf[i] == 45:  # '-'
        i += 1
        if i == n:
            raise PointError("invalid number")
    decimal = scientific = False
    while i < n:
        c = buf[i]
        if c == _COMMA or c == _SP:
            break
        if c == 105 and i > start and not (is_int or is_unsigned):  # 'i'
            is_int = True
            i += 1
            continue
        if c == 117 and i > start and not (is_int or is_unsigned):  # 'u'
            is_unsigned = True
            i += 1
            continue
        if c == 46:  # '.'
            if decimal:
                raise PointError("invalid number")
            decimal = True
        if i > start and (c == 101 or c == 69):  # e E
            scientific = True
            i += 1
            continue
        if (c == 43 or c == 45) and buf[i - 1] in (101, 69):
            i += 1
            continue
        if i + 2 < n and (c == 78 or c == 110):  # N n
            raise PointError("invalid number")
        if not (48 <= c <= 57 or c == 46):
            raise PointError("invalid number")
        i += 1
    if (is_int or is_unsigned) and (decimal or scientific):
        raise PointError("invalid number")
    digits = i - start - (1 if is_int else 0) - (1 if decimal else 0)
    digits -= 1 if buf[start] == 45 else 0
    if digits == 0:
        raise PointError("invalid number")
    if is_int:
        if buf[i - 1] != 105:
            raise PointError("invalid number")
        text = buf[start:i - 1]
        if len(text) >= 19 and not _INT64_MIN <= int(text) <= _INT64_MAX:
            t = text.decode()
            raise PointError(f'unable to parse integer {t}: strconv.ParseInt: parsing "{t}": '
                             "value out of range")
    elif is_unsigned:
        if buf[i - 1] != 117 or buf[start] == 45:
            raise PointError("invalid number")
        text = buf[start:i - 1]
        if len(text) >= 20 and int(text) > _UINT64_MAX:
            t = text.decode()
            raise PointError(f'unable to parse unsigned {t}: strconv.ParseUint: parsing "{t}": '
                             "value out of range")
    elif scientific or i - start >= 25:
        if _parse_float(buf[start:i]) is None:
            raise PointError("invalid float")
    return i


_GO_FLOAT = re.compile(rb"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?\Z")


def _parse_float(text: bytes) -> float | None:
    """Go ``strconv.ParseFloat`` restricted to decimal syntax; None on error or overflow."""
    if not _GO_FLOAT.match(text):
        return None
    v = float(text)
    if v in (float("inf"), float("-inf")):
        return None
    return v


def _scan_boolean(buf: bytes, i: int) -> int:
    n = len(buf)
    start = i
    if i < n and buf[i] not in (116, 102, 84, 70):  # t f T F
        raise PointError("invalid boolean")
    i += 1
    while i < n and buf[i] != _COMMA and buf[i] != _SP:
        i += 1
    if buf[start:i] not in _BOOLEANS:
        raise PointError("invalid boolean")
    return i


def scan_fields(buf: bytes, i: int) -> tuple[int, bytes]:
    """1.x ``scanFields``: validate the field section starting at ``i``; (end, section)."""
    n = len(buf)
    start = i = skip_whitespace(buf, i)
    quoted = False
    equals = commas = 0
    while i < n:
        c = buf[i]
        if c == _BS and i + 1 < n:
            i += 2
            continue
        if c == _QUOTE and equals > commas:
            quoted = not quoted
            i += 1
            continue
        if c == _EQ and not quoted:
            equals += 1
            p = buf[i - 1]
            if (p == _SP or p == _COMMA) and buf[i - 2] != _BS:
                raise PointError("missing field key")
            if i + 1 >= n:
                raise PointError("missing field value")
            d = buf[i + 1]
            if d == _COMMA or d == _SP:
                raise PointError("missing field value")
            if 48 <= d <= 57 or d == 46 or d == 45 or d == 78 or d == 110:
                i = _scan_number(buf, i + 1)
                continue
            if d != _QUOTE:
                i = _scan_boolean(buf, i + 1)
                continue
        if c == _COMMA and not quoted:
            commas += 1
        if c == _SP and not quoted:
            break
        i += 1
    if quoted:
        raise PointError("unbalanced quotes")
    if equals == 0 or commas != equals - 1:
        raise PointError("invalid field format")
    return i, buf[start:i]


def _scan_to(buf: bytes, i: int, stop: int) -> int:
    n = len(buf)
    while i < n:
        if buf[i] == stop and (i == 0 or buf[i - 1] != _BS):
            break
        i += 1
    return i


def _scan_field_value(buf: bytes, i: int) -> int:
    n = len(buf)
    quoted = False
    while i < n:
        c = buf[i]
        if c == _BS and i + 1 < n and buf[i + 1] in (_QUOTE, _BS):
            i += 2
            continue
        if c == _QUOTE:
            quoted = not quoted
            i += 1
            continue
        if c == _COMMA and not quoted:
            break
        i += 1
    return i


def walk_fields(fields: bytes) -> list[tuple[bytes, bytes]]:
    """Split a validated field section into raw (key, value) pairs (1.x ``walkFields``)."""
    pairs = []
    buf = fields
    while buf:
        i = _scan_to(buf, 0, _EQ)
        key = buf[:i]
        if i > len(buf) - 2:
            raise PointError(f"invalid value: field-key={decode(key)}")
        buf = buf[i + 1:]
        j = _scan_field_value(buf, 0)
        pairs.append((key, buf[:j]))
        buf = buf[j + 1:]
    return pairs


def field_value(raw: bytes) -> tuple[FieldType, object]:
    """Type and value of a raw field value that passed :func:`scan_fields` (1.x ``Next``)."""
    c = raw[0]
    if c == _QUOTE:
        return FieldType.STRING, decode(unescape_string(raw[1:-1]))
    if c in b"0123456789-.nNiIu":
        last = raw[-1]
        if last == 105:
            return FieldType.INTEGER, int(raw[:-1])
        if last == 117:
            return FieldType.UNSIGNED, int(raw[:-1])
        return FieldType.FLOAT, float(raw)
    return FieldType.BOOLEAN, raw in _TRUE


# ---------------------------------------------------------------------------- timestamp


def scan_time(buf: bytes, i: int) -> tuple[int, bytes]:
    """1.x ``scanTime``: (end, raw timestamp) after the field section."""
    n = len(buf)
    start = i = skip_whitespace(buf, i)
    while i < n:
        c = buf[i]
        if c == _NL or c == _SP:
            break
        if i == start and c == 45:
            i += 1
            continue
        if not 48 <= c <= 57:
            raise PointError("bad timestamp")
        i += 1
    return i, buf[start:i]


def parse_int64(text: bytes) -> int:
    """Go ``strconv.ParseInt(text, 10, 64)`` for ``-?[0-9]*`` input."""
    body = text[1:] if text[:1] == b"-" else text
    t = text.decode()
    if not body:
        raise PointError(f'strconv.ParseInt: parsing "{t}": invalid syntax')
    v = int(text)
    if not _INT64_MIN <= v <= _INT64_MAX:
        raise PointError(f'strconv.ParseInt: parsing "{t}": value out of range')
    return v


def to_nanoseconds(ts: int, multiplier: int) -> int:
    """Timestamp in the request precision -> ns; PointError outside 1.x's time range."""
    ns = ts * multiplier
    if not MIN_NANO_TIME <= ns <= MAX_NANO_TIME:
        raise PointError(TIME_RANGE_MESSAGE)
    return ns


# ------------------------------------------------------------------------------- points


def parse_point(buf: bytes, multiplier: int = 1) -> ParsedPoint:
    """Parse one logical line (starting at a non-whitespace byte, no trailing LF).

    ``timestamp`` of the result is already in nanoseconds (``multiplier`` applied), or None.
    """
    pos, name, raw_tags = scan_key(buf)
    key_size = pos  # 1.x's key is this many bytes (sorting does not change its length)
    if key_size > MAX_KEY_LENGTH:
        raise PointError(f"max key length exceeded: {key_size} > {MAX_KEY_LENGTH}")
    pos, section = scan_fields(buf, pos)
    if not section:
        raise PointError("missing fields")
    pairs = walk_fields(section)
    for k, _ in pairs:
        size = key_size + 4 + len(k)
        if size > MAX_KEY_LENGTH:
            raise PointError(f"max key length exceeded: {size} > {MAX_KEY_LENGTH}")
    pos, raw_ts = scan_time(buf, pos)
    timestamp = None
    if raw_ts:
        timestamp = to_nanoseconds(parse_int64(raw_ts), multiplier)
        if buf[pos:].strip(b" "):
            raise PointError("point is invalid")
    fields: dict[str, tuple[FieldType, object]] = {}
    for k, v in pairs:
        key = unescape_name(k)
        if not key:
            continue  # 1.x Fields() skips empty keys
        fields[decode(key)] = field_value(v)
    if not fields:
        raise PointError("missing fields")
    measurement, tags = finish_key(name, raw_tags)
    return ParsedPoint(measurement, tags, fields, timestamp)


def iter_logical_lines(body: bytes, first_line: int = 1, scan=scan_line):
    """Yield (line number, start, end) of every logical line of ``body`` (1.x ``scanLine``).

    ``end`` excludes the terminating LF. Line numbers count physical lines from
    ``first_line``; a logical line spanning several physical lines has the number of its first.
    """
    pos = 0
    n = len(body)
    line_no = first_line
    if b'"' not in body and b"\\" not in body:
        scan = _next_lf
    while pos < n:
        end = scan(body, pos)
        yield line_no, pos, end
        line_no += body.count(b"\n", pos, end) + 1
        pos = end + 1


def _next_lf(body: bytes, i: int) -> int:
    end = body.find(b"\n", i)
    return len(body) if end < 0 else end
