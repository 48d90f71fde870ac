"""WHERE analysis: time bounds, tag predicates and field predicates a query can take, the rest
left as residual conditions."""

from __future__ import annotations


import re
from collections.abc import Callable

import attrs
from sqlglot import exp

from rusts.model import FieldType
from rusts.query.model import MAX_TIME, MIN_TIME, TagFilter, TagOp
from rusts.sql.output import KIND_FIELD, KIND_TAG, KIND_TIME
from rusts.sql.literals import CalendarInterval, eval_time


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


def predicate_tree(c: exp.Expression, resolve, fields: dict) -> tuple | None:
    """AND/OR of :func:`field_predicate` predicates as ``("and" | "or", None, (p, ...))``
    (:func:`rusts.query.executor.predicate_mask` evaluates it), else None."""
    while isinstance(c, exp.Paren):
        c = c.this
    if isinstance(c, (exp.And, exp.Or)):
        parts = []
        for side in (c.this, c.expression):
            p = field_predicate(side, resolve, fields) or predicate_tree(side, resolve, fields)
            if p is None:
                return None
            parts.append(p)
        return ("and" if isinstance(c, exp.And) else "or", None, tuple(parts))
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
            try:
                t = eval_time(right, now_ns)
            except CalendarInterval:  # now() - interval '1 year': no fixed length; DuckDB's
                return False  # calendar arithmetic applies it (the general path)
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
