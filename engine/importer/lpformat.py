"""A normalised Arrow batch as line protocol (``--format lp``), with Arrow compute kernels.

For InfluxDB-compatible targets. Floats print in their shortest round-trip form, integers with
``i``, unsigned with ``u``; NaN and infinities have no line-protocol spelling and are left out
(counted as values not written); string values must not contain newlines.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from rusts.importer.mapping import Plan
from rusts.model import FieldType


def _escape(arr: pa.Array, chars: str, backslash: bool = False) -> pa.Array:
    """Backslash before each of ``chars`` (and before a backslash when ``backslash``: string
    values; in names and tag values a backslash is literal, as InfluxDB reads it)."""
    if backslash:
        arr = pc.replace_substring(arr, "\\", "\\\\")
    for ch in chars:
        arr = pc.replace_substring(arr, ch, "\\" + ch)
    return arr


def _escape_name(name: str, chars: str) -> str:
    out = name
    for ch in chars:
        out = out.replace(ch, "\\" + ch)
    return out


def _value_text(a: pa.Array, ftype: FieldType) -> pa.Array:
    if ftype is FieldType.FLOAT:
        a = pc.if_else(pc.is_finite(a), a, pa.scalar(None, pa.float64()))
        return a.cast(pa.string())
    if ftype is FieldType.INTEGER:
        return pc.binary_join_element_wise(a.cast(pa.string()), "i", "")
    if ftype is FieldType.UNSIGNED:
        return pc.binary_join_element_wise(a.cast(pa.string()), "u", "")
    if ftype is FieldType.BOOLEAN:
        return a.cast(pa.string())
    if pa.types.is_dictionary(a.type):
        a = a.dictionary_decode()
    return pc.binary_join_element_wise('"', _escape(a, '"', backslash=True), '"', "")


def encode(b: pa.RecordBatch, plan: Plan) -> tuple[bytes, int]:
    """(line-protocol body, values in it) of a normalised batch."""
    n = b.num_rows
    if n == 0:
        return b"", 0
    key_parts = [pa.array(np.full(n, _escape_name(plan.measurement, ", "), dtype=object), pa.string())]
    for t in plan.tags:
        v = b.column(t)
        if v.null_count == n:
            continue
        key_parts.append(pc.binary_join_element_wise(_escape_name(t, ",= "), _escape(v, ",= "), "="))
    key = pc.binary_join_element_wise(*key_parts, ",", null_handling="skip")
    field_parts, values = [], 0
    for name, ftype in plan.fields:
        txt = _value_text(b.column(name), ftype)
        values += n - txt.null_count
        field_parts.append(pc.binary_join_element_wise(_escape_name(name, ",= "), txt, "="))
    fields = pc.binary_join_element_wise(*field_parts, ",", null_handling="skip")
    has = pc.not_equal(fields, "")
    ts = b.column(plan.time_column).cast(pa.string())
    lines = pc.binary_join_element_wise(key, fields, ts, " ")
    lines = pc.binary_join_element_wise(lines, "", "\n")
    if not pc.all(has).as_py():  # rows whose only values were NaN
        lines = lines.filter(has)
    lines = lines.combine_chunks() if isinstance(lines, pa.ChunkedArray) else lines
    offsets = np.frombuffer(lines.buffers()[1], dtype=np.int32)
    data = lines.buffers()[2]
    start, end = int(offsets[lines.offset]), int(offsets[lines.offset + len(lines)])
    return data.to_pybytes()[start:end], values
