"""SQL literals of time: intervals (``'5 minutes'``, ``INTERVAL``), timestamps (ISO-8601, ns
integers, ``now()`` arithmetic), evaluated once per statement."""

from __future__ import annotations


import datetime as _dt
import re

import numpy as np
from sqlglot import exp



# --------------------------------------------------------------------------- literals

_UNITS = {
    "ns": 1, "nanosecond": 1, "nanoseconds": 1, "nsec": 1,
    "us": 1_000, "µs": 1_000, "microsecond": 1_000, "microseconds": 1_000, "usec": 1_000,
    "ms": 1_000_000, "millisecond": 1_000_000, "milliseconds": 1_000_000, "msec": 1_000_000,
    "s": 10**9, "sec": 10**9, "secs": 10**9, "second": 10**9, "seconds": 10**9,
    "m": 60 * 10**9, "min": 60 * 10**9, "mins": 60 * 10**9, "minute": 60 * 10**9, "minutes": 60 * 10**9,
    "h": 3600 * 10**9, "hr": 3600 * 10**9, "hrs": 3600 * 10**9, "hour": 3600 * 10**9, "hours": 3600 * 10**9,
    "d": 86400 * 10**9, "day": 86400 * 10**9, "days": 86400 * 10**9,
    "w": 7 * 86400 * 10**9, "week": 7 * 86400 * 10**9, "weeks": 7 * 86400 * 10**9,
}
_CALENDAR_UNITS = {"mon", "mons", "month", "months", "y", "year", "years", "yr", "yrs", "decade",
                   "decades", "century", "centuries", "quarter", "quarters"}
_IV_PART = re.compile(r"\s*([+-]?\d+(?:\.\d+)?)\s*([a-zA-Zµ]+)\s*")


class CalendarInterval(Exception):
    """An interval in months/years: fine for DuckDB, not a fixed number of nanoseconds."""


def parse_interval_text(text: str) -> int | None:
    """``'5 minutes'``, ``'1h30m'``, ``'90 seconds'`` -> ns; None if not an interval.

    Raises :class:`CalendarInterval` for month/year units (no fixed length).
    """
    s = text.strip().lower()
    if not s:
        return None
    pos = 0
    total = 0
    found = False
    while pos < len(s):
        m = _IV_PART.match(s, pos)
        if not m or m.end() == pos:
            return None
        num, unit = m.group(1), m.group(2)
        if unit in _CALENDAR_UNITS:
            raise CalendarInterval(text)
        mult = _UNITS.get(unit)
        if mult is None:
            return None
        if "." in num:
            total += int(round(float(num) * mult))
        else:
            total += int(num) * mult
        found = True
        pos = m.end()
    return total if found else None


def eval_interval(node: exp.Expression) -> int | None:
    """A constant interval expression (``INTERVAL '1 hour'``, ``'5 minutes'``) in ns, or None."""
    if isinstance(node, exp.Paren):
        return eval_interval(node.this)
    if isinstance(node, exp.Interval):
        this = node.this
        unit = node.args.get("unit")
        if this is None:
            return None
        text = this.name if isinstance(this, exp.Literal) else None
        if text is None:
            return None
        if unit is not None:
            text = f"{text} {unit.name}"
        return parse_interval_text(text)
    if isinstance(node, exp.Literal) and node.is_string:
        return parse_interval_text(node.this)
    return None


_ISO = re.compile(
    r"^\s*(\d{4})-(\d{2})-(\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d{1,9})\d*)?)?)?"
    r"\s*(Z|z|UTC|[+-]\d{2}(?::?\d{2})?)?\s*$")


_EPOCH_ORDINAL = _dt.date(1970, 1, 1).toordinal()
_INT_TEXT = re.compile(r"[+-]?\d+")


def parse_time_text(text: str) -> int | None:
    """ISO-8601 date/time text -> int ns since the epoch (naive = UTC), or None."""
    s = text.strip()
    if _INT_TEXT.fullmatch(s):
        return int(s)
    m = _ISO.match(s)
    if not m:
        return None
    y, mo, d, hh, mi, ss, frac, tz = m.groups()
    try:  # (the calendar in plain Python: ~10 times numpy's datetime64 parse and checks)
        ns = (_dt.date(int(y), int(mo), int(d)).toordinal() - _EPOCH_ORDINAL) * 86_400_000_000_000
    except ValueError:
        try:
            day = np.datetime64(f"{y}-{mo}-{d}", "D")
        except ValueError:
            return None
        if f"{np.datetime_as_string(day)}" != f"{y}-{mo}-{d}":
            return None
        ns = int(day.astype("datetime64[ns]").astype(np.int64))
    h, mn, sc = int(hh or 0), int(mi or 0), int(ss or 0)
    if h > 23 or mn > 59 or sc > 60:
        return None
    ns += (h * 3600 + mn * 60 + sc) * 10**9
    if frac:
        ns += int(frac.ljust(9, "0"))
    if tz and tz.upper() not in ("Z", "UTC"):
        sign = -1 if tz[0] == "-" else 1
        body = tz[1:].replace(":", "")
        off = int(body[:2]) * 3600 + (int(body[2:4]) if len(body) > 2 else 0) * 60
        ns -= sign * off * 10**9
    return ns


def _is_now(node: exp.Expression) -> bool:
    if isinstance(node, (exp.CurrentTimestamp, exp.CurrentDatetime)):
        return True
    if isinstance(node, exp.Anonymous) and node.name.lower() in ("now", "current_timestamp") \
            and not node.expressions:
        return True
    return False


def eval_time(node: exp.Expression, now_ns: int) -> int | None:
    """A constant time expression in ns, or None if ``node`` is not one."""
    if isinstance(node, exp.Paren):
        return eval_time(node.this, now_ns)
    if isinstance(node, exp.Literal):
        if node.is_string:
            return parse_time_text(node.this)
        try:
            v = int(node.this)
        except ValueError:
            try:
                f = float(node.this)
            except ValueError:
                return None
            return int(f) if f.is_integer() else None
        return v
    if isinstance(node, exp.Neg):
        v = eval_time(node.this, now_ns)
        return None if v is None else -v
    if _is_now(node):
        return now_ns
    if isinstance(node, (exp.Cast, exp.TryCast)):
        to = node.args.get("to")
        if to is not None and to.this in (exp.DataType.Type.TIMESTAMP, exp.DataType.Type.TIMESTAMPTZ,
                                          exp.DataType.Type.TIMESTAMP_NS, exp.DataType.Type.DATETIME,
                                          exp.DataType.Type.DATE, exp.DataType.Type.TIMESTAMPLTZ):
            inner = node.this
            if isinstance(inner, exp.Literal) and inner.is_string:
                return parse_time_text(inner.this)
            return eval_time(inner, now_ns)
        return None
    if isinstance(node, (exp.Add, exp.Sub)):
        left = eval_time(node.this, now_ns)
        iv = eval_interval(node.expression)
        if left is None or iv is None:
            if isinstance(node, exp.Add):  # INTERVAL + time
                iv2 = eval_interval(node.this)
                right = eval_time(node.expression, now_ns)
                if iv2 is not None and right is not None:
                    return right + iv2
            return None
        return left + iv if isinstance(node, exp.Add) else left - iv
    return None
