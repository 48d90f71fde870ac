"""Statement rewrite: a client's catalog statement (PostgreSQL dialect) made runnable on the DuckDB
catalog database (relations, reg* casts, arrays, operators, system functions)."""

from __future__ import annotations

import re
from collections.abc import Sequence

from sqlglot import exp

from rusts.pgcatalog import generated_data as _data
from rusts.errors import (QueryError, UnknownTableError, UnsupportedError)
from rusts.pgcatalog.facts import (
    OWNER_OID, TYPE_OIDS, _CATALOG_NAMES, _Catalog, _DUCK_TYPES, _FUNCTIONS, _INFO_NAMES,
    _NAMESPACES, _NODE_FUNC_NAMES, _NODE_NAMES, _call, _coerce, _duck_type, _is_expandarray,
    _literal, _parse_pg_array, _pg_type_name,
)


# ---------------------------------------------------------------------------------------------
# statement rewrite
# ---------------------------------------------------------------------------------------------

_ARRAY_CAST = re.compile(r"(::\s*|\bAS\s+)((?:pg_catalog\s*\.\s*)?)(\"?[A-Za-z_][A-Za-z0-9_]*\"?)\s*\[\s*\]", re.I)
_REG_TYPES = ("regclass", "regtype", "regproc", "regprocedure", "regnamespace", "regrole", "regoper",
              "regoperator", "regconfig", "regdictionary", "regcollation")


class _Rewriter:
    """Rewrites one parsed PostgreSQL statement for the DuckDB emulation."""

    def __init__(self, catalog: _Catalog, database: str, user: str, params: Sequence | None) -> None:
        self.catalog = catalog
        self.session = (database, user)
        self.params = list(params or [])
        self.ctes: set[str] = set()

    def param(self, node: exp.Expression) -> exp.Expression:
        idx = int(node.this.this if isinstance(node.this, exp.Literal) else node.name) - 1
        if idx < 0 or idx >= len(self.params):
            raise QueryError(f"there is no parameter ${idx + 1}", "42P02")
        return _literal(self.params[idx])

    def rewrite(self, tree: exp.Expression) -> exp.Expression:
        for cte in tree.find_all(exp.CTE):
            self.ctes.add(cte.alias_or_name.lower())
        return self._walk(tree)

    def _walk(self, node: exp.Expression) -> exp.Expression:
        """Bottom-up rewrite: children first, so replacements see rewritten arguments."""
        for key, value in list(node.args.items()):
            if isinstance(value, exp.Expression):
                node.set(key, self._walk(value))
            elif isinstance(value, list):
                node.set(key, [self._walk(v) if isinstance(v, exp.Expression) else v for v in value])
        new = self._pre(node)
        if new is not node:
            return new
        return self._node(node)

    # parameters and escape strings first: later casts see literals
    def _pre(self, node: exp.Expression) -> exp.Expression:
        if isinstance(node, exp.Parameter) or isinstance(node, exp.Placeholder) and node.name.isdigit():
            return self.param(node)
        if isinstance(node, exp.ByteString):
            return exp.Literal.string(node.this)
        if isinstance(node, exp.Collate):
            return node.this
        if isinstance(node, exp.Dot) and isinstance(node.this, exp.Identifier) and \
                node.this.name.lower() in ("pg_catalog", "information_schema") and \
                not isinstance(node.expression, exp.Identifier):
            return node.expression
        return node

    def _node(self, node: exp.Expression) -> exp.Expression:
        if isinstance(node, exp.Table):
            return self._table(node)
        if isinstance(node, exp.Column):
            return self._column(node)
        if isinstance(node, exp.Cast):
            return self._cast(node)
        if isinstance(node, exp.Operator):
            return self._operator(node)
        if isinstance(node, exp.Anonymous):
            return self._function(node.name.lower(), node.expressions, node)
        if type(node) in _NODE_NAMES:
            args = [a for a in node.args.values() if isinstance(a, exp.Expression)]
            return self._function(_NODE_NAMES[type(node)], args, node)
        if isinstance(node, (exp.EQ, exp.NEQ)):
            return self._array_compare(node)
        if isinstance(node, exp.DPipe) and any(isinstance(x, exp.Array) for x in (node.this, node.expression)):
            return _call("list_concat", _call("coalesce", node.this, exp.Array(expressions=[])),
                         _call("coalesce", node.expression, exp.Array(expressions=[])))
        return node

    def _table(self, node: exp.Table) -> exp.Expression:
        if not isinstance(node.this, exp.Identifier):
            return self._table_function(node)
        db = node.db.lower() if node.db else ""
        name = node.name.lower() if not node.this.quoted else node.name
        if node.catalog:
            raise UnsupportedError("cross-database references are not implemented")
        if db == "pg_catalog" or (not db and name in _CATALOG_NAMES and name not in self.ctes):
            if name not in _CATALOG_NAMES:
                raise UnknownTableError(f'relation "pg_catalog.{name}" does not exist', "42P01")
            return self._relation(node, "pgc", name)
        if db == "information_schema":
            if name not in _INFO_NAMES:
                raise UnknownTableError(f'relation "information_schema.{name}" does not exist', "42P01")
            return self._relation(node, "pgis", name)
        if not db and name in self.ctes:
            return node
        raise UnknownTableError(f'relation "{node.sql("postgres")}" is not a catalog relation', "42P01")

    def _table_function(self, node: exp.Table) -> exp.Expression:
        """A function in FROM: PostgreSQL names its single column after the alias, and accepts
        scalar functions there (one row)."""
        node.set("db", None)
        fn = node.this
        alias = node.args.get("alias")
        srf = isinstance(fn, (exp.Unnest, exp.Explode, exp.ExplodingGenerateSeries, exp.GenerateSeries)) or (
            isinstance(fn, exp.Anonymous) and fn.name.lower() in ("generate_series", "generate_subscripts", "unnest")
        ) or _is_expandarray(fn)
        if not srf:
            name = alias.name if alias is not None and alias.name else self.name_of_function(fn)
            col = alias.columns[0] if alias is not None and alias.columns else exp.to_identifier(name)
            sub = exp.select(exp.alias_(fn, col, copy=False), copy=False)
            return exp.Subquery(this=sub, alias=exp.TableAlias(this=exp.to_identifier(name)))
        if alias is not None and alias.name and not alias.columns and not _is_expandarray(fn):
            alias.set("columns", [exp.to_identifier(alias.name)])
        return node

    @staticmethod
    def name_of_function(fn: exp.Expression) -> str:
        return fn.name.lower() if isinstance(fn, exp.Anonymous) else _NODE_FUNC_NAMES.get(type(fn), "f")

    def _relation(self, node: exp.Table, schema: str, name: str) -> exp.Expression:
        database, user = self.session
        subst = _SESSION_COLUMNS.get((schema, name))
        if subst and (database != "rusts" or user != "rusts"):
            repl = ", ".join(
                f"{_literal(user if v == 'user' else database).sql('duckdb')} AS \"{c}\"" for c, v in subst)
            sub = exp.maybe_parse(f'(SELECT * REPLACE ({repl}) FROM {schema}."{name}")', dialect="duckdb")
            alias = node.args.get("alias") or exp.TableAlias(this=exp.to_identifier(name))
            return exp.Subquery(this=sub.this if isinstance(sub, exp.Subquery) else sub, alias=alias)
        node.set("this", exp.to_identifier(name, quoted=True))
        node.set("db", exp.to_identifier(schema))
        return node

    def _column(self, node: exp.Column) -> exp.Expression:
        db = node.args.get("db")
        if db is not None and db.name.lower() in ("pg_catalog", "information_schema"):
            node.set("db", exp.to_identifier("pgc" if db.name.lower() == "pg_catalog" else "pgis"))
            return node
        if not node.table and not node.this.quoted and node.name.lower() in (
                "user", "current_role", "current_user", "session_user", "current_catalog", "current_schema"):
            return self._function(node.name.lower(), [], node)
        return node

    def _function(self, name: str, args: list[exp.Expression], node: exp.Expression) -> exp.Expression:
        spec = _FUNCTIONS.get(name)
        if spec is None:
            return node
        repl = spec[0]
        if isinstance(repl, str):
            return _call(repl, *args)
        return repl(args, self.session)

    def _operator(self, node: exp.Operator) -> exp.Expression:
        op = str(node.args.get("operator") or "").lower().replace(" ", "")
        op = op.removeprefix("pg_catalog.")
        left, right = node.this, node.expression
        if op == "~":
            return exp.RegexpLike(this=left, expression=right)
        if op == "!~":
            return exp.Not(this=exp.RegexpLike(this=left, expression=right))
        if op == "~*":
            return exp.RegexpILike(this=left, expression=right)
        if op == "!~*":
            return exp.Not(this=exp.RegexpILike(this=left, expression=right))
        if op in ("=", "<>", "!=", "<", ">", "<=", ">="):
            cls = {"=": exp.EQ, "<>": exp.NEQ, "!=": exp.NEQ, "<": exp.LT, ">": exp.GT, "<=": exp.LTE,
                   ">=": exp.GTE}[op]
            return cls(this=left, expression=right)
        raise UnsupportedError(f"operator {op} is not supported in catalog queries")

    def _array_compare(self, node: exp.Expression) -> exp.Expression:
        for side in ("this", "expression"):
            v = node.args.get(side)
            if isinstance(v, exp.Literal) and v.is_string and v.this.startswith("{") and v.this.endswith("}"):
                try:
                    node.set(side, _literal(_parse_pg_array(v.this)))
                except QueryError:
                    pass
        return node

    def _cast(self, node: exp.Cast) -> exp.Expression:
        target = _pg_type_name(node.to)
        arg = node.this
        literal = arg.this if isinstance(arg, exp.Literal) and arg.is_string else None
        if target in _REG_TYPES:
            return self._reg_cast(target, arg, literal, node)
        if target.startswith("_") or target in ("int2vector", "oidvector"):
            if literal is not None:
                items = _parse_pg_array(literal) if literal.startswith("{") else literal.split()
                duck = _duck_type(target)
                return exp.cast(_literal([_coerce(i, duck[:-2]) for i in items]), duck)
            return exp.cast(arg, _duck_type(target), copy=False)
        if target in ("oid", "xid", "cid") and literal is not None:
            return exp.Literal.number(int(literal))
        if target in ("bool",) and literal is not None:
            return exp.Boolean(this=literal.strip().lower() in ("t", "true", "on", "1", "yes", "y"))
        return exp.cast(arg, _duck_type(target) if target in _DUCK_TYPES or target.startswith("_")
                        else _DUCK_CAST.get(target, "VARCHAR"), copy=False)

    def _reg_cast(self, target: str, arg: exp.Expression, literal: str | None,
                  node: exp.Cast) -> exp.Expression:
        if target in ("regproc", "regprocedure"):  # stored as names in the emulation
            return exp.Literal.string(literal.split(".")[-1].split("(")[0]) if literal is not None else arg
        if literal is not None:
            arg = exp.Literal.number(self._reg_lookup(target, literal))
        displayed = _is_displayed(node)
        if isinstance(arg, exp.Literal) and not displayed:  # a number: the oid itself
            return arg
        if not displayed:
            return exp.cast(arg, "BIGINT", copy=False)
        fn = {"regclass": "pgx_regclass_out", "regtype": "pgx_regtype_out",
              "regnamespace": "pgx_regnamespace_out"}.get(target)
        if fn is None:
            return exp.cast(arg, "VARCHAR", copy=False)
        return _call(fn, arg)

    def _reg_lookup(self, target: str, text: str) -> int:
        if text.strip().isdigit():
            return int(text)
        if target == "regclass":
            name = _split_qualified(text)
            if name[-1] in self.catalog.oids and (len(name) == 1 or name[0] == "public"):
                return self.catalog.oids[name[-1]]
            for (nsp, rel), (oid, _k, _t, _c) in _data.RELATIONS.items():
                if rel == name[-1] and (len(name) == 1 and nsp == "pg_catalog" or name[0] == nsp):
                    return oid
            raise UnknownTableError(f'relation "{text}" does not exist', "42P01")
        if target == "regtype":
            t = _pg_type_name(exp.DataType.build(text, dialect="postgres", udt=True))
            if t in TYPE_OIDS:
                return TYPE_OIDS[t]
            if t in self.catalog.oids:
                return self.catalog.oids[t] + 1
            raise QueryError(f'type "{text}" does not exist', "42704")
        if target == "regnamespace":
            if text in _NAMESPACES:
                return _NAMESPACES[text]
            raise QueryError(f'schema "{text}" does not exist', "3F000")
        if target == "regrole":
            return OWNER_OID
        raise UnsupportedError(f"casts to {target} are not supported")


_DUCK_CAST = {"text": "VARCHAR", "varchar": "VARCHAR", "name": "VARCHAR", "char": "VARCHAR", "bpchar": "VARCHAR",
              "json": "JSON", "jsonb": "JSON", "interval": "INTERVAL", "bytea": "BLOB"}

# columns holding the session's database / user name, replaced when they differ from the default
_SESSION_COLUMNS = {
    ("pgc", "pg_database"): [("datname", "database")],
    ("pgc", "pg_roles"): [("rolname", "user")],
    ("pgc", "pg_authid"): [("rolname", "user")],
    ("pgc", "pg_user"): [("usename", "user")],
    ("pgis", "tables"): [("table_catalog", "database")],
    ("pgis", "columns"): [("table_catalog", "database"), ("udt_catalog", "database")],
    ("pgis", "schemata"): [("catalog_name", "database")],
}


def _split_qualified(text: str) -> list[str]:
    parts = re.findall(r'"((?:[^"]|"")*)"|([^."]+)', text)
    return [q.replace('""', '"') if q else u.strip().lower() for q, u in parts]


def _is_displayed(node: exp.Expression) -> bool:
    """Whether a reg* cast's value is shown (select list, ORDER BY, cast to text) not compared."""
    parent = node.parent
    while isinstance(parent, (exp.Paren, exp.Alias)):
        parent = parent.parent
    if isinstance(parent, exp.Cast):
        return _pg_type_name(parent.to) in ("text", "varchar", "name", "bpchar")
    if isinstance(parent, (exp.Select, exp.Ordered, exp.Order)):
        return True
    return False
