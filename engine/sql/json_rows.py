"""The ``results`` array of a large ``/sql`` answer rendered column by column (Arrow kernels).

:func:`rusts.sql.output.to_json` builds a dict per row (and per row's ``tags`` and ``fields``),
which orjson then serialises: about 9 µs a row, a second for the 114,000 rows of a TSBS
``high-cpu-all`` over a day of 100 hosts, ten times the query. Here each column becomes an Arrow
string array of JSON values once (numbers formatted as orjson formats them, NULL, NaN and
infinities left out as ``to_json`` leaves them out), the tags of each distinct tag set are
serialised once, and the rows are joined by Arrow's element-wise string join: no Python step per
row or value. The bytes are the same as ``orjson.dumps(to_json(out)["results"])``
(``tests/engine/sql/test_json_rows.py``). Answers with string or object field columns keep the
dict path (a JSON string needs escaping, which Arrow has no kernel for).
"""

from __future__ import annotations

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from rusts.sql.output import KIND_TAG, KIND_TIME, SqlOutput

MIN_ROWS = 2_000
"""Smaller answers take the dict path (its fixed cost is lower)."""


def _s(text: str) -> pa.Scalar:
    return pa.scalar(text, pa.large_string())


def _numbers(v: np.ndarray) -> pa.Array | None:
    """JSON texts of a numeric or boolean column (null where NaN or infinite), or None."""
    kind = v.dtype.kind
    if kind == "b":
        return pc.if_else(pa.array(v), _s("true"), _s("false"))
    if kind in "iu":
        return pa.array(v).cast(pa.large_string())
    if kind == "f":
        # orjson's own float texts (its shortest round trip, "1.0", "1e16"), split in Arrow
        text = orjson.dumps(v.astype(np.float64, copy=False), option=orjson.OPT_SERIALIZE_NUMPY)
        s = pc.list_flatten(pc.split_pattern(pa.array([text[1:-1].decode()], pa.large_string()), ","))
        finite = np.isfinite(v)
        return s if finite.all() else pc.if_else(pa.array(finite), s, _s(None))
    return None


def _tag_texts(names: list[str], columns: list[tuple[np.ndarray, np.ndarray | None]], n: int) -> pa.Array:
    """Per row, the JSON object of its tags (NULL tags left out): each distinct tag set once."""
    if not names:
        return pa.repeat(_s("{}"), n)
    codes = np.zeros(n, np.int64)
    for v, m in columns:
        arr = pa.array(v, mask=None if m is None else ~m, from_pandas=True)
        enc = arr.dictionary_encode()
        idx = enc.indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64) + 1
        size = len(enc.dictionary) + 1
        codes = codes * size + idx
    _, first, inverse = np.unique(codes, return_index=True, return_inverse=True)
    texts = []
    for row in first.tolist():
        d = {}
        for name, (v, m) in zip(names, columns):
            if (m is None or m[row]) and v[row] is not None:
                d[name] = v[row]
        texts.append(orjson.dumps(d).decode())
    return pa.array(texts, pa.large_string()).take(pa.array(inverse.ravel()))


def results_fragment(out: SqlOutput, min_rows: int = MIN_ROWS) -> orjson.Fragment | None:
    """``to_json(out)["results"]`` as pre-serialised JSON, or None when this answer is not one
    this renderer takes (a SHOW answer, string or object field columns, small answers)."""
    n = len(out)
    if out.show or n < min_rows or not n:
        return None
    ts_idx = next((i for i, c in enumerate(out.columns) if c.kind == KIND_TIME), None)
    tag_idx = [i for i, c in enumerate(out.columns) if c.kind == KIND_TAG]
    fld_idx = [i for i, c in enumerate(out.columns) if i != ts_idx and c.kind != KIND_TAG]
    tag_names = [out.columns[i].name for i in tag_idx]
    tag_cols = [(out.values[i], out.masks[i]) for i in tag_idx]
    for key, v, m in out.row_tags:
        if key not in tag_names:
            tag_names.append(key)
            tag_cols.append((v, m))
    if any(v.dtype != object for v, _ in tag_cols):
        return None
    pieces = []
    for i in fld_idx:
        v, m = out.values[i], out.masks[i]
        s = _numbers(v)
        if s is None:
            return None
        if m is not None:
            s = pc.if_else(pa.array(m), s, _s(None))
        # ',"name":value' (null where absent): joined below with nulls as "", the first comma cut
        pieces.append(pc.binary_join_element_wise(_s("," + orjson.dumps(out.columns[i].name).decode() + ":"), s,
                                                  _s("")))
    if ts_idx is None:
        ts = pa.repeat(_s("null"), n)
    else:
        v, m = out.values[ts_idx], out.masks[ts_idx]
        ts = pa.array(v).cast(pa.large_string())
        if m is not None:
            ts = pc.if_else(pa.array(m), ts, _s("null"))
    if pieces:  # (null_handling="skip" drops rows when given one array: Arrow 26)
        joined_fields = pc.binary_join_element_wise(*pieces, _s(""), null_handling="replace", null_replacement="")
        fields = pc.utf8_slice_codeunits(joined_fields, 1)
    else:
        fields = pa.repeat(_s(""), n)
    tags = _tag_texts(tag_names, tag_cols, n)
    rows = pc.binary_join_element_wise(_s('{"timestamp":'), ts, _s(',"tags":'), tags, _s(',"fields":{'), fields,
                                       _s("}},"), _s(""))
    # the rows' texts lie back to back in the array's data buffer: the answer without a join
    offsets = np.frombuffer(rows.buffers()[1], np.int64)[rows.offset:rows.offset + n + 1]
    data = memoryview(rows.buffers()[2])[int(offsets[0]):int(offsets[-1]) - 1]  # (the last comma)
    return orjson.Fragment(b"[" + data + b"]")


def to_json_rendered(out: SqlOutput, elapsed_ms: float) -> dict | None:
    """:func:`rusts.sql.output.to_json` with its ``results`` rendered by :func:`results_fragment`
    (None when that declines)."""
    rows = results_fragment(out)
    if rows is None:
        return None
    return {"measurement": out.measurement,
            "columns": [{"name": c.name, "type": c.type} for c in out.columns],
            "results": rows, "total_rows": len(out), "execution_time_ms": round(elapsed_ms, 3)}
