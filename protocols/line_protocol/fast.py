"""Vectorised fast path of the line protocol parser (pyarrow compute + numpy).

Per-line Python work is what makes a pure-Python parser slow: on this class of machine one
Python-level operation costs about 0.2 us, and a TSBS line has 10 values. This path never loops
over lines or values in Python; it runs Arrow's C++ string kernels over whole columns:

1. a line takes the fast path only as ``key fields [time]``. Escaped backslashes, quotes and
   spaces are first replaced by placeholder bytes that do not occur in the body (a double
   backslash in a key, where 1.x's "previous byte" escape rule differs from pairing, sends the
   line to the exact parser). Without
   quotes in the body lines are split on every space; with quotes the key ends at the first
   space and the time starts after the last one, so strings may hold spaces;
2. keys are dictionary-encoded, so tags are parsed once per distinct series key (in Python,
   memoised across calls; keys with escapes use 1.x's own key scanner);
3. commas inside quoted values are replaced by a second placeholder (quote parity per row) and
   field sections are split on ``,`` into ``key=value`` tokens. Each row is assumed to have the
   field layout (key sequence) of the first row of its measurement; the assumption is checked
   column by column with ``starts_with(token, key + "=")``, and rows that do not fit get their
   layouts from one dictionary encoding of their key sequences;
4. each column of a layout is typed with numpy byte lookup tables on the raw bytes and converted
   with one Arrow cast (Arrow's string->float cast rounds correctly, like Go's ParseFloat);
5. timestamps are cast in one step and range-checked with numpy.

Whatever the fast path is not sure about (odd shapes, escapes in field keys, a double
backslash in a key, empty or invalid values, mixed types in a column, duplicate keys, range
errors) goes, by line, to the exact parser in :mod:`rusts.protocols.line_protocol.exact`, which also writes the error
messages. The fast path only has to be right about the rows it keeps; the tests compare both
paths on generated input.
"""


from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from rusts.model import FieldType
from rusts.protocols.line_protocol import exact as ex
from rusts.protocols.line_protocol.pieces import Block

# A line whose logical end (1.x scanLine) is its own LF even though it holds a quote or a
# backslash: quotes only around values, every backslash followed by a byte of the line.
_A = r'(?:[^ \\]|\\.)'
_K = r'(?:[^=,"\\]|\\.)'
_V = r'(?:"(?:[^"\\]|\\.)*"|(?:[^,"\\]|\\.)*)'
SIMPLE_LINE_RE = rf'^{_A}+ {_K}+={_V}(?:,{_K}+={_V})*(?: (?:[^"\\]|\\.)*)?$'


def _lut(chars: bytes) -> np.ndarray:
    t = np.zeros(256, dtype=bool)
    t[list(chars)] = True
    return t


_FLOAT_CHARS = _lut(b"0123456789.eE+-")
_INT_CHARS = _lut(b"0123456789-i")
_UINT_CHARS = _lut(b"0123456789u")
_TS_CHARS = _lut(b"0123456789-")
_BOOL_FIRST = _lut(b"tfTF")
_BOOL_SET = pa.array([b"t", b"T", b"true", b"True", b"TRUE", b"f", b"F", b"false", b"False",
                      b"FALSE"], pa.binary())


def binary_parts(arr: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(offsets, data) numpy views of a binary array: value i is data[off[i]:off[i+1]]."""
    bufs = arr.buffers()
    otype = np.int64 if pa.types.is_large_binary(arr.type) else np.int32
    off = np.frombuffer(bufs[1], dtype=otype)[arr.offset:arr.offset + len(arr) + 1]
    data = np.frombuffer(bufs[2], dtype=np.uint8) if bufs[2] is not None else \
        np.zeros(0, np.uint8)
    return off, data


def split_lines(body: bytes) -> tuple[pa.Array, np.ndarray]:
    """Physical lines (without LF) and the byte offset of each in ``body``."""
    big = len(body) >= 2**31 - 1
    btype = pa.large_binary() if big else pa.binary()
    otype = np.int64 if big else np.int32
    one = pa.Array.from_buffers(btype, 1, [None, pa.py_buffer(np.array([0, len(body)], otype)),
                                           pa.py_buffer(body)])
    lines = pc.split_pattern(one, b"\n").flatten()
    off, _ = binary_parts(lines)
    starts = off[:-1].astype(np.int64) - off[0] + np.arange(len(lines), dtype=np.int64)
    return lines, starts


def _bool_np(arr) -> np.ndarray:
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    return arr.to_numpy(zero_copy_only=False).astype(bool, copy=False)


def suspicious_lines(lines: pa.Array) -> np.ndarray:
    """Lines whose logical extent needs the exact scanner (quote or backslash, not simple)."""
    check = np.flatnonzero(_rows_with(lines, 34) | _rows_with(lines, 92))
    susp = np.zeros(len(lines), dtype=bool)
    if len(check):
        simple = _bool_np(pc.match_substring_regex(lines.take(pa.array(check)), SIMPLE_LINE_RE))
        susp[check[~simple]] = True
    return susp


# ---------------------------------------------------------------------------- keys


def parse_plain_key(raw: bytes):
    """(measurement, tags, key size) for the key part of a line (no unescaped space), or None.

    Agrees with :func:`rusts.protocols.line_protocol.exact.scan_key` on such keys; None means "let the
    exact parser handle (and report) this line". Splitting the decoded text is the same as
    decoding the split bytes because ``,`` and ``=`` never occur inside a UTF-8 sequence.
    """
    if not raw or raw[0] in (44, 35, 9, 0):  # ',' '#' TAB NUL: exact parser
        return None
    if b"\\" in raw:  # escapes: 1.x's own key scanner, still once per distinct key
        try:
            end, name, raw_tags = ex.scan_key(raw + b" ")
        except ex.PointError:
            return None
        if end != len(raw):
            return None
        return (*ex.finish_key(name, raw_tags), len(raw))
    parts = raw.decode("utf-8", "replace").split(",")
    if len(parts) == 1:
        return parts[0], (), len(raw)
    tags = [p.partition("=") for p in parts[1:]]
    for k, eq, v in tags:
        if not k or not eq or not v or "=" in v:
            return None
    pairs = sorted((k, v) for k, _, v in tags)
    if len({k for k, _ in pairs}) != len(pairs):
        return None  # duplicate tag key (or invalid UTF-8 collapsing two keys): exact path
    return parts[0], tuple(pairs), len(raw)


_KEY_CACHE: dict[bytes, tuple | bool] = {}
_KEY_CACHE_MAX = 10_000  # distinct series keys remembered across calls (a few MB)


def parse_plain_keys(distinct: list[bytes]) -> list:
    """:func:`parse_plain_key` for each key, memoised across calls (series keys repeat)."""
    cache = _KEY_CACHE
    out = list(map(cache.get, distinct))
    missing = [i for i, v in enumerate(out) if v is None]
    if missing:
        if len(cache) + len(missing) > _KEY_CACHE_MAX:
            cache.clear()
        for i in missing:
            v = parse_plain_key(distinct[i])
            out[i] = cache[distinct[i]] = False if v is None else v
    return [v or None for v in out]


# --------------------------------------------------------------------------- values


class _Marks:
    """Placeholder bytes standing for escapes and quoted commas during the fast path.

    Each placeholder is a byte absent from the body. ``raw`` maps it back to the original bytes
    (keys and the exact fallback); ``string`` to its meaning inside a string value (1.x
    unescapes only ``\\"`` and ``\\\\`` there).
    """

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.free: list[bytes] | None = None  # found on first use (one scan per candidate)
        self.raw: list[tuple[bytes, bytes]] = []
        self.string: list[tuple[bytes, bytes]] = []

    def take(self, raw: bytes, string: bytes) -> bytes | None:
        if self.free is None:
            self.free = [bytes([b]) for b in _PLACEHOLDERS if bytes([b]) not in self.body]
        if not self.free:
            return None
        ph = self.free.pop(0)
        self.raw.append((ph, raw))
        self.string.append((ph, string))
        return ph

    @property
    def bytes(self) -> bytes:
        return b"".join(ph for ph, _ in self.raw)

    def restore_raw(self, arr: pa.Array) -> pa.Array:
        for ph, raw in self.raw:
            arr = pc.replace_substring(arr, ph, raw)
        return arr

    def restore_key(self, key: bytes) -> bytes:
        for ph, raw in self.raw:
            key = key.replace(ph, raw)
        return key

    def present(self, data: np.ndarray) -> bool:
        return bool(self.raw) and bool(_lut(self.bytes)[data].any())


class _Column:
    """A typed, converted column over the rows of one layout (``bad`` rows excluded later)."""

    __slots__ = ("ftype", "values", "bad")

    def __init__(self, ftype, values, bad=None):
        self.ftype = ftype
        self.values = values
        self.bad = bad


def _exact_values(col: pa.Array) -> _Column:
    """Per-value fallback: exact 1.x typing; rows with an invalid or minority type are bad."""
    raws = col.to_pylist()
    n = len(raws)
    types: list = [None] * n
    vals: list = [None] * n
    for i, raw in enumerate(raws):
        try:
            _, section = ex.scan_fields(b"x=" + raw, 0)
            pairs = ex.walk_fields(section)
        except ex.PointError:
            continue
        if len(pairs) == 1 and pairs[0][1] == raw:
            types[i], vals[i] = ex.field_value(raw)
    first = next((t for t in types if t is not None), None)
    bad = np.array([t is None or t != first for t in types], dtype=bool)
    if first is None:
        return _Column(FieldType.FLOAT, np.zeros(n), bad)
    fill = "" if first == FieldType.STRING else 0
    values = np.array([v if t == first else fill for t, v in zip(types, vals)],
                      dtype=first.dtype)
    return _Column(first, values, bad if bad.any() else None)


def _cast_or_exact(col: pa.Array, target: pa.DataType, ftype: FieldType, source=None):
    try:
        out = pc.cast(col if source is None else source, target)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return _exact_values(col)
    values = out.to_numpy(zero_copy_only=False)
    if ftype == FieldType.FLOAT:
        bad = ~np.isfinite(values)
        return _Column(ftype, values, bad if bad.any() else None)
    return _Column(ftype, values)


def convert_column(col: pa.Array, marks: _Marks | None = None) -> _Column:
    """Type and convert one column of raw values the way 1.x would.

    Values that are empty, of another type than the column's first, or invalid are flagged
    ``bad`` (their lines go to the exact parser, which reports them). Placeholders of ``marks``
    may only occur in string values.
    """
    off, data = binary_parts(col)
    if not (off[1:] > off[:-1]).all():  # an empty value
        return _exact_values(col if marks is None else marks.restore_raw(col))
    if marks is not None:
        if marks.present(data[off[0]:off[-1]]):
            first, last = data[off[:-1]], data[off[1:] - 1]
            if not ((first == 34) & (last == 34) & ((off[1:] - off[:-1]) >= 2)).all() or \
                    int(np.count_nonzero(data[off[0]:off[-1]] == 34)) != 2 * len(col):
                return _exact_values(marks.restore_raw(col))
            inner = pc.binary_slice(col, 1, -1)
            for ph, meaning in marks.string:
                inner = pc.replace_substring(inner, ph, meaning)
            return _Column(FieldType.STRING, _strings(inner))
    d = data[off[0]:off[-1]]
    first = data[off[:-1]]
    last = data[off[1:] - 1]
    if _FLOAT_CHARS[d].all() and not (first == 43).any() and not (last == 105).any():
        return _cast_or_exact(col, pa.float64(), FieldType.FLOAT)
    if (last == 105).all() and _INT_CHARS[d].all():
        return _cast_or_exact(col, pa.int64(), FieldType.INTEGER, pc.binary_slice(col, 0, -1))
    if (last == 117).all() and _UINT_CHARS[d].all():
        return _cast_or_exact(col, pa.uint64(), FieldType.UNSIGNED, pc.binary_slice(col, 0, -1))
    if _BOOL_FIRST[first].all() and _bool_np(pc.is_in(col, value_set=_BOOL_SET)).all():
        return _Column(FieldType.BOOLEAN, (first == 116) | (first == 84))
    if (first == 34).all() and (last == 34).all() and ((off[1:] - off[:-1]) >= 2).all() \
            and int(np.count_nonzero(d == 34)) == 2 * len(col) \
            and not ((d[1:] == 34) & (d[:-1] == 92)).any():
        return _Column(FieldType.STRING, _strings(pc.binary_slice(col, 1, -1)))
    return _exact_values(col)


def _strings(inner: pa.Array) -> np.ndarray:
    """Object array of str (invalid UTF-8 replaced, as the exact parser does)."""
    try:
        strs = inner.cast(pa.string()).to_numpy(zero_copy_only=False)
    except pa.ArrowInvalid:
        strs = np.array([ex.decode(b) for b in inner.to_pylist()], dtype=object)
    return strs.astype(object, copy=False)


# ------------------------------------------------------------------------ timestamps


def convert_timestamps(ts: pa.Array, multiplier: int) -> tuple[np.ndarray, np.ndarray]:
    """(ns timestamps, bad mask) for non-empty raw timestamps; bad rows go to the exact path."""
    n = len(ts)
    off, data = binary_parts(ts)
    d = data[off[0]:off[-1]]
    first = data[off[:-1]]
    ok_chars = _TS_CHARS[d].all() and int(np.count_nonzero(d == 45)) == \
        int(np.count_nonzero(first == 45))
    values = None
    if ok_chars:
        try:
            values = pc.cast(ts, pa.int64()).to_numpy(zero_copy_only=False)
        except pa.ArrowInvalid:
            values = None
    if values is None:
        vals = np.zeros(n, dtype=np.int64)
        bad = np.zeros(n, dtype=bool)
        for i, raw in enumerate(ts.to_pylist()):
            try:
                _, t = ex.scan_time(raw, 0)
                if t != raw:
                    raise ex.PointError("bad timestamp")
                vals[i] = ex.parse_int64(raw)
            except ex.PointError:
                bad[i] = True
        values = vals
    else:
        bad = np.zeros(n, dtype=bool)
    lo = -((-ex.MIN_NANO_TIME) // multiplier)
    hi = ex.MAX_NANO_TIME // multiplier
    bad |= (values < lo) | (values > hi)
    if multiplier != 1:
        values = np.where(bad, 0, values) * np.int64(multiplier)
    return values, bad


# ------------------------------------------------------------------------------ main


_PLACEHOLDERS = range(0xF8, 0x100)  # bytes that never occur in valid UTF-8


def _rows_with(arr: pa.Array, byte: int, pair: bool = False) -> np.ndarray:
    """Mask of the values of a binary array containing ``byte`` (twice in a row if ``pair``)."""
    off, data = binary_parts(arr)
    pos = np.flatnonzero(data[off[0]:off[-1]] == byte) + off[0]
    rows = np.searchsorted(off, pos, side="right") - 1
    if pair:
        rows = rows[1:][(pos[1:] == pos[:-1] + 1) & (rows[1:] == rows[:-1])]
    mask = np.zeros(len(arr), dtype=bool)
    mask[rows] = True
    return mask


def _all_in(arr: pa.Array, lut: np.ndarray) -> np.ndarray:
    """Per value: whether every byte is in ``lut`` (True for empty values)."""
    off, data = binary_parts(arr)
    bad = np.zeros(int(off[-1] - off[0]) + 1, dtype=np.int64)
    np.cumsum(~lut[data[off[0]:off[-1]]], out=bad[1:])
    rel = off - off[0]
    return bad[rel[1:]] == bad[rel[:-1]]


def _drop(keep: np.ndarray, arrays: list, candidates: np.ndarray, slow: list):
    slow.append(candidates[~keep])
    sel = pa.array(np.flatnonzero(keep))
    return [a.take(sel) for a in arrays], candidates[keep]


def _sections(lines: pa.Array, candidates: np.ndarray, body: bytes, slow: list):
    """Split candidate lines into (candidates, keys, field sections, ts rows, raw ts, marks).

    Lines go to ``slow`` when they do not have the shape ``key fields [time]``. With quotes in
    the body the key ends at the first space and the time starts after the last one, so string
    values may hold spaces. Escaped backslashes, quotes and spaces are replaced by placeholder
    bytes (``marks``) before splitting; keys are restored before they are parsed.
    """
    if len(candidates) and candidates[-1] - candidates[0] + 1 == len(candidates):
        sub = lines.slice(int(candidates[0]), len(candidates))  # contiguous: no copy
    else:
        sub = lines.take(pa.array(candidates))
    marks = _Marks(body)
    if b"\\" in body:
        # pair backslashes left to right as 1.x's field scanner does: "\\\\" first, then
        # escaped quotes and spaces; all other escapes stay as they are
        for pattern, meaning in ((b"\\\\", b"\\"), (b'\\"', b'"'), (b"\\ ", b"\\ ")):
            ph = marks.take(pattern, meaning)
            if ph is None:  # no free byte: lines with a backslash take the exact path
                keep = ~_rows_with(sub, 92)
                if not keep.all():
                    (sub,), candidates = _drop(keep, [sub], candidates, slow)
                break
            sub = pc.replace_substring(sub, pattern, ph)
    if len(candidates) == 0:
        return candidates, None, None, None, None, marks
    if b'"' not in body:
        parts = pc.split_pattern(sub, b" ")
        plen = pc.list_value_length(parts).to_numpy(zero_copy_only=False)
        shape_ok = (plen == 2) | (plen == 3)
        if not shape_ok.all():
            (parts,), candidates = _drop(shape_ok, [parts], candidates, slow)
            plen = plen[shape_ok]
        if len(candidates) == 0:
            return candidates, None, None, None, None, marks
        keys = pc.list_element(parts, 0)
        secs = pc.list_element(parts, 1)
        ts_rows = np.flatnonzero(plen == 3)
        ts_raw = pc.list_slice(parts, 2, 3).flatten() if len(ts_rows) else None
    else:
        first = pc.split_pattern(sub, b" ", max_splits=1)
        has_space = pc.list_value_length(first).to_numpy(zero_copy_only=False) == 2
        if not has_space.all():
            (first,), candidates = _drop(has_space, [first], candidates, slow)
        if len(candidates) == 0:
            return candidates, None, None, None, None, marks
        keys = pc.list_element(first, 0)
        rest = pc.list_element(first, 1)
        last = pc.split_pattern(rest, b" ", max_splits=1, reverse=True)
        ts_rows = np.flatnonzero(pc.list_value_length(last).to_numpy(zero_copy_only=False) == 2)
        ts_raw = None
        secs = rest
        if len(ts_rows):
            tails = pc.list_slice(last, 1, 2).flatten()
            like = _all_in(tails, _TS_CHARS)  # otherwise the last space is inside the fields
            ts_rows = ts_rows[like]
            if len(ts_rows):
                ts_raw = tails.filter(pa.array(like))
                mask = np.zeros(len(candidates), dtype=bool)
                mask[ts_rows] = True
                secs = pc.if_else(pa.array(mask), pc.list_element(last, 0), rest)
    if ts_raw is not None:
        nonempty = pc.binary_length(ts_raw).to_numpy(zero_copy_only=False) > 0
        if not nonempty.all():  # one trailing space: no timestamp
            ts_rows = ts_rows[nonempty]
            ts_raw = ts_raw.filter(pa.array(nonempty))
        if len(ts_rows) == 0:
            ts_raw = None
    return candidates, keys, secs, ts_rows, ts_raw, marks


def _hide_quoted_commas(secs: pa.Array, placeholder: bytes) -> pa.Array:
    """Replace ``,`` inside quoted values by ``placeholder`` so that ``,`` splits fields.

    Quotes in a fast-path field section only delimit string values (the line matched
    ``SIMPLE_LINE_RE`` and escaped quotes are placeholders by now); a byte is inside a string
    when an odd number of quotes precede it in its row.
    """
    off, data = binary_parts(secs)
    seg = data[off[0]:off[-1]]
    quotes = np.flatnonzero(seg == 34)
    if len(quotes) == 0:
        return secs
    commas = np.flatnonzero(seg == 44)
    rel = off - off[0]
    row_start = rel[np.searchsorted(rel, commas, side="right") - 1]
    before = np.searchsorted(quotes, commas) - np.searchsorted(quotes, row_start)
    hide = commas[(before & 1) == 1]
    if len(hide) == 0:
        return secs
    out = seg.copy()
    out[hide] = placeholder[0]
    return pa.Array.from_buffers(secs.type, len(secs), [None, pa.py_buffer(rel.astype(off.dtype)),
                                                        pa.py_buffer(out)])


def parse_fast(lines: pa.Array, candidates: np.ndarray, line_numbers: np.ndarray,
               multiplier: int, default_time: int, body: bytes) -> tuple[list[Block], np.ndarray]:
    """Parse the candidate physical lines; return (blocks, indices of lines left to the slow path).

    ``candidates`` are indices into ``lines`` (in order, none of them continued by the next
    line); ``line_numbers`` maps every physical line index to its 1-based line number.
    """
    slow: list[np.ndarray] = []
    candidates, keys, secs, ts_rows, ts_raw, marks = _sections(lines, candidates, body, slow)
    if len(candidates) == 0:
        return [], _concat(slow)

    # keys -> distinct series
    keys_enc = pc.dictionary_encode(keys)
    key_idx = keys_enc.indices.to_numpy(zero_copy_only=False)
    distinct = keys_enc.dictionary.to_pylist()
    if marks.raw:
        distinct = [marks.restore_key(k) for k in distinct]
    parsed_keys = parse_plain_keys(distinct)
    key_ok = np.array([p is not None for p in parsed_keys], dtype=bool)
    key_size = np.array([p[2] if p is not None else 0 for p in parsed_keys], dtype=np.int64)
    meas_ids: dict[str, int] = {}
    meas_of_key = np.array([meas_ids.setdefault(p[0], len(meas_ids)) if p is not None else -1
                            for p in parsed_keys], dtype=np.int64)
    ok = key_ok[key_idx]
    if marks.raw:  # "\\\\" in a key: 1.x's "previous byte" rule differs from pairing
        ok &= ~_rows_with(keys, marks.raw[0][0][0])

    # timestamps
    ts_ns = np.full(len(candidates), default_time, dtype=np.int64)
    if ts_raw is not None:
        values, bad = convert_timestamps(ts_raw, multiplier)
        ts_ns[ts_rows] = values
        ok[ts_rows[bad]] = False

    if not ok.all():
        slow.append(candidates[~ok])
    good = np.flatnonzero(ok)
    if len(good) == 0:
        return [], _concat(slow)
    if len(good) != len(candidates):
        secs = secs.take(pa.array(good))
    candidates = candidates[good]
    key_idx = key_idx[good]
    ts_ns = ts_ns[good]
    if b'"' in body:
        comma = marks.take(b",", b",")
        if comma is not None:
            secs = _hide_quoted_commas(secs, comma)

    # field layouts. Tokens are "key=value" (the regex allowed exactly one '=' in each).
    toks = pc.split_pattern(secs, b",")
    ntok = pc.list_value_length(toks).to_numpy(zero_copy_only=False).astype(np.int64)
    flat = toks.flatten()
    tstart = np.zeros(len(ntok), dtype=np.int64)
    np.cumsum(ntok[:-1], out=tstart[1:])
    layouts = _Layouts(marks.bytes)
    # Guess: every row has the layout of the first row of its measurement ...
    meas_idx = meas_of_key[key_idx]
    _, first_rows = np.unique(meas_idx, return_index=True)
    guess = np.full(int(meas_idx.max()) + 1, -1, dtype=np.int64)
    for r, sec in zip(first_rows.tolist(), secs.take(pa.array(first_rows)).to_pylist()):
        guess[meas_idx[r]] = layouts.add([t.partition(b"=")[0] for t in sec.split(b",")])
    row_layout = guess[meas_idx]
    # ... verified column by column below; rows that do not fit get their own layout here.
    batches = []  # (layout id, rows, [token column per field])
    misfit = [np.flatnonzero(ntok != layouts.width[row_layout])]
    for li in range(len(layouts.names)):
        rows = np.flatnonzero((row_layout == li) & (ntok == layouts.width[li]))
        if len(rows) == 0:
            continue
        cols = [flat.take(pa.array(tstart[rows] + j)) for j in range(layouts.width[li])]
        fit = np.ones(len(rows), dtype=bool)
        for j, col in enumerate(cols):
            fit &= _bool_np(pc.starts_with(col, layouts.prefix[li][j]))
        if not fit.all():
            misfit.append(rows[~fit])
            sel = pa.array(np.flatnonzero(fit))
            rows = rows[fit]
            cols = [c.take(sel) for c in cols]
        if len(rows):
            batches.append((li, rows, cols))
    misfit = np.concatenate(misfit)
    if len(misfit):
        batches.extend(_exact_layouts(flat, tstart, ntok, np.sort(misfit), layouts))

    blocks: list[Block] = []
    for li, rows, tok_cols in batches:
        names = layouts.names[li]
        keep = np.full(len(rows), layouts.ok[li], dtype=bool)
        keep &= key_size[key_idx[rows]] + 4 + layouts.max_len[li] <= ex.MAX_KEY_LENGTH
        cols = []
        if keep.any():
            for j, tok in enumerate(tok_cols):
                c = convert_column(pc.binary_slice(tok, len(layouts.prefix[li][j]), 1 << 30),
                                   marks)
                if c.bad is not None:
                    keep &= ~c.bad
                cols.append(c)
        if not keep.all():
            slow.append(candidates[rows[~keep]])
            rows = rows[keep]
            if len(rows) == 0:
                continue
            vals = [c.values[keep] for c in cols]
        else:
            vals = [c.values for c in cols]
        # sort the rows by series, keeping line order within each
        sk = key_idx[rows]
        order = np.argsort(sk, kind="stable")
        sk_sorted = sk[order]
        bounds = np.flatnonzero(sk_sorted[1:] != sk_sorted[:-1]) + 1
        starts = np.concatenate(([0], bounds)).tolist()
        ends = np.concatenate((bounds, [len(order)])).tolist()
        rows_o = rows[order]
        keys = [parsed_keys[k][:2] for k in sk_sorted[starts].tolist()]
        blocks.append(Block(names, [c.ftype for c in cols], [v[order] for v in vals],
                            ts_ns[rows_o], line_numbers[candidates[rows_o]], starts, ends, keys))
    return blocks, _concat(slow)


class _Layouts:
    """Distinct field layouts (raw key sequences) seen in one body."""

    def __init__(self, forbidden: bytes = b"") -> None:
        self.forbidden = forbidden  # placeholder bytes that may not appear in a key
        self.ids: dict[tuple, int] = {}
        self.names: list[list[str]] = []
        self.prefix: list[list[bytes]] = []
        self.width: np.ndarray = np.zeros(0, dtype=np.int64)
        self.ok: list[bool] = []
        self.max_len: list[int] = []

    def add(self, raw_keys: list[bytes]) -> int:
        key = tuple(raw_keys)
        li = self.ids.get(key)
        if li is None:
            li = self.ids[key] = len(self.names)
            names = [ex.decode(k) for k in raw_keys]
            self.names.append(names)
            self.prefix.append([k + b"=" for k in raw_keys])
            self.width = np.append(self.width, len(raw_keys))
            # duplicate keys (last wins), empty keys, quotes, escapes and a first key that 1.x
            # would strip (space/TAB/NUL) are left to the exact parser
            self.ok.append(len(set(names)) == len(names) and all(raw_keys)
                           and not any(b'"' in k or b"\\" in k for k in raw_keys)
                           and not any(bytes([f]) in k for f in self.forbidden
                                       for k in raw_keys)
                           and raw_keys[0][0] not in (9, 0, 32))
            self.max_len.append(max(map(len, raw_keys)))
        return li


def _exact_layouts(flat, tstart, ntok, rows, layouts: _Layouts):
    """Layouts of rows that do not fit their measurement's guess: one dictionary encoding of
    the per-row key sequences (no per-row Python work)."""
    counts = ntok[rows]
    pos = np.repeat(tstart[rows] - np.concatenate(([0], np.cumsum(counts)[:-1])), counts) + \
        np.arange(int(counts.sum()), dtype=np.int64)
    tok = flat.take(pa.array(pos))
    keys = pc.list_element(pc.split_pattern(tok, b"=", max_splits=1), 0)
    offsets = np.zeros(len(rows) + 1, dtype=np.int32)
    np.cumsum(counts, out=offsets[1:])
    enc = pc.dictionary_encode(pc.binary_join(pa.ListArray.from_arrays(pa.array(offsets), keys),
                                              b","))
    local = np.array([layouts.add(sk.split(b",")) for sk in enc.dictionary.to_pylist()],
                     dtype=np.int64)
    row_layout = local[enc.indices.to_numpy(zero_copy_only=False)]
    out = []
    for li in np.unique(row_layout).tolist():
        sel = np.flatnonzero(row_layout == li)
        r = rows[sel]
        out.append((li, r, [flat.take(pa.array(tstart[r] + j))
                            for j in range(layouts.width[li])]))
    return out


def _concat(chunks: list[np.ndarray]) -> np.ndarray:
    if not chunks:
        return np.zeros(0, dtype=np.int64)
    return np.sort(np.concatenate(chunks))
