"""Plan cache for SQL statements that differ only in their literals (and in ``now()``).

Dashboards, Grafana panels and alerting rules send the same statement shape again and again with
other host names, other time windows, or the same text at another ``now()``. Parsing and
translating such a statement costs 1 to 2 ms in sqlglot, more than answering it, so the fast-path
plan (a :class:`~rusts.sql.translate.FastPlan` or :class:`~rusts.sql.translate.LatestPlan`) is
cached as a template and re-instantiated with the new literal values.

How a template is learned from one statement (once per shape; costs a few translations):

1. The statement's literals are found by a small tokenizer (quoted identifiers are skipped;
   statements with comments, ``$`` parameters or dollar quoting are never cached).
2. The statement is planned as usual: plan P.
3. Each literal in turn is replaced by a sentinel value and the statement planned again. The two
   plans must have the same shape; every leaf that changed must be the literal itself (strings),
   or the literal plus a constant (numbers: ``time <= 5`` gives ``end = 6``). Those leaves become
   slots fed by that literal. A literal that changes anything else (an ``INTERVAL``, a
   ``time_bucket`` width, an ISO timestamp, an output name) is not a parameter: it stays part of
   the cache key. ``now()`` is probed the same way (shifted by an odd number of nanoseconds).
4. A leaf claimed by two sources rejects the template (``time >= a AND time >= b``).
5. Templates are kept per *order pattern* of their numeric parameters (and of their string
   parameters), so that plans that compare literals (min/max of bounds, sorted IN lists) are only
   reused where the same comparisons hold.
6. The template is verified: instantiated with other values (an order-preserving shift of every
   parameter) it must equal the plan of the statement written with those values. Otherwise the
   shape is marked uncacheable.

The catalog facts a plan used (measurement list, tag keys, field types) are recorded while
learning and re-checked on every hit, so a schema change (new field, dropped table) is never
answered with a stale plan.
"""

from __future__ import annotations

import collections
import enum
import functools
import re
import threading
from typing import Any, Callable, NamedTuple

import attrs
import numpy as np

from rusts.sql.literals import _ISO, parse_time_text

# Quoted identifiers (skipped), string literals, numbers, and things that make a statement
# uncacheable (comments, $-parameters, dollar quoting).
_TOKEN = re.compile(r"""(?=["'\d$/-])(?:  # (the lookahead skips other positions 2.5x faster)
    (?P<ident>"(?:[^"]|"")*")
  | (?P<str>'(?:[^']|'')*')
  | (?P<num>(?<![\w$.])\d+(?:\.\d+)?(?:[eE][+-]?\d+)?(?![\w$.]))
  | (?P<bad>--|/\*|\$)
)""", re.VERBOSE)

_NOW = re.compile(r"\b(now|current_timestamp|current_date|current_time|localtimestamp|localtime)\b",
                  re.IGNORECASE)

NOW_SHIFT = 7 * 86400 * 10**9 + 1_234_567_891  # odd, not a multiple of any bucket width
_INT_SENTINEL = 1_000_000_007
_MAX_LITERALS = 24
_INT64 = (-(2**63), 2**63 - 1)


class _Mismatch(Exception):
    pass


class Literal(NamedTuple):
    start: int
    end: int
    kind: str  # "s" | "t" (a string that reads as an ISO-8601 time; value in ns) | "i" | "f"
    text: str
    value: Any


def _time_text(s: str) -> int | None:
    """ns of a string literal written as an ISO-8601 date/time (TSBS and Grafana send
    ``time >= '2016-01-01 05:23:00'``), else None: such a literal is a number-like parameter."""
    if not _ISO.match(s):
        return None
    ns = parse_time_text(s)
    return ns if ns is not None and _TIME_RANGE[0] <= ns <= _TIME_RANGE[1] else None


_TIME_RANGE = (-(2**62), 2**62)  # (years 1823-2116: renders back as a 4-digit year)


def literals(text: str) -> tuple[Literal, ...] | None:
    """The literals of ``text`` in order, or None when the statement must not be cached
    (memoised: the authorisation, the lookup and the learning of one statement all ask)."""
    return _literals(text)


@functools.lru_cache(maxsize=256)
def _literals(text: str) -> tuple[Literal, ...] | None:
    out = []
    for m in _TOKEN.finditer(text):
        kind = m.lastgroup
        if kind == "ident":
            continue
        if kind == "bad":
            return None
        raw = m.group()
        if kind == "str":
            # a prefixed string (E'..', B'..', X'..', U&'..') is not a plain literal
            if m.start() > 0 and (text[m.start() - 1].isalnum() or text[m.start() - 1] in "_&"):
                return None
            value = raw[1:-1].replace("''", "'")
            ns = _time_text(value)
            if ns is None:
                out.append(Literal(m.start(), m.end(), "s", raw, value))
            else:
                out.append(Literal(m.start(), m.end(), "t", raw, ns))
        elif any(c in raw for c in ".eE"):
            out.append(Literal(m.start(), m.end(), "f", raw, float(raw)))
        else:
            out.append(Literal(m.start(), m.end(), "i", raw, int(raw)))
        if len(out) > _MAX_LITERALS:
            return None
    return tuple(out)


def _render(kind: str, value) -> str:
    if kind == "s":
        return "'" + value.replace("'", "''") + "'"
    if kind == "t":  # naive UTC with the nanoseconds (what parse_time_text reads back)
        return "'" + str(np.datetime64(int(value), "ns")).replace("T", " ") + "'"
    if kind == "f":
        return repr(float(value))
    return str(int(value))


def _substitute(text: str, lits: list[Literal], values: dict[int, Any]) -> str:
    parts = []
    pos = 0
    for i, lit in enumerate(lits):
        if i in values:
            parts.append(text[pos:lit.start])
            parts.append(_render(lit.kind, values[i]))
            pos = lit.end
    parts.append(text[pos:])
    return "".join(parts)


# --------------------------------------------------------------------------- plan trees

_SCALARS = (str, int, float, bool, type(None), enum.Enum, bytes)


def _diff(a, b, path: tuple, out: list) -> None:
    if type(a) is not type(b):
        raise _Mismatch
    if isinstance(a, _SCALARS):
        if a != b:
            out.append((path, a, b))
        return
    if attrs.has(type(a)):
        for f in attrs.fields(type(a)):
            _diff(getattr(a, f.name), getattr(b, f.name), path + (f.name,), out)
        return
    if isinstance(a, (tuple, list)):
        if len(a) != len(b):
            raise _Mismatch
        for i, (x, y) in enumerate(zip(a, b)):
            _diff(x, y, path + (i,), out)
        return
    if isinstance(a, dict):
        if list(a) != list(b):
            raise _Mismatch
        for k in a:
            _diff(a[k], b[k], path + (k,), out)
        return
    if a != b:
        raise _Mismatch


def _get(obj, path: tuple):
    for p in path:
        obj = getattr(obj, p) if isinstance(p, str) and attrs.has(type(obj)) else obj[p]
    return obj


def _set(obj, path: tuple, value):
    if not path:
        return value
    head, rest = path[0], path[1:]
    if isinstance(obj, dict):
        new = dict(obj)
        new[head] = _set(obj[head], rest, value)
        return new
    if isinstance(obj, (tuple, list)):
        items = list(obj)
        items[head] = _set(items[head], rest, value)
        return type(obj)(items) if isinstance(obj, list) else tuple(items)
    return attrs.evolve(obj, **{head: _set(getattr(obj, head), rest, value)})


@attrs.frozen
class Slot:
    path: tuple
    source: int  # literal index, or -1 for now()
    offset: Any  # numbers: leaf = cast(source + offset); strings: 0
    cast: type


@attrs.frozen
class Template:
    plan: Any
    slots: tuple[Slot, ...]
    facts: tuple  # ((method, arg, result), ...) catalog facts the plan relied on

    def instantiate(self, values: dict[int, Any]):
        updates: dict = {}  # path tree of the new leaves: each object on a path is rebuilt once
        for s in self.slots:
            v = values[s.source]
            if s.cast is str:
                leaf = v
            elif s.cast is float:
                leaf = float(v)
            else:
                leaf = v + s.offset
            node = updates
            for p in s.path[:-1]:
                node = node.setdefault(p, {})
            node[s.path[-1]] = _Leaf(leaf)
        return _apply(self.plan, updates) if updates else self.plan


class _Leaf:
    __slots__ = ("value",)

    def __init__(self, value) -> None:
        self.value = value


def _apply(obj, updates: dict):
    """``obj`` with the leaves of the path tree ``updates`` replaced (copy on write)."""
    new = {k: (u.value if isinstance(u, _Leaf) else _apply(obj[k] if isinstance(obj, (dict, tuple, list))
                                                             else getattr(obj, k), u))
           for k, u in updates.items()}
    if isinstance(obj, dict):
        return {**obj, **new}
    if isinstance(obj, (tuple, list)):
        items = list(obj)
        for k, v in new.items():
            items[k] = v
        return items if isinstance(obj, list) else tuple(items)
    return _evolve(obj, new)


_set_attr = object.__setattr__


@functools.lru_cache(maxsize=None)
def _plain_fields(cls) -> tuple[str, ...] | None:
    """The attribute names of an attrs class whose ``__init__`` only stores its arguments (no
    validator, converter, post-init or cached hash), or None: such an object can be copied
    field by field, twice as fast as :func:`attrs.evolve`."""
    if not attrs.has(cls) or hasattr(cls, "__attrs_post_init__") or "__attrs_pre_init__" in vars(cls):
        return None
    fields = attrs.fields(cls)
    if any(a.validator is not None or a.converter is not None or not a.init for a in fields):
        return None
    names = tuple(a.name for a in fields)
    if not hasattr(cls, "__slots__") or set(cls.__slots__) - set(names) - {"__weakref__"}:
        return None  # other state (a __dict__, a cached hash): leave it to attrs
    return names


def _evolve(obj, changes: dict):
    names = _plain_fields(type(obj))
    if names is None:
        return attrs.evolve(obj, **changes)
    new = object.__new__(type(obj))
    for name in names:
        _set_attr(new, name, changes[name] if name in changes else getattr(obj, name))
    return new


def _order_pattern(vals: list) -> tuple:
    if len(vals) < 2:
        return ()
    ranks = {v: i for i, v in enumerate(sorted(set(vals)))}
    return tuple(ranks[v] for v in vals)


@attrs.define
class _Family:
    """All templates of one normalised text: which literals are parameters, then per values of
    the other literals and order pattern, the template (or None: uncacheable)."""

    params: tuple[bool, ...]
    uses_now: bool
    templates: dict = attrs.field(factory=dict)


class RecordingCatalog:
    """Wraps a catalog and records every fact read from it (for re-checking on a cache hit)."""

    def __init__(self, inner):
        self._inner = inner
        self.facts: list = []

    def measurements(self):
        r = self._inner.measurements()
        self.facts.append(("measurements", None, tuple(r)))
        return r

    def tag_keys(self, m):
        r = self._inner.tag_keys(m)
        self.facts.append(("tag_keys", m, tuple(r)))
        return r

    def fields(self, m):
        r = self._inner.fields(m)
        self.facts.append(("fields", m, tuple(r.items())))
        return r

    def __getattr__(self, name):
        # resolve_table / resolve_column and friends, bound to this wrapper so that their reads
        # of measurements/tag_keys/fields are recorded
        fn = getattr(type(self._inner), name)
        if callable(fn):
            return fn.__get__(self)
        return getattr(self._inner, name)


def facts_hold(cat, facts: tuple) -> bool:
    for method, arg, result in facts:
        if method == "measurements":
            if tuple(cat.measurements()) != result:
                return False
        elif method == "tag_keys":
            if tuple(cat.tag_keys(arg)) != result:
                return False
        elif tuple(cat.fields(arg).items()) != result:
            return False
    return True


class PlanCache:
    """Templates by normalised statement text (LRU, bounded)."""

    def __init__(self, maxsize: int = 256):
        self.maxsize = maxsize
        self._families: collections.OrderedDict[str, _Family | None] = collections.OrderedDict()
        self._lock = threading.Lock()
        self._learning: dict[str, Any] = {}  # shape -> its learning steps (in the background)
        self.hits = 0
        self.misses = 0

    @staticmethod
    def _key(text: str, lits: list[Literal]) -> str:
        parts = []
        pos = 0
        for lit in lits:
            parts.append(text[pos:lit.start])
            parts.append("\x00" + lit.kind)
            pos = lit.end
        parts.append(text[pos:])
        return "".join(parts)

    @staticmethod
    def _sub_key(fam: _Family, lits: list[Literal], values: dict[int, Any]) -> tuple:
        fixed = tuple(lit.text for lit, p in zip(lits, fam.params) if not p)
        nums = [values[i] for i, lit in enumerate(lits) if fam.params[i] and lit.kind != "s"]
        if fam.uses_now:
            nums.append(values[-1])
        strs = [values[i] for i, lit in enumerate(lits) if fam.params[i] and lit.kind == "s"]
        return fixed, _order_pattern(nums), _order_pattern(strs)

    def lookup(self, text: str, now_ns: int, cat) -> tuple[Any, bool]:
        """``(plan, cacheable)``: the instantiated plan on a hit; ``(None, False)`` when this
        statement shape is known to be uncacheable (or cannot be), ``(None, True)`` on a miss."""
        lits = literals(text)
        if lits is None:
            return None, False
        key = self._key(text, lits)
        with self._lock:
            fam = self._families.get(key, _ABSENT)
            if fam is not _ABSENT:
                self._families.move_to_end(key)
        if fam is _ABSENT:
            self.misses += 1
            return None, True
        if fam is None:
            return None, False
        values = {i: lit.value for i, lit in enumerate(lits)}
        values[-1] = now_ns
        tpl = fam.templates.get(self._sub_key(fam, lits, values), _ABSENT)
        if tpl is _ABSENT:
            self.misses += 1
            return None, True
        if tpl is None:
            return None, False
        verified = getattr(cat, "verified", None)  # a catalog is immutable: check each template once
        if verified is None or verified.get(id(tpl)) is not tpl:
            if not facts_hold(cat, tpl.facts):
                self.misses += 1
                return None, True
            if verified is not None:
                verified[id(tpl)] = tpl
        for s in tpl.slots:
            if s.cast is int and not _INT64[0] <= values[s.source] + s.offset <= _INT64[1]:
                return None, False
        self.hits += 1
        return tpl.instantiate(values), True

    def learn(self, text: str, now_ns: int, cat, plan_fn: Callable[[str, int, Any], Any]) -> None:
        """Learn the template of ``text`` (whose plan, ``plan_fn(text, now, cat)``, is not None).

        ``plan_fn`` raises on statements it cannot plan; returns None for statements the fast
        paths do not answer.
        """
        lits = literals(text)
        if lits is not None:
            for _ in self._learn_steps(text, now_ns, cat, plan_fn, lits):
                pass

    def start_learning(self, text: str, now_ns: int, cat, plan_fn) -> str | None:
        """Register the step-wise learning of ``text``'s shape (see :meth:`drive`); its key, or
        None when it cannot be cached or is already being learned."""
        lits = literals(text)
        if lits is None:
            return None
        key = self._key(text, lits)
        if key in self._learning:
            return None
        self._learning[key] = self._learn_steps(text, now_ns, cat, plan_fn, lits)
        return key

    async def drive(self, key: str) -> None:
        """Run a registered learning to its end, yielding to the event loop between plans (each
        costs a sqlglot parse and translation, ~1 ms), so that requests are not held up while a
        template is learned. A statement of the same shape that misses meanwhile advances the
        learning by one step itself (:meth:`advance`), so a caller that never yields still gets
        the template."""
        import trio

        try:
            while self._step(key):
                await trio.sleep(0)
        finally:
            self._learning.pop(key, None)

    def advance(self, text: str) -> bool:
        """One step of the background learning of ``text``'s shape; False when none is running."""
        lits = literals(text)
        if lits is None:
            return False
        key = self._key(text, lits)
        if key not in self._learning:
            return False
        self._step(key)
        return True

    def _step(self, key: str) -> bool:
        steps = self._learning.get(key)
        if steps is None:
            return False
        try:
            next(steps)
        except StopIteration:
            self._learning.pop(key, None)
            return False
        return True

    def _learn_steps(self, text, now_ns, cat, plan_fn, lits):
        """Generator: learns the template of ``text`` one plan per step, then stores it."""
        key = self._key(text, lits)
        try:
            fam, sub, tpl = yield from self._build(text, now_ns, cat, lits, plan_fn)
        except Exception:  # noqa: BLE001 - learning never fails a statement; just do not cache
            fam, sub, tpl = None, None, None
        with self._lock:
            old = self._families.get(key, _ABSENT)
            if fam is None:
                if old is _ABSENT:
                    self._families[key] = None
            else:
                if old is _ABSENT or old is None or old.params != fam.params or old.uses_now != fam.uses_now:
                    self._families[key] = fam
                    old = fam
                old.templates[sub] = tpl
                if len(old.templates) > 64:
                    old.templates.pop(next(iter(old.templates)))
            self._families.move_to_end(key)
            while len(self._families) > self.maxsize:
                self._families.popitem(last=False)

    def _build(self, text, now_ns, cat, lits, plan_fn):
        """Generator (one ``yield`` after each plan) returning ``(family, sub key, template)``."""
        rec = RecordingCatalog(cat)
        base = plan_fn(text, now_ns, rec)
        yield
        if base is None:
            return None, None, None
        claimed: dict[tuple, Slot] = {}
        params = []

        def probe(source: int, value, sentinel, plan) -> bool:
            diffs: list = []
            try:
                _diff(base, plan, (), diffs)
            except _Mismatch:
                return False
            slots = []
            for path, a, b in diffs:
                if isinstance(value, str):
                    if not (a == value and b == sentinel):
                        return False
                    slots.append(Slot(path, source, 0, str))
                elif type(a) is float:
                    if not (a == value and b == sentinel):
                        return False
                    slots.append(Slot(path, source, 0.0, float))
                elif type(a) is int and type(value) is int:
                    if b - a != sentinel - value:
                        return False
                    slots.append(Slot(path, source, a - value, int))
                else:
                    return False
            for s in slots:
                if s.path in claimed:
                    raise _Mismatch  # two sources feed one leaf: not a template
                claimed[s.path] = s
            return True

        for i, lit in enumerate(lits):
            if lit.kind == "s":
                sentinel = lit.value + "\x01" + str(i)
            elif lit.kind in ("i", "t"):
                sentinel = lit.value + _INT_SENTINEL
            else:
                sentinel = lit.value + 1.25
            try:
                plan = plan_fn(_substitute(text, lits, {i: sentinel}), now_ns, RecordingCatalog(cat))
            except Exception:  # noqa: BLE001 - this literal is not a free parameter
                plan = None
            yield
            params.append(plan is not None and probe(i, lit.value, sentinel, plan))
        plan_now = plan_fn(text, now_ns + NOW_SHIFT, RecordingCatalog(cat))
        yield
        if plan_now is None or not probe(-1, now_ns, now_ns + NOW_SHIFT, plan_now):
            return None, None, None
        uses_now = any(s.source == -1 for s in claimed.values())
        # a literal that was a parameter but fed no leaf is fine (its value does not matter)
        fam = _Family(tuple(params), uses_now)
        tpl = Template(base, tuple(claimed.values()), tuple(rec.facts))
        values = {i: lit.value for i, lit in enumerate(lits)}
        values[-1] = now_ns
        sub = self._sub_key(fam, lits, values)
        # verify with an order-preserving shift of every parameter
        nums = sorted({values[i] for i in range(len(lits)) if params[i] and lits[i].kind != "s"}
                      | ({now_ns} if uses_now else set()))
        shift = {v: (k + 1) * 1_000_003 for k, v in enumerate(nums)}
        vvals = dict(values)
        for i, lit in enumerate(lits):
            if not params[i]:
                continue
            if lit.kind == "s":
                vvals[i] = lit.value + "\x02v"
            elif lit.kind == "i":
                vvals[i] = lit.value + shift[lit.value]
            else:
                vvals[i] = lit.value + shift[lit.value]
        if uses_now:
            vvals[-1] = now_ns + shift[now_ns]
        vtext = _substitute(text, lits, {i: vvals[i] for i in range(len(lits)) if params[i]})
        expect = plan_fn(vtext, vvals[-1], RecordingCatalog(cat))
        yield
        if expect is None or tpl.instantiate(vvals) != expect:
            return None, None, None
        return fam, sub, tpl


_ABSENT = object()
