"""The SQL view of the database's tables: measurements, their tag keys and field types
(:class:`Catalog`), memoised per index/schema generation."""

from __future__ import annotations


from collections.abc import Callable, Sequence

import numpy as np

from rusts.model import FieldType
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
