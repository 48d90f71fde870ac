"""SQL -> query model: the fast path, plus the pieces both planners share.

The fast path takes a parsed single-table ``SELECT`` that the query model can express exactly
(the original RusTs table: field/tag/time selection, ``*``, a conjunction of tag predicates and
time bounds, the model's aggregates, ``GROUP BY`` tags and one ``time_bucket``, ``ORDER BY``,
``LIMIT``/``OFFSET``) and turns it into a :class:`~rusts.query.model.Query` plus a description of the
output columns. Anything else makes :func:`plan_fast` return None and the statement goes to the
general (DuckDB) path, so a construct outside the table is never answered approximately.

SQL semantics the fast path must keep (checked by the differential test against DuckDB):

* ``tag != 'x'`` and ``tag NOT IN (...)`` are false for a series without that tag (NULL), so they
  translate to the model's NotEq/NotIn *plus* an Exists filter.
* Aggregates over zero rows without GROUP BY still answer one row (COUNT 0, the rest NULL);
  with GROUP BY they answer no rows.
* ``ORDER BY`` on anything but time is applied here after execution (aggregates are small), and
  then ``LIMIT``/``OFFSET``; for raw rows ordered by time both are pushed into the query.
* Time literals: ISO-8601 strings (naive = UTC, nanosecond fractions kept), integers (ns),
  ``now()``/``CURRENT_TIMESTAMP`` +/- ``INTERVAL``, ``'...'::timestamp`` and ``TIMESTAMP '...'``.
  ``now()`` is read once per statement, so every reference agrees.
"""

from __future__ import annotations

import functools

import re
from collections.abc import Callable, Sequence

import attrs
import numpy as np
import sqlglot
from sqlglot import exp

from rusts.model import FieldType
from rusts.query.model import MAX_TIME, MIN_TIME, AggFunc, Aggregation, Query, TagFilter, TagOp
from rusts.sql.output import KIND_FIELD, KIND_TAG, KIND_TIME

TIME_COLUMN = "time"

# --------------------------------------------------------------------------- catalog


class Catalog:
    """Names the SQL layer resolves against: measurements, their tag keys and fields.

    Built per statement from a database (:meth:`of_db`) or from plain callables (tests). Name
    lookup is exact first, then case-insensitive when the identifier was not quoted (users of
    the original write ``PULocationID`` unquoted and expect it to match).
    """

    def __init__(self, measurements: Callable[[], Sequence[str]],
                 tag_keys: Callable[[str], Sequence[str]],
                 fields: Callable[[str], dict]) -> None:
        self._measurements_fn = measurements
        self._tag_keys_fn = tag_keys
        self._fields_fn = fields
        self._measurements: list[str] | None = None
        self._tags: dict[str, list[str]] = {}
        self._fields: dict[str, dict[str, FieldType]] = {}
        self.verified: dict[int, object] = {}  # plan-cache templates whose facts hold here

    @classmethod
    def of_db(cls, db) -> "Catalog":
        """The database's catalog; one instance (and its memoised answers) per generation of the
        index and the schema, so statements reuse it until a series or field appears or goes."""
        try:
            gen = (db.index.generation, db.schema.generation)
        except AttributeError:
            gen = None
        cached = getattr(db, "_catalog_cache", None)
        if gen is not None and cached is not None and cached[0] == gen:
            return cached[1]
        cat = cls._of_db(db)
        if gen is not None:
            try:
                db._catalog_cache = (gen, cat)
            except AttributeError:
                pass
        return cat

    @classmethod
    def _of_db(cls, db) -> "Catalog":
        def measurements():
            ms = set(db.measurements())
            try:
                ms.update(db.schema.measurements())
            except AttributeError:
                pass
            return sorted(ms)

        return cls(measurements, lambda m: db_tag_keys(db, m), lambda m: dict(db.schema.fields(m)))

    @classmethod
    def of_dicts(cls, tables: dict[str, tuple[Sequence[str], dict]]) -> "Catalog":
        """A catalog from ``{measurement: (tag_keys, {field: FieldType})}`` (tests)."""
        return cls(lambda: sorted(tables), lambda m: tables[m][0], lambda m: dict(tables[m][1]))

    def measurements(self) -> list[str]:
        if self._measurements is None:
            self._measurements = list(self._measurements_fn())
        return self._measurements

    def tag_keys(self, m: str) -> list[str]:
        if m not in self._tags:
            self._tags[m] = sorted(self._tag_keys_fn(m))
        return self._tags[m]

    def fields(self, m: str) -> dict[str, FieldType]:
        if m not in self._fields:
            f = self._fields_fn(m) or {}
            self._fields[m] = {k: FieldType(f[k]) for k in sorted(f)}
        return self._fields[m]

    def resolve_table(self, name: str, quoted: bool = False) -> str | None:
        ms = self.measurements()
        if name in ms:
            return name
        if not quoted:
            low = [m for m in ms if m.lower() == name.lower()]
            if len(low) == 1:
                return low[0]
        return None

    def resolve_column(self, m: str, name: str, quoted: bool = False) -> tuple[str, str] | None:
        """``(kind, canonical name)`` of a column of measurement ``m``, or None."""
        if name == TIME_COLUMN or (not quoted and name.lower() == TIME_COLUMN):
            return KIND_TIME, TIME_COLUMN
        tags = self.tag_keys(m)
        fields = self.fields(m)
        if name in tags:
            return KIND_TAG, name
        if name in fields:
            return KIND_FIELD, name
        if not quoted:
            lo = name.lower()
            cands = [(KIND_TAG, t) for t in tags if t.lower() == lo] + \
                    [(KIND_FIELD, f) for f in fields if f.lower() == lo]
            if len(cands) == 1:
                return cands[0]
        return None


def db_tag_keys(db, m: str) -> list[str]:
    """Tag keys of a measurement from the series index (any of its spellings of the API)."""
    idx = db.index
    fn = getattr(idx, "tag_keys", None)
    if fn is not None:
        try:
            return sorted(fn(m))
        except TypeError:
            pass
    keys: set[str] = set()
    for sid in np.asarray(idx.series_of(m)).tolist():
        keys.update(dict(idx.tags_of(int(sid))).keys())
    return sorted(keys)


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


def parse_time_text(text: str) -> int | None:
    """ISO-8601 date/time text -> int ns since the epoch (naive = UTC), or None."""
    s = text.strip()
    if re.fullmatch(r"[+-]?\d+", s):
        return int(s)
    m = _ISO.match(s)
    if not m:
        return None
    y, mo, d, hh, mi, ss, frac, tz = m.groups()
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


# --------------------------------------------------------------------------- naming

def output_name(e: exp.Expression, text: str | None = None) -> str:
    """Column name of a select item: the alias, a column's name, else its lower-case SQL text.

    ``text`` is the item as the user wrote it (see :func:`select_item_texts`); without it the
    text is regenerated by sqlglot, which may spell some functions differently.
    """
    if isinstance(e, exp.Alias):
        return e.alias
    if isinstance(e, exp.Column):
        return e.name
    if isinstance(e, exp.Star):
        return "*"
    if text:
        return text
    return e.sql(dialect="postgres").lower()


_CLAUSE_END = {"FROM", "WHERE", "GROUP_BY", "HAVING", "ORDER_BY", "LIMIT", "OFFSET", "UNION", "INTERSECT",
               "EXCEPT", "WINDOW", "INTO", "FETCH", "QUALIFY", "SEMICOLON"}


@functools.lru_cache(maxsize=512)
def select_item_texts(text: str) -> list[str] | None:
    """The items of the statement's first top-level select list, as written (lower-case,
    whitespace collapsed), or None when the text cannot be split reliably."""
    from sqlglot.tokens import TokenType

    try:
        toks = sqlglot.Dialect.get_or_raise("postgres").tokenize(text)
    except Exception:
        return None
    depth = 0
    i = 0
    while i < len(toks):
        t = toks[i]
        if t.token_type == TokenType.L_PAREN:
            depth += 1
        elif t.token_type == TokenType.R_PAREN:
            depth -= 1
        elif t.token_type == TokenType.SELECT and depth == 0:
            break
        i += 1
    else:
        return None
    i += 1
    if i < len(toks) and toks[i].token_type in (TokenType.DISTINCT, TokenType.ALL):
        i += 1
        if i < len(toks) and toks[i].token_type == TokenType.ON:
            i += 1
            d = 0
            while i < len(toks):
                if toks[i].token_type == TokenType.L_PAREN:
                    d += 1
                elif toks[i].token_type == TokenType.R_PAREN:
                    d -= 1
                    if d == 0:
                        i += 1
                        break
                i += 1
    items: list[str] = []
    start = i
    depth = 0
    while True:
        t = toks[i] if i < len(toks) else None
        end_item = t is None
        if t is not None:
            if t.token_type == TokenType.L_PAREN:
                depth += 1
            elif t.token_type == TokenType.R_PAREN:
                depth -= 1
            elif depth == 0 and (t.token_type.name in _CLAUSE_END or t.token_type == TokenType.COMMA):
                end_item = True
        if end_item:
            if i <= start:
                return None
            a, b = toks[start].start, toks[i - 1].end
            items.append(" ".join(text[a:b + 1].split()).lower())
            if t is None or t.token_type != TokenType.COMMA:
                break
            start = i + 1
        i += 1
    return items


def naming_select(ast: exp.Expression) -> exp.Select | None:
    """The select whose items name the statement's output columns (first branch of a union)."""
    node = ast
    while isinstance(node, exp.SetOperation):
        node = node.this
    while isinstance(node, exp.Subquery):
        node = node.this
    return node if isinstance(node, exp.Select) else None


def item_names(ast: exp.Expression, text: str | None) -> list[str] | None:
    """Output names of the naming select's items, using the written text where it lines up."""
    sel = naming_select(ast)
    if sel is None:
        return None
    texts = select_item_texts(text) if text else None
    if texts is not None and len(texts) != len(sel.expressions):
        texts = None
    return [output_name(e, texts[i] if texts else None) for i, e in enumerate(sel.expressions)]


# --------------------------------------------------------------------------- WHERE analysis

@attrs.define
class Bounds:
    """Time range and tag filters implied by a conjunction of predicates."""

    start: int = MIN_TIME
    end: int = MAX_TIME
    tag_filters: list[TagFilter] = attrs.field(factory=list)
    exact: bool = True  # every conjunct was absorbed
    rest: list = attrs.field(factory=list)  # the conjuncts that were not

    def add_start(self, t: int) -> None:
        self.start = max(self.start, t)

    def add_end(self, t: int) -> None:
        self.end = min(self.end, t)


def conjuncts(cond: exp.Expression | None) -> list[exp.Expression]:
    """The AND-ed terms of ``cond``, left to right (iterative: a WHERE of thousands of ANDs
    must not exhaust the stack)."""
    out: list[exp.Expression] = []
    stack = [cond]
    while stack:
        c = stack.pop()
        if c is None:
            continue
        while isinstance(c, exp.Paren):
            c = c.this
        if isinstance(c, exp.And):
            stack.append(c.expression)
            stack.append(c.this)
        else:
            out.append(c)
    return out


_FLIP = {exp.GT: exp.LT, exp.GTE: exp.LTE, exp.LT: exp.GT, exp.LTE: exp.GTE, exp.EQ: exp.EQ,
         exp.NEQ: exp.NEQ}


def _str_lit(node) -> str | None:
    if isinstance(node, exp.Literal) and node.is_string:
        return node.this
    return None


def analyze_where(cond: exp.Expression | None, resolve: Callable[[exp.Column], tuple[str, str] | None],
                  now_ns: int) -> Bounds:
    """Absorb time bounds and tag predicates of a WHERE conjunction into :class:`Bounds`.

    ``resolve`` maps a column reference to ``(kind, name)`` or None. Conjuncts that are not a
    time bound or a tag predicate set ``exact`` to False (they stay for the general path).
    """
    b = Bounds()
    for c in conjuncts(cond):
        if not _absorb(c, b, resolve, now_ns):
            b.exact = False
            b.rest.append(c)
    return b


_OPS = {exp.EQ: "=", exp.NEQ: "!=", exp.GT: ">", exp.GTE: ">=", exp.LT: "<", exp.LTE: "<="}
_NUMERIC = (FieldType.FLOAT, FieldType.INTEGER, FieldType.UNSIGNED)


def _const(node, ft: FieldType):
    """A literal usable against a field of type ``ft`` (None when it is not one)."""
    while isinstance(node, exp.Paren):
        node = node.this
    neg = False
    if isinstance(node, exp.Neg):
        neg, node = True, node.this
    if isinstance(node, exp.Literal):
        if node.is_string:
            return node.this if ft == FieldType.STRING and not neg else None
        if ft not in _NUMERIC:
            return None
        try:
            v = int(node.this)
        except ValueError:
            try:
                v = float(node.this)
            except ValueError:
                return None
        return -v if neg else v
    if isinstance(node, exp.Boolean) and ft == FieldType.BOOLEAN and not neg:
        return bool(node.this)
    return None


def field_predicate(c: exp.Expression, resolve, fields: dict) -> tuple | None:
    """``(field, op, value)`` for a simple predicate on one field, else None.

    ops: = != < <= > >= (value a literal of the field's type), between (lo, hi), isnull, notnull.
    """
    while isinstance(c, exp.Paren):
        c = c.this
    if type(c) in _OPS:
        left, right, cls = c.this, c.expression, type(c)
        if not isinstance(left, exp.Column) and isinstance(right, exp.Column):
            left, right, cls = right, left, _FLIP[cls]
        if not isinstance(left, exp.Column):
            return None
        r = resolve(left)
        if r is None or r[0] != KIND_FIELD:
            return None
        v = _const(right, fields[r[1]])
        if v is None:
            return None
        return r[1], _OPS[cls], v
    if isinstance(c, exp.Between) and isinstance(c.this, exp.Column):
        r = resolve(c.this)
        if r is None or r[0] != KIND_FIELD or fields[r[1]] not in _NUMERIC:
            return None
        lo, hi = _const(c.args["low"], fields[r[1]]), _const(c.args["high"], fields[r[1]])
        if lo is None or hi is None:
            return None
        return r[1], "between", (lo, hi)
    neg = False
    inner = c
    if isinstance(inner, exp.Not):
        neg, inner = True, inner.this
        while isinstance(inner, exp.Paren):
            inner = inner.this
    if isinstance(inner, exp.Is) and isinstance(inner.this, exp.Column) and isinstance(inner.expression, exp.Null):
        r = resolve(inner.this)
        if r is None or r[0] != KIND_FIELD:
            return None
        notnull = neg != bool(inner.args.get("negate"))
        return r[1], "notnull" if notnull else "isnull", None
    if isinstance(inner, exp.Column):
        r = resolve(inner)
        if r is None or r[0] != KIND_FIELD or fields[r[1]] != FieldType.BOOLEAN:
            return None
        return r[1], "=", not neg
    return None


def _absorb(c: exp.Expression, b: Bounds, resolve, now_ns: int) -> bool:
    while isinstance(c, exp.Paren):
        c = c.this
    if isinstance(c, exp.Boolean) and c.this is True:
        return True
    if type(c) in _FLIP:
        left, right, cls = c.this, c.expression, type(c)
        if not isinstance(left, exp.Column) and isinstance(right, exp.Column):
            left, right, cls = right, left, _FLIP[cls]
        if not isinstance(left, exp.Column):
            return False
        r = resolve(left)
        if r is None:
            return False
        kind, name = r
        if kind == KIND_TIME:
            t = eval_time(right, now_ns)
            if t is None:
                return False
            if cls is exp.EQ:
                b.add_start(t)
                b.add_end(min(t + 1, MAX_TIME))
            elif cls is exp.GT:
                b.add_start(min(t + 1, MAX_TIME))
            elif cls is exp.GTE:
                b.add_start(t)
            elif cls is exp.LT:
                b.add_end(t)
            elif cls is exp.LTE:
                b.add_end(min(t + 1, MAX_TIME))
            else:
                return False
            return True
        if kind == KIND_TAG:
            v = _str_lit(right)
            if v is None:
                return False
            if cls is exp.EQ:
                b.tag_filters.append(TagFilter(name, TagOp.Eq, v))
                return True
            if cls is exp.NEQ:
                b.tag_filters.append(TagFilter(name, TagOp.Exists))
                b.tag_filters.append(TagFilter(name, TagOp.NotEq, v))
                return True
        return False
    if isinstance(c, exp.Between):
        col = c.this
        if not isinstance(col, exp.Column):
            return False
        r = resolve(col)
        if r is None or r[0] != KIND_TIME:
            return False
        lo, hi = eval_time(c.args["low"], now_ns), eval_time(c.args["high"], now_ns)
        if lo is None or hi is None:
            return False
        b.add_start(lo)
        b.add_end(min(hi + 1, MAX_TIME))
        return True
    negate = False
    inner = c
    if isinstance(inner, exp.Not):
        negate = True
        inner = inner.this
        while isinstance(inner, exp.Paren):
            inner = inner.this
    if isinstance(inner, exp.In) and isinstance(inner.this, exp.Column) and not inner.args.get("query"):
        r = resolve(inner.this)
        if r is None or r[0] != KIND_TAG:
            return False
        vals = [_str_lit(v) for v in inner.expressions]
        if not vals or any(v is None for v in vals):
            return False
        if negate:
            b.tag_filters.append(TagFilter(r[1], TagOp.Exists))
            b.tag_filters.append(TagFilter(r[1], TagOp.NotIn, None, tuple(vals)))
        else:
            b.tag_filters.append(TagFilter(r[1], TagOp.In, None, tuple(vals)))
        return True
    if isinstance(inner, exp.Is) and isinstance(inner.this, exp.Column) and isinstance(inner.expression, exp.Null):
        r = resolve(inner.this)
        if r is None:
            return False
        neg = negate != bool(inner.args.get("negate"))
        if r[0] == KIND_TIME:
            if neg:
                return True  # time IS NOT NULL: always true
            return False
        if r[0] != KIND_TAG:
            return False
        b.tag_filters.append(TagFilter(r[1], TagOp.Exists if neg else TagOp.NotExists))
        return True
    if not negate and isinstance(inner, (exp.RegexpLike, exp.RegexpILike)) and isinstance(inner.this, exp.Column):
        r = resolve(inner.this)
        pat = _str_lit(inner.expression)
        if r is None or r[0] != KIND_TAG or pat is None or inner.args.get("flag") is not None:
            return False
        try:
            re.compile(pat)
        except re.error:
            return False
        if isinstance(inner, exp.RegexpILike):
            pat = "(?i)" + pat
        b.tag_filters.append(TagFilter(r[1], TagOp.Regex, pat))
        return True
    return False


# --------------------------------------------------------------------------- fast path plan

_AGG_CLASSES: dict[type, AggFunc] = {
    exp.Count: AggFunc.Count, exp.Sum: AggFunc.Sum, exp.Avg: AggFunc.Mean, exp.Min: AggFunc.Min,
    exp.Max: AggFunc.Max, exp.First: AggFunc.First, exp.Last: AggFunc.Last,
    exp.Stddev: AggFunc.StdDev, exp.StddevSamp: AggFunc.StdDev, exp.Variance: AggFunc.Variance,
    exp.Median: AggFunc.Median,
}
_AGG_NAMES = {"mean": AggFunc.Mean, "avg": AggFunc.Mean, "first": AggFunc.First, "last": AggFunc.Last,
              "stddev": AggFunc.StdDev, "stddev_samp": AggFunc.StdDev, "variance": AggFunc.Variance,
              "var_samp": AggFunc.Variance, "median": AggFunc.Median, "count": AggFunc.Count,
              "sum": AggFunc.Sum, "min": AggFunc.Min, "max": AggFunc.Max}
_PCT = re.compile(r"^percentile_(\d+(?:_\d+)?)$", re.IGNORECASE)
_STRING_OK = (AggFunc.Count, AggFunc.First, AggFunc.Last)


def percentile_of(name: str) -> float | None:
    """``PERCENTILE_95`` -> 95.0 (``PERCENTILE_99_9`` -> 99.9); None if not that form."""
    m = _PCT.match(name)
    if not m:
        return None
    p = float(m.group(1).replace("_", "."))
    return p if 0 <= p <= 100 else None


def agg_call(e: exp.Expression) -> tuple[AggFunc, exp.Expression | None, float | None] | None:
    """``(function, argument, percentile)`` when ``e`` is one of the model's aggregate calls."""
    if isinstance(e, exp.Anonymous):
        name = e.name.lower()
        args = e.expressions
        p = percentile_of(name)
        if p is not None:
            return (AggFunc.Percentile, args[0], p) if len(args) == 1 else None
        f = _AGG_NAMES.get(name)
        if f is None or len(args) != 1:
            return None
        return f, args[0], None
    f = _AGG_CLASSES.get(type(e))
    if f is None:
        return None
    extra = {k for k, v in e.args.items() if v not in (None, [], False) and k not in ("this", "big_int")}
    if extra:
        return None
    return f, e.this, None


def model_aggregate(e: exp.Expression, resolve, fields: dict) -> tuple[AggFunc, str | None, float | None] | None:
    """``(function, field or None for COUNT(*), percentile)`` when ``e`` is an aggregate call the
    query model computes (COUNT(*) / COUNT(time), a field of a type the function accepts)."""
    ac = agg_call(e)
    if ac is None:
        return None
    func, arg, pct = ac
    if isinstance(arg, exp.Star):
        return (func, None, pct) if func == AggFunc.Count else None
    if not isinstance(arg, exp.Column):
        return None
    r = resolve(arg)
    if r is None:
        return None
    if r[0] == KIND_TIME and func == AggFunc.Count:
        return func, None, pct
    if r[0] != KIND_FIELD:
        return None
    if fields[r[1]] in (FieldType.STRING, FieldType.BOOLEAN) and func not in _STRING_OK:
        return None
    return func, r[1], pct


def _bucket_interval(e: exp.Expression, resolve) -> int | None:
    """Interval of ``time_bucket('5 minutes', time)`` / ``date_trunc('hour', time)``, else None."""
    if isinstance(e, exp.Anonymous) and e.name.lower() == "time_bucket" and len(e.expressions) == 2:
        iv, col = e.expressions
        if isinstance(col, exp.Column) and (resolve(col) or ("", ""))[0] == KIND_TIME:
            try:
                n = eval_interval(iv)
            except CalendarInterval:
                return None
            return n if n and n > 0 else None
        return None
    if isinstance(e, exp.TimestampTrunc) and isinstance(e.this, exp.Column):
        if (resolve(e.this) or ("", ""))[0] != KIND_TIME or e.args.get("zone") is not None:
            return None
        unit = (e.args.get("unit").name if e.args.get("unit") is not None else "").lower()
        return {"second": 10**9, "minute": 60 * 10**9, "hour": 3600 * 10**9,
                "day": 86400 * 10**9}.get(unit)
    return None


@attrs.frozen
class OutCol:
    """One fast-path output column and where its values come from."""

    name: str
    kind: str
    pgtype: str
    src: str  # "time" | "tag" | "field" | "agg"
    key: str = ""


@attrs.frozen
class FastPlan:
    """A statement the query model answers exactly, plus the post-processing it needs."""

    query: Query
    outputs: tuple[OutCol, ...]
    sort: tuple[tuple[int, bool, bool], ...] = ()  # (output index, desc, nulls_first)
    limit: int | None = None
    offset: int = 0
    post_slice: bool = False
    residual: tuple = ()  # field predicates (field, op, value) only the vector path applies
    having: tuple = ()  # HAVING as a predicate tree over the answer (:func:`having_mask`)


def _agg_type(f: AggFunc, src: FieldType | None) -> str:
    if f == AggFunc.Count:
        return "int8"
    if f == AggFunc.Sum:
        return "int8" if src == FieldType.INTEGER else ("numeric" if src == FieldType.UNSIGNED else "float8")
    if f in (AggFunc.Min, AggFunc.Max, AggFunc.First, AggFunc.Last):
        return (src or FieldType.FLOAT).sql_name
    return "float8"


def _int_lit(node) -> int | None | bool:
    """Integer literal value; None when absent; False when not a literal integer."""
    if node is None:
        return None
    e = node.args.get("expression") if isinstance(node, (exp.Limit, exp.Offset)) else node
    if isinstance(e, exp.Literal) and not e.is_string:
        try:
            v = int(e.this)
        except ValueError:
            return False
        return v if v >= 0 else False
    if isinstance(e, exp.Null):
        return None
    return False


def single_table(sel: exp.Select) -> exp.Table | None:
    """The only source of a SELECT when it is one plain table (no joins, laterals, subquery)."""
    frm = sel.args.get("from_") or sel.args.get("from")
    if frm is None or sel.args.get("joins") or sel.args.get("laterals"):
        return None
    t = frm.this
    if not isinstance(t, exp.Table) or not isinstance(t.this, exp.Identifier):
        return None
    if t.args.get("joins") or t.args.get("pivots") or t.args.get("laterals"):
        return None
    return t


def column_resolver(cat: Catalog, m: str, table: exp.Table):
    alias = table.alias_or_name

    def resolve(col: exp.Column) -> tuple[str, str] | None:
        q = col.table
        if q and q != alias and q.lower() != alias.lower() and q != table.name:
            return None
        if col.args.get("db") is not None:
            return None
        ident = col.this
        if not isinstance(ident, exp.Identifier):
            return None
        return cat.resolve_column(m, ident.this, bool(ident.args.get("quoted")))

    return resolve


_BLOCKERS = ("with", "joins", "laterals", "qualify", "windows", "distinct", "into", "locks",
             "sample", "settings", "prewhere", "connect", "match", "kind", "pivots", "options",
             "cluster", "distribute", "sort")


def plan_fast(sel: exp.Expression, cat: Catalog, now_ns: int, names: Sequence[str] | None = None,
              allow_residual: bool = False) -> FastPlan | None:
    """Plan ``sel`` on the query model, or None when it needs the general path.

    ``names`` are the output names of the select items (:func:`item_names`). With
    ``allow_residual``, an aggregate statement may also carry simple field predicates
    (:func:`field_predicate`) in :attr:`FastPlan.residual`, for the vector path.
    """
    if not isinstance(sel, exp.Select):
        return None
    for k in _BLOCKERS:
        if sel.args.get(k):
            return None
    table = single_table(sel)
    if table is None or table.args.get("db") or table.args.get("catalog"):
        return None
    m = cat.resolve_table(table.name, bool(table.this.args.get("quoted")))
    if m is None:
        return None
    if any(isinstance(n, (exp.Subquery, exp.Window, exp.Select)) and n is not sel for n in sel.walk()):
        return None
    resolve = column_resolver(cat, m, table)
    fields = cat.fields(m)

    where = sel.args.get("where")
    b = analyze_where(where.this if where is not None else None, resolve, now_ns)
    residual: list[tuple] = []
    if not b.exact:
        if not allow_residual:
            return None
        for c in b.rest:
            fp = field_predicate(c, resolve, fields)
            if fp is None:
                return None
            residual.append(fp)

    # ---- select list
    items = []  # (name, kind-of-item, payload, expr)
    if names is not None and len(names) != len(sel.expressions):
        names = None
    for ei, e in enumerate(sel.expressions):
        name = names[ei] if names is not None else output_name(e)
        inner = e.this if isinstance(e, exp.Alias) else e
        if isinstance(inner, exp.Star):
            items.append((name, "star", None, inner))
            continue
        if isinstance(inner, exp.Column):
            if isinstance(inner.this, exp.Star):
                items.append((name, "star", None, inner))
                continue
            r = resolve(inner)
            if r is None:
                return None
            items.append((name if isinstance(e, exp.Alias) else r[1], r[0], r[1], inner))
            continue
        iv = _bucket_interval(inner, resolve)
        if iv is not None:
            items.append((name, "bucket", iv, inner))
            continue
        ag = model_aggregate(inner, resolve, fields)
        if ag is None:
            return None
        items.append((name, "agg", ag, inner))

    group = sel.args.get("group")
    is_agg = bool(group) or any(kind == "agg" for _, kind, _, _ in items)

    def item_for(node: exp.Expression, order: bool = False):
        """A select item a GROUP BY / ORDER BY expression refers to (ordinal, alias, same text).

        In ORDER BY a bare name is an output column's name first (PostgreSQL), in GROUP BY an
        input column first."""
        iv = _int_lit(node)
        if isinstance(iv, int) and not isinstance(iv, bool) and not (isinstance(node, exp.Literal) and node.is_string):
            if 1 <= iv <= len(items):
                return iv - 1
            return -1
        if isinstance(node, exp.Column) and not node.table:
            aliased = [i for i, it in enumerate(items)
                       if it[0] == node.name and isinstance(sel.expressions[i], exp.Alias)]
            if order and len(aliased) == 1:
                return aliased[0]
            if resolve(node) is None:
                return aliased[0] if aliased else -1
        txt = node.sql(dialect="postgres")
        for i, it in enumerate(items):
            if it[3].sql(dialect="postgres") == txt:
                return i
        return None

    outputs: list[OutCol] = []
    if not is_agg:
        if any(k in ("bucket", "agg") for _, k, _, _ in items):
            return None
        fsel: list[str] = []
        for name, kind, payload, _ in items:
            if kind == "star":
                outputs.append(OutCol(TIME_COLUMN, KIND_TIME, "timestamp", "time"))
                for t in cat.tag_keys(m):
                    outputs.append(OutCol(t, KIND_TAG, "text", "tag", t))
                for f, ft in fields.items():
                    outputs.append(OutCol(f, KIND_FIELD, ft.sql_name, "field", f))
                    fsel.append(f)
            elif kind == KIND_TIME:
                outputs.append(OutCol(name, KIND_TIME, "timestamp", "time"))
            elif kind == KIND_TAG:
                outputs.append(OutCol(name, KIND_TAG, "text", "tag", payload))
            else:
                outputs.append(OutCol(name, KIND_FIELD, fields[payload].sql_name, "field", payload))
                fsel.append(payload)
        if not fsel:
            return None  # rows without any field: let the general path define them
        order = "Asc"
        ob = sel.args.get("order")
        if ob is not None:
            if len(ob.expressions) != 1:
                return None
            o = ob.expressions[0]
            node = o.this
            idx = item_for(node, order=True)
            ok = False
            if idx is not None and idx >= 0:
                ok = items[idx][1] == KIND_TIME
            elif isinstance(node, exp.Column):
                ok = (resolve(node) or ("", ""))[0] == KIND_TIME
            if not ok:
                return None
            order = "Desc" if o.args.get("desc") else "Asc"
        limit = _int_lit(sel.args.get("limit"))
        offset = _int_lit(sel.args.get("offset"))
        if limit is False or offset is False:
            return None
        uniq = tuple(dict.fromkeys(fsel))
        q = Query(m, b.start, b.end, tuple(b.tag_filters), uniq, (), None, (), order, limit, offset or 0,
                  tuple(residual))  # field predicates: the executor filters rows vectorised
        return FastPlan(q, tuple(outputs))

    # ---- aggregate mode
    group_tags: list[str] = []
    interval: int | None = None
    for g in (group.expressions if group else []):
        idx = item_for(g)
        if idx is not None:
            if idx < 0:
                return None
            name, kind, payload, _ = items[idx]
            if kind == KIND_TAG:
                group_tags.append(payload)
            elif kind == "bucket":
                if interval is not None and interval != payload:
                    return None
                interval = payload
            else:
                return None
            continue
        if isinstance(g, exp.Column):
            r = resolve(g)
            if r is None or r[0] != KIND_TAG:
                return None
            group_tags.append(r[1])
            continue
        iv = _bucket_interval(g, resolve)
        if iv is None or (interval is not None and interval != iv):
            return None
        interval = iv
    if len(set(group_tags)) != len(group_tags):
        group_tags = list(dict.fromkeys(group_tags))
    aggs: list[Aggregation] = []
    agg_of_item: dict[int, str] = {}
    for i, (name, kind, payload, _) in enumerate(items):
        if kind == "agg":
            func, field, pct = payload
            an = agg_of_item[i] = f"_a{len(aggs)}"
            aggs.append(Aggregation(func, field, pct, an))
            outputs.append(OutCol(name, KIND_FIELD, _agg_type(func, fields.get(field) if field else None),
                                  "agg", an))
        elif kind == KIND_TAG:
            if payload not in group_tags:
                return None
            outputs.append(OutCol(name, KIND_TAG, "text", "tag", payload))
        elif kind == "bucket":
            if interval != payload:
                return None
            outputs.append(OutCol(name, KIND_TIME, "timestamp", "time"))
        else:
            return None
    if not aggs:
        return None  # GROUP BY without aggregates (DISTINCT-like): general path
    sort: list[tuple[int, bool, bool]] = []
    ob = sel.args.get("order")
    for o in (ob.expressions if ob is not None else []):
        node = o.this
        idx = item_for(node, order=True)
        if idx is None and isinstance(node, exp.Column):
            r = resolve(node)
            if r is not None and r[0] == KIND_TIME and interval is not None:
                idx = next((i for i, it in enumerate(items) if it[1] == "bucket"), None)
            elif r is not None and r[0] == KIND_TAG:
                idx = next((i for i, it in enumerate(items) if it[1] == KIND_TAG and it[2] == r[1]), None)
        if idx is None or idx < 0:
            return None
        desc = bool(o.args.get("desc"))
        nf = o.args.get("nulls_first")
        nulls_first = bool(nf) if nf is not None else desc
        sort.append((idx, desc, nulls_first))
    limit = _int_lit(sel.args.get("limit"))
    offset = _int_lit(sel.args.get("offset"))
    if limit is False or offset is False:
        return None
    having: tuple = ()
    hv = sel.args.get("having")
    if hv is not None:
        having = _having(hv.this, items, agg_of_item, item_for, resolve, fields, group_tags, aggs)
        if having is None:
            return None
    if (group_tags or interval is not None) and not any(a.function == AggFunc.Count and a.field is None
                                                        for a in aggs):
        # SQL groups are the groups with rows; the executor's are those where an aggregate saw a
        # value. A hidden COUNT(*) (block statistics, no decoding) makes them the same.
        aggs.append(Aggregation(AggFunc.Count, None, None, "_rows"))
    q = Query(m, b.start, b.end, tuple(b.tag_filters), None, tuple(aggs), interval, tuple(group_tags))
    return FastPlan(q, tuple(outputs), tuple(sort), limit, offset or 0, True, tuple(residual), having)


_NUMERIC_AGGS = (AggFunc.Count, AggFunc.Sum, AggFunc.Mean, AggFunc.StdDev, AggFunc.Variance, AggFunc.Median,
                 AggFunc.Percentile)


def _having(node, items, agg_of_item, item_for, resolve, fields, group_tags, aggs) -> tuple | None:
    """HAVING as a predicate tree the fast path evaluates over its answer, or None (general path).

    Trees: ``("and"|"or", a, b)``, ``("not", a)``, ``("cmp", op, left, right)``,
    ``("isnull", operand, negate)``; operands ``("col", aggregation name, numeric)``,
    ``("tag", key)``, ``("lit", value)``. Aggregates that are not select items become hidden
    aggregations (``_hN``) of the query.
    """

    def operand(e):
        while isinstance(e, exp.Paren):
            e = e.this
        if isinstance(e, (exp.Literal, exp.Neg)):
            if isinstance(e, exp.Literal) and e.is_string:
                return ("lit", e.this)
            v = _const(e, FieldType.FLOAT)
            return None if v is None else ("lit", v)
        idx = item_for(e)
        if idx is not None and idx >= 0:
            name, kind, payload, _ = items[idx]
            if kind == "agg":
                func, field, _ = payload
                numeric = func in _NUMERIC_AGGS or (field is not None and fields[field] in _NUMERIC)
                return ("col", agg_of_item[idx], numeric)
            if kind == KIND_TAG and payload in group_tags:
                return ("tag", payload)
            return None
        if isinstance(e, exp.Column):
            r = resolve(e)
            if r is not None and r[0] == KIND_TAG and r[1] in group_tags:
                return ("tag", r[1])
            return None
        ag = model_aggregate(e, resolve, fields)
        if ag is None:
            return None
        func, field, pct = ag
        name = f"_h{len(aggs)}"
        aggs.append(Aggregation(func, field, pct, name))
        numeric = func in _NUMERIC_AGGS or (field is not None and fields[field] in _NUMERIC)
        return ("col", name, numeric)

    def tree(e):
        while isinstance(e, exp.Paren):
            e = e.this
        if isinstance(e, (exp.And, exp.Or)):
            a, b = tree(e.this), tree(e.expression)
            if a is None or b is None:
                return None
            return ("and" if isinstance(e, exp.And) else "or", a, b)
        if isinstance(e, exp.Not):
            a = tree(e.this)
            return None if a is None else ("not", a)
        if type(e) in _OPS:
            left, right = operand(e.this), operand(e.expression)
            if left is None or right is None or (left[0] == "lit" and right[0] == "lit"):
                return None

            def numeric(o):
                return isinstance(o[1], (int, float)) if o[0] == "lit" else (o[0] == "col" and o[2])

            def text(o):
                return isinstance(o[1], str) if o[0] == "lit" else (o[0] == "tag" or (o[0] == "col" and not o[2]))

            if not ((numeric(left) and numeric(right)) or (text(left) and text(right))):
                return None
            return ("cmp", _OPS[type(e)], left, right)
        if isinstance(e, exp.Is) and isinstance(e.expression, exp.Null):
            o = operand(e.this)
            if o is None or o[0] == "lit":
                return None
            return ("isnull", o, bool(e.args.get("negate")))
        return None

    return tree(node)


@attrs.frozen
class LatestPlan:
    """``SELECT DISTINCT ON (tags) ... ORDER BY tags, time DESC``: the last row per tag group."""

    raw: FastPlan  # the same SELECT without DISTINCT ON / ORDER BY / LIMIT (outputs, fields, pushdown)
    keys: tuple[str, ...]
    key_desc: tuple[bool, ...]
    limit: int | None
    offset: int


def plan_latest(sel: exp.Expression, cat: Catalog, now_ns: int, names: Sequence[str] | None = None
                ) -> LatestPlan | None:
    """Recognise the last-point-per-series query; None when it is anything else."""
    if not isinstance(sel, exp.Select):
        return None
    d = sel.args.get("distinct")
    if d is None or d.args.get("on") is None:
        return None
    table = single_table(sel)
    if table is None:
        return None
    m = cat.resolve_table(table.name, bool(table.this.args.get("quoted")))
    if m is None:
        return None
    resolve = column_resolver(cat, m, table)
    on = d.args["on"]
    on_exprs = on.expressions if isinstance(on, exp.Tuple) else [on]
    keys = []
    for e in on_exprs:
        if not isinstance(e, exp.Column):
            return None
        r = resolve(e)
        if r is None or r[0] != KIND_TAG:
            return None
        keys.append(r[1])
    ob = sel.args.get("order")
    if ob is None or len(ob.expressions) != len(keys) + 1:
        return None
    key_desc = []
    for o, k in zip(ob.expressions[:-1], keys):
        if not isinstance(o.this, exp.Column) or (resolve(o.this) or ("", ""))[1] != k:
            return None
        if o.args.get("nulls_first") not in (None, bool(o.args.get("desc"))):
            return None
        key_desc.append(bool(o.args.get("desc")))
    last = ob.expressions[-1]
    if not (isinstance(last.this, exp.Column) and (resolve(last.this) or ("", ""))[0] == KIND_TIME
            and last.args.get("desc")):
        return None
    limit = _int_lit(sel.args.get("limit"))
    offset = _int_lit(sel.args.get("offset"))
    if limit is False or offset is False:
        return None
    raw_sel = sel.copy()
    for k in ("distinct", "order", "limit", "offset"):
        raw_sel.set(k, None)
    raw = plan_fast(raw_sel, cat, now_ns, names)
    if raw is None or raw.query.aggregations:
        return None
    return LatestPlan(raw, tuple(keys), tuple(key_desc), limit, offset or 0)
