"""Result column names and types of catalog statements (PostgreSQL's FigureColname and the catalog
column types), which DuckDB's own types cannot say."""

from __future__ import annotations

import re

from sqlglot import exp

from rusts.pgcatalog import generated_data as _data
from rusts.pgcatalog.facts import _FUNCTIONS, _NODE_FUNC_NAMES, _pg_type_name


# ---------------------------------------------------------------------------------------------
# result column names and types (PostgreSQL's FigureColname and the catalog column types)
# ---------------------------------------------------------------------------------------------

_RELATION_COLS: dict[tuple[str, str], list[tuple[str, str]]] = {
    (nsp, rel): cols for (nsp, rel), (_o, _k, _t, cols) in _data.RELATIONS.items()
}
_FUNC_TYPES: dict[str, str] = {name: spec[1] for name, spec in _FUNCTIONS.items()}
_FUNC_TYPES.update({
    "count": "int8", "string_agg": "text", "row_number": "int8", "rank": "int8", "dense_rank": "int8",
    "array_to_string": "text", "replace": "text", "lower": "text", "upper": "text", "concat": "text",
    "btrim": "text", "ltrim": "text", "rtrim": "text", "substring": "text", "trim": "text",
    "string_to_array": "_text", "json_build_object": "json", "json_agg": "json", "to_char": "text",
    "length": "int4", "char_length": "int4", "generate_subscripts": "int4", "now": "timestamptz",
    "bool_and": "bool", "bool_or": "bool", "every": "bool", "quote_literal": "text", "split_part": "text",
    "regexp_replace": "text", "left": "text", "right": "text", "position": "int4", "strpos": "int4",
})
# functions whose result type is their first argument's
_SAME_TYPE = {"min", "max", "coalesce", "nullif", "greatest", "least", "first", "last", "sum", "abs"}
_BOOL_NODES = (exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE, exp.And, exp.Or, exp.Not, exp.Is, exp.In,
               exp.Like, exp.ILike, exp.RegexpLike, exp.RegexpILike, exp.Exists, exp.Between, exp.Boolean,
               exp.Any, exp.All, exp.NullSafeEQ, exp.NullSafeNEQ)


def _ident_name(ident: exp.Expression | None) -> str:
    if ident is None:
        return "?column?"
    if isinstance(ident, exp.Identifier):
        return ident.this if ident.quoted else ident.this.lower()
    return ident.name.lower()


class _Typer:
    """Infers PostgreSQL output column names and types of a parsed (original) statement."""

    def __init__(self, tree: exp.Expression) -> None:
        self.ctes: dict[str, exp.Expression] = {}
        for cte in tree.find_all(exp.CTE):
            self.ctes[cte.alias_or_name.lower()] = cte

    def columns(self, q: exp.Expression) -> list[tuple[str, str | None]]:
        if isinstance(q, exp.Subquery):
            return self.columns(q.this)
        if isinstance(q, exp.SetOperation):
            return self.columns(q.this)
        if isinstance(q, exp.Paren):
            return self.columns(q.this)
        if not isinstance(q, exp.Select):
            return []
        sources = self.sources(q)
        out: list[tuple[str, str | None]] = []
        for e in q.expressions:
            if isinstance(e, exp.Star):
                for cols in sources.values():
                    out.extend(cols)
            elif isinstance(e, exp.Column) and isinstance(e.this, exp.Star):
                out.extend(sources.get(e.table.lower(), []))
            elif isinstance(e, exp.Alias):
                out.append((_ident_name(e.args.get("alias")), self.type_of(e.this, sources)))
            else:
                out.append((self.name_of(e), self.type_of(e, sources)))
        return out

    def sources(self, q: exp.Select) -> dict[str, list[tuple[str, str | None]]]:
        out: dict[str, list[tuple[str, str | None]]] = {}
        items = []
        if q.args.get("from_") is not None:
            items.append(q.args["from_"].this)
        elif q.args.get("from") is not None:
            items.append(q.args["from"].this)
        for j in q.args.get("joins") or []:
            items.append(j.this)
        for item in items:
            alias = item.alias_or_name.lower() if item.alias_or_name else ""
            cols: list[tuple[str, str | None]] = []
            if isinstance(item, exp.Table) and isinstance(item.this, exp.Identifier):
                name = item.name.lower()
                db = item.db.lower() if item.db else ""
                if not db and name in self.ctes:
                    cte = self.ctes[name]
                    cols = self.columns(cte.this)
                    names = cte.args.get("alias") and cte.args["alias"].columns
                    if names:
                        cols = [(_ident_name(n), cols[i][1] if i < len(cols) else None) for i, n in enumerate(names)]
                else:
                    nsp = "information_schema" if db == "information_schema" else "pg_catalog"
                    cols = [(c, t) for c, t in _RELATION_COLS.get((nsp, name), [])]
            elif isinstance(item, exp.Subquery):
                cols = self.columns(item.this)
            elif isinstance(item, exp.Table):
                cols = []
            alias_cols = item.args.get("alias") and item.args["alias"].columns
            if alias_cols:
                kinds = [c[1] for c in cols] or ["int4"] * len(alias_cols)
                cols = [(_ident_name(n), kinds[i] if i < len(kinds) else None) for i, n in enumerate(alias_cols)]
            out[alias] = cols
        return out

    def name_of(self, e: exp.Expression) -> str:
        return self._figure(e)[0]

    def _figure(self, e: exp.Expression) -> tuple[str, int]:
        """PostgreSQL's FigureColnameInternal: (name, strength); 2 = a real name, 1 = a type
        name or ``case``, 0 = nothing (``?column?``)."""
        if isinstance(e, exp.Column):
            return _ident_name(e.this), 2
        if isinstance(e, exp.Dot):
            if isinstance(e.expression, exp.Identifier):
                return _ident_name(e.expression), 2
            return self._figure(e.expression)
        if isinstance(e, (exp.Paren, exp.Bracket, exp.Window)):
            return self._figure(e.this)
        if isinstance(e, exp.Cast):
            name, strength = self._figure(e.this)
            if strength >= 2:
                return name, strength
            return _pg_type_name(e.to).lstrip("_"), 1
        if isinstance(e, exp.Case):
            default = e.args.get("default")
            name, strength = self._figure(default) if default is not None else ("?column?", 0)
            return (name, 2) if strength >= 2 else ("case", 1)
        if isinstance(e, exp.If):
            return "case", 1
        if isinstance(e, exp.Array):
            return "array", 2
        if isinstance(e, exp.Exists):
            return "exists", 2
        if isinstance(e, exp.Subquery):
            cols = self.columns(e.this)
            return (cols[0][0], 2) if cols else ("?column?", 0)
        if isinstance(e, exp.Boolean):
            return "bool", 1
        if isinstance(e, exp.Anonymous):
            return e.name.lower(), 2
        if type(e) in _NODE_FUNC_NAMES:
            return _NODE_FUNC_NAMES[type(e)], 2
        if isinstance(e, exp.Func) and not isinstance(e, (exp.Binary, exp.Connector, exp.Not, exp.Neg)):
            return (e.sql_name().lower(), 2) if hasattr(e, "sql_name") else ("?column?", 0)
        return "?column?", 0

    def type_of(self, e: exp.Expression, sources: dict[str, list[tuple[str, str | None]]]) -> str | None:
        if isinstance(e, exp.Column):
            name = _ident_name(e.this)
            if e.table:
                for c, t in sources.get(e.table.lower(), []):
                    if c == name:
                        return t
                return None
            for cols in sources.values():
                for c, t in cols:
                    if c == name:
                        return t
            return None
        if isinstance(e, exp.Paren):
            return self.type_of(e.this, sources)
        if isinstance(e, exp.Cast):
            return _pg_type_name(e.to)
        if isinstance(e, exp.Literal):
            if e.is_string:
                return "text"
            text = str(e.this)
            if re.fullmatch(r"-?\d+", text):
                return "int4" if abs(int(text)) < 2**31 else "int8"
            return "numeric"
        if isinstance(e, exp.Null):
            return "text"
        if isinstance(e, _BOOL_NODES):
            return "bool"
        if isinstance(e, (exp.Case, exp.If)):
            branches = [i.args.get("true") for i in e.args.get("ifs") or []] + [e.args.get("default")]
            if isinstance(e, exp.If):
                branches = [e.args.get("true"), e.args.get("false")]
            for b in branches:
                if b is not None and not isinstance(b, exp.Null):
                    return self.type_of(b, sources)
            return "text"
        if isinstance(e, exp.Subquery):
            cols = self.columns(e.this)
            return cols[0][1] if cols else None
        if isinstance(e, exp.Array):
            if len(e.expressions) == 1 and isinstance(e.expressions[0], (exp.Select, exp.Subquery)):
                cols = self.columns(e.expressions[0])
                return "_" + cols[0][1] if cols and cols[0][1] else None
            if e.expressions:
                t = self.type_of(e.expressions[0], sources)
                return "_" + t if t else None
            return "_text"
        if isinstance(e, exp.Bracket):
            t = self.type_of(e.this, sources)
            if t in ("int2vector",):
                return "int2"
            if t in ("oidvector",):
                return "oid"
            return t[1:] if t and t.startswith("_") else None
        if isinstance(e, exp.DPipe):
            return "text"
        if isinstance(e, exp.Dot) and isinstance(e.expression, exp.Identifier) and \
                "_pg_expandarray" in e.this.sql("postgres").lower():
            return {"n": "int4", "x": "int2"}.get(e.expression.name.lower())
        if isinstance(e, exp.Window):
            return self.type_of(e.this, sources)
        if isinstance(e, (exp.Add, exp.Sub, exp.Mul, exp.Div, exp.Mod)):
            return self.type_of(e.this, sources)
        if isinstance(e, exp.ArrayAgg):
            inner = e.this
            if isinstance(inner, exp.Order):
                inner = inner.this
            t = self.type_of(inner, sources)
            return "_" + t if t else None
        name = self.name_of(e)
        if name in _SAME_TYPE:
            args = [a for a in ([e.this] if e.args.get("this") is not None else []) + list(e.expressions)]
            if args:
                return self.type_of(args[0], sources)
        if name in _FUNC_TYPES:
            return _FUNC_TYPES[name]
        if name == "avg":
            return "numeric"
        return None


_DUCK_TO_PG = {
    "BOOLEAN": "bool", "TINYINT": "int2", "SMALLINT": "int2", "INTEGER": "int4", "BIGINT": "int8",
    "HUGEINT": "numeric", "UTINYINT": "int2", "USMALLINT": "int4", "UINTEGER": "int8", "UBIGINT": "numeric",
    "FLOAT": "float4", "DOUBLE": "float8", "VARCHAR": "text", "DATE": "date", "TIMESTAMP": "timestamp",
    "TIMESTAMP WITH TIME ZONE": "timestamptz", "JSON": "json", "BLOB": "bytea", "INTERVAL": "interval",
}


def _pg_of_duck(duck: str) -> str:
    duck = str(duck)
    if duck.endswith("[]"):
        return "_" + _pg_of_duck(duck[:-2])
    if duck.startswith("DECIMAL"):
        return "numeric"
    return _DUCK_TO_PG.get(duck, "text")
