"""PostgreSQL type codecs: result columns to DataRow bytes, bind parameters to Python values.

Result encoding is columnar and vectorised. :func:`encode_column` turns one numpy column into a
pair ``(lens, flat)``: an int32 array with the byte length of each value (-1 = NULL) and one
uint8 array holding the encoded values back to back. :func:`build_data_rows` then scatters the
columns of a chunk of rows into DataRow messages with a handful of numpy operations per column,
never one Python operation per row:

* text format of numbers goes through Arrow's casts (shortest round-trip float repr, integers),
  timestamps through ``datetime64`` string conversion of a fixed-width matrix that is patched in
  place ('T' -> ' ', trailing fractional zeros trimmed, '+00' appended for timestamptz);
* binary format of fixed-width types is ``astype('>i8')``-style byte swapping;
* strings are UTF-8 encoded by Arrow, which also yields the offsets.

Only ``numeric`` in binary form and ``bytea`` in text form encode value by value (rare types).

Nulls: object arrays may hold None (NULL); float NaN is a value, not NULL; ``datetime64`` NaT is
NULL. Timestamp columns are int64 nanoseconds since the Unix epoch (or ``datetime64``).

Parameter decoding (:func:`decode_param`) is per value (a statement has few parameters): text
parameters whose type oid is known are converted (int, float, bool, Decimal, datetime), others
stay ``str``; binary parameters are decoded for int2/4/8, float4/8, bool, text-like, bytea, oid,
timestamp(tz), date and numeric.
"""

from __future__ import annotations

import datetime as _dt
import struct
from decimal import Decimal, InvalidOperation, localcontext

import attrs
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from rusts.errors import ProtocolError, QueryError, UnsupportedError


@attrs.frozen
class PgType:
    """A PostgreSQL type as clients see it: name, oid and ``typlen`` (-1 = variable)."""

    name: str
    oid: int
    size: int


_TYPE_LIST = [
    PgType("bool", 16, 1),
    PgType("bytea", 17, -1),
    PgType("char", 18, 1),
    PgType("name", 19, 64),
    PgType("int8", 20, 8),
    PgType("int2", 21, 2),
    PgType("int4", 23, 4),
    PgType("text", 25, -1),
    PgType("oid", 26, 4),
    PgType("json", 114, -1),
    PgType("float4", 700, 4),
    PgType("float8", 701, 8),
    PgType("unknown", 705, -2),
    PgType("bpchar", 1042, -1),
    PgType("varchar", 1043, -1),
    PgType("date", 1082, 4),
    PgType("timestamp", 1114, 8),
    PgType("timestamptz", 1184, 8),
    PgType("numeric", 1700, -1),
]
TYPES_BY_NAME: dict[str, PgType] = {t.name: t for t in _TYPE_LIST}
TYPES_BY_OID: dict[int, PgType] = {t.oid: t for t in _TYPE_LIST}
_ALIASES = {
    "boolean": "bool", "smallint": "int2", "integer": "int4", "int": "int4", "bigint": "int8",
    "real": "float4", "double precision": "float8", "double": "float8", "float": "float8",
    "decimal": "numeric", "character varying": "varchar", "string": "text",
    "timestamp without time zone": "timestamp", "timestamp with time zone": "timestamptz",
}
TEXT_LIKE = frozenset({"text", "name", "varchar", "bpchar", "json", "unknown", "char"})
UNIX_TO_PG_EPOCH_US = 946_684_800_000_000  # 2000-01-01 in microseconds since 1970-01-01


def pg_type(name: str) -> PgType:
    """The :class:`PgType` for a type name or alias; unknown names map to ``text``."""
    key = name.lower()
    key = _ALIASES.get(key, key)
    return TYPES_BY_NAME.get(key, TYPES_BY_NAME["text"])


# ------------------------------------------------------------------------ result encoding

_EMPTY = np.empty(0, dtype=np.uint8)


def _split_nulls(arr: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """The non-null values and the null mask (None when nothing is null)."""
    if arr.dtype == object:
        mask = np.asarray(arr == None, dtype=bool)  # noqa: E711 - elementwise
        if mask.any():
            return arr[~mask], mask
        return arr, None
    if arr.dtype.kind == "M":
        mask = np.isnat(arr)
        if mask.any():
            return arr[~mask], mask
    return arr, None


def _fixed(values: np.ndarray, be_dtype: str) -> tuple[np.ndarray, np.ndarray]:
    raw = np.ascontiguousarray(values.astype(be_dtype, copy=False)).view(np.uint8)
    return np.full(len(values), np.dtype(be_dtype).itemsize, dtype=np.int32), raw


def _from_arrow_strings(sarr: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(lens, flat) of an Arrow string array without nulls."""
    if isinstance(sarr, pa.ChunkedArray):
        sarr = sarr.combine_chunks()
    if sarr.type != pa.string():
        sarr = sarr.cast(pa.string())
    bufs = sarr.buffers()
    offsets = np.frombuffer(bufs[1], dtype=np.int32, count=len(sarr) + 1, offset=sarr.offset * 4)
    lens = np.diff(offsets).astype(np.int32)
    if bufs[2] is None or len(sarr) == 0:
        return lens, _EMPTY
    flat = np.frombuffer(bufs[2], dtype=np.uint8)[offsets[0]:offsets[-1]]
    return lens, flat


def _from_fixed_matrix(mat: np.ndarray, lens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(lens, flat) from an (n, w) uint8 matrix whose row i holds ``lens[i]`` leading bytes."""
    keep = np.arange(mat.shape[1]) < lens[:, None]
    return lens.astype(np.int32), mat[keep]


def _to_int64(values: np.ndarray) -> np.ndarray:
    if values.dtype.kind in "iub":
        return values.astype(np.int64, copy=False)
    try:
        return values.astype(np.int64)
    except (TypeError, ValueError) as exc:
        raise QueryError(f"cannot encode value as integer: {exc}", sqlstate="22P02") from exc


def _to_float(values: np.ndarray, dtype: type) -> np.ndarray:
    try:
        return values.astype(dtype, copy=False)
    except (TypeError, ValueError) as exc:
        raise QueryError(f"cannot encode value as float: {exc}", sqlstate="22P02") from exc


def _timestamp_ns(values: np.ndarray) -> np.ndarray:
    if values.dtype.kind == "M":
        return values.astype("datetime64[ns]").view(np.int64)
    if values.dtype == object and len(values) and isinstance(values[0], (_dt.datetime, _dt.date)):
        out = np.empty(len(values), dtype=np.int64)
        for i, v in enumerate(values.tolist()):  # rare path: Python datetimes from a backend
            if isinstance(v, _dt.datetime) and v.tzinfo is not None:
                v = v.astimezone(_dt.timezone.utc).replace(tzinfo=None)
            out[i] = np.datetime64(v, "ns").view(np.int64)
        return out
    return _to_int64(values)


def _float_text(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    sarr = pa.array(values).cast(pa.string())
    if not np.isfinite(values).all():
        nan, pinf, ninf = np.isnan(values), np.isposinf(values), np.isneginf(values)
        sarr = pc.if_else(pa.array(nan), pa.scalar("NaN"), sarr)
        sarr = pc.if_else(pa.array(pinf), pa.scalar("Infinity"), sarr)
        sarr = pc.if_else(pa.array(ninf), pa.scalar("-Infinity"), sarr)
    return _from_arrow_strings(sarr)


def _str_text(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if values.dtype.kind in "US":
        values = values.astype(object)
    try:
        sarr = pa.array(values, type=pa.string(), from_pandas=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        sarr = pa.array([v.decode() if isinstance(v, bytes) else str(v) for v in values.tolist()],
                        type=pa.string())
    return _from_arrow_strings(sarr)


def _timestamp_text(ns: np.ndarray, tz: bool) -> tuple[np.ndarray, np.ndarray]:
    us = ns // 1000
    mat = us.view("datetime64[us]").astype("S26").view(np.uint8).reshape(len(us), 26)
    frac = us % 1_000_000
    trailing = np.zeros(len(us), dtype=np.int32)
    p = 10
    for _ in range(5):
        trailing += (frac % p == 0)
        p *= 10
    lens = np.where(frac == 0, 19, 26 - trailing).astype(np.int32)
    if tz:
        mat = np.concatenate([mat, np.zeros((len(us), 3), dtype=np.uint8)], axis=1)
        rows = np.arange(len(us))
        mat[rows, lens] = ord("+")
        mat[rows, lens + 1] = ord("0")
        mat[rows, lens + 2] = ord("0")
        lens = lens + 3
    mat[:, 10] = ord(" ")
    return _from_fixed_matrix(mat, lens)


def _bytes_values(values: np.ndarray) -> list[bytes]:
    out = []
    for v in values.tolist():
        if isinstance(v, str):
            v = v.encode()
        out.append(bytes(v))
    return out


def _numeric_text_values(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if values.dtype.kind in "iu":
        return _from_arrow_strings(pa.array(values).cast(pa.string()))
    if values.dtype.kind == "f":
        return _float_text(values)
    texts = [_numeric_str(v) for v in values.tolist()]
    return _from_arrow_strings(pa.array(texts, type=pa.string()))


def _numeric_str(v: object) -> str:
    if isinstance(v, Decimal):
        if v.is_nan():
            return "NaN"
        if v.is_infinite():
            return "Infinity" if v > 0 else "-Infinity"
        return format(v, "f")
    if isinstance(v, float):
        if v != v:
            return "NaN"
        if v in (float("inf"), float("-inf")):
            return "Infinity" if v > 0 else "-Infinity"
        return format(Decimal(repr(v)), "f")
    return str(v)


def numeric_binary(value: object) -> bytes:
    """PostgreSQL binary ``numeric``: ndigits, weight, sign, dscale, base-10000 digits."""
    if isinstance(value, float):
        value = Decimal(repr(value)) if value == value else Decimal("NaN")
    d = value if isinstance(value, Decimal) else Decimal(str(value))
    if d.is_nan():
        return struct.pack(">hhHh", 0, 0, 0xC000, 0)
    if d.is_infinite():
        return struct.pack(">hhHh", 0, 0, 0xD000 if d > 0 else 0xF000, 0)
    sign, digits, exp = d.as_tuple()
    dscale = max(-exp, 0)
    ds = "".join(map(str, digits))
    if exp > 0:
        ds += "0" * exp
        exp = 0
    if exp < 0:
        if len(ds) < -exp:
            ds = "0" * (-exp - len(ds)) + ds
        ipart, fpart = ds[:len(ds) + exp], ds[len(ds) + exp:]
    else:
        ipart, fpart = ds, ""
    ipart = ipart.lstrip("0")
    ipart = "0" * (-len(ipart) % 4) + ipart
    fpart = fpart + "0" * (-len(fpart) % 4)
    groups = [int(ipart[i:i + 4]) for i in range(0, len(ipart), 4)]
    weight = len(groups) - 1
    groups += [int(fpart[i:i + 4]) for i in range(0, len(fpart), 4)]
    while groups and groups[0] == 0:
        groups.pop(0)
        weight -= 1
    while groups and groups[-1] == 0:
        groups.pop()
    if not groups:
        weight = 0
    return struct.pack(f">hhHh{len(groups)}H", len(groups), weight,
                       0x4000 if sign else 0, dscale, *groups)


def numeric_from_binary(buf: bytes) -> Decimal:
    """Decode PostgreSQL binary ``numeric``."""
    if len(buf) < 8:
        raise ProtocolError("numeric value too short")
    ndigits, weight, sign, dscale = struct.unpack_from(">hhHh", buf)
    if len(buf) != 8 + 2 * ndigits or ndigits < 0:
        raise ProtocolError("numeric value has a bad length")
    if sign == 0xC000:
        return Decimal("NaN")
    if sign == 0xD000:
        return Decimal("Infinity")
    if sign == 0xF000:
        return Decimal("-Infinity")
    if sign not in (0, 0x4000) or dscale < 0:
        raise ProtocolError("numeric value has a bad sign or scale")
    digits = struct.unpack_from(f">{ndigits}H", buf, 8)
    if any(g > 9999 for g in digits):
        raise ProtocolError("numeric digit out of range")
    text = "".join(f"{g:04d}" for g in digits) or "0"
    exp = (weight - ndigits + 1) * 4
    d = Decimal(f"{'-' if sign else ''}{text}E{exp}")
    with localcontext() as ctx:
        ctx.prec = len(text) + abs(exp) + dscale + 8
        return d.quantize(Decimal(1).scaleb(-dscale))


def encode_column(arr: np.ndarray, type_name: str, fmt: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Encode one result column.

    Args:
        arr: the column (numpy, any dtype the type accepts; object arrays may hold None).
        type_name: pg type name (see :func:`pg_type`).
        fmt: 0 text, 1 binary.

    Returns:
        ``(lens, flat)``: int32 byte length per value (-1 = NULL) and the encoded bytes.
    """
    arr = np.asarray(arr)
    values, mask = _split_nulls(arr)
    name = pg_type(type_name).name
    if fmt not in (0, 1):
        raise ProtocolError(f"unsupported format code {fmt}")
    lens, flat = _encode_values(values, name, fmt)
    if mask is not None:
        full = np.full(len(arr), -1, dtype=np.int32)
        full[~mask] = lens
        lens = full
    return lens, flat


def _encode_values(values: np.ndarray, name: str, fmt: int) -> tuple[np.ndarray, np.ndarray]:
    n = len(values)
    if n == 0:
        return np.empty(0, dtype=np.int32), _EMPTY
    if name == "bool":
        b = values.astype(bool)
        if fmt:
            return np.ones(n, dtype=np.int32), b.view(np.uint8).copy()
        return np.ones(n, dtype=np.int32), np.where(b, ord("t"), ord("f")).astype(np.uint8)
    if name in ("int2", "int4", "int8", "oid"):
        ints = _to_int64(values)
        if fmt:
            return _fixed(ints, {"int2": ">i2", "int4": ">i4", "int8": ">i8", "oid": ">u4"}[name])
        return _from_arrow_strings(pa.array(ints).cast(pa.string()))
    if name in ("float4", "float8"):
        floats = _to_float(values, np.float32 if name == "float4" else np.float64)
        if fmt:
            return _fixed(floats, ">f4" if name == "float4" else ">f8")
        return _float_text(floats)
    if name in ("timestamp", "timestamptz"):
        ns = _timestamp_ns(values)
        if fmt:
            return _fixed(ns // 1000 - UNIX_TO_PG_EPOCH_US, ">i8")
        return _timestamp_text(ns, name == "timestamptz")
    if name == "date":
        days = _timestamp_ns(values) // 86_400_000_000_000
        if fmt:
            return _fixed(days - 10957, ">i4")
        mat = days.astype("datetime64[D]").astype("S10").view(np.uint8).reshape(n, 10)
        return np.full(n, 10, dtype=np.int32), mat.reshape(-1).copy()
    if name == "numeric":
        if fmt:
            parts = [numeric_binary(v) for v in values.tolist()]
            return (np.fromiter(map(len, parts), dtype=np.int32, count=n),
                    np.frombuffer(b"".join(parts), dtype=np.uint8))
        return _numeric_text_values(values)
    if name == "bytea":
        parts = _bytes_values(values)
        if not fmt:
            parts = [b"\\x" + p.hex().encode() for p in parts]
        return (np.fromiter(map(len, parts), dtype=np.int32, count=n),
                np.frombuffer(b"".join(parts), dtype=np.uint8))
    return _str_text(values)  # text-like: identical in text and binary format


def _put(out: np.ndarray, pos: np.ndarray, be_values: np.ndarray) -> None:
    k = be_values.dtype.itemsize
    out[pos[:, None] + np.arange(k)] = np.ascontiguousarray(be_values).view(np.uint8).reshape(-1, k)


def build_data_rows(columns: list[tuple[np.ndarray, np.ndarray]], nrows: int) -> bytes:
    """DataRow messages for ``nrows`` rows from encoded columns (see :func:`encode_column`)."""
    if nrows == 0:
        return b""
    ncols = len(columns)
    sizes = np.full(nrows, 7 + 4 * ncols, dtype=np.int64)
    payload_lens = []
    for lens, _ in columns:
        pl = np.maximum(lens, 0).astype(np.int64)
        sizes += pl
        payload_lens.append(pl)
    starts = np.zeros(nrows, dtype=np.int64)
    np.cumsum(sizes[:-1], out=starts[1:])
    out = np.empty(int(starts[-1] + sizes[-1]), dtype=np.uint8)
    out[starts] = ord("D")
    _put(out, starts + 1, (sizes - 1).astype(">i4"))
    _put(out, starts + 5, np.full(nrows, ncols, dtype=">i2"))
    cursor = starts + 7
    for (lens, flat), pl in zip(columns, payload_lens):
        _put(out, cursor, lens.astype(">i4"))
        data = cursor + 4
        if flat.size:
            lo, hi = int(pl.min()), int(pl.max())
            if lo == hi:
                out[data[:, None] + np.arange(lo)] = flat.reshape(nrows, lo)
            else:
                src = np.zeros(nrows, dtype=np.int64)
                np.cumsum(pl[:-1], out=src[1:])
                out[np.repeat(data - src, pl) + np.arange(flat.size)] = flat
        cursor = data + pl
    return out.tobytes()


def encode_data_rows(arrays: tuple[np.ndarray, ...] | list[np.ndarray], type_names, formats) -> bytes:
    """Encode rows of a columnar result (equally long arrays) as DataRow messages."""
    nrows = len(arrays[0]) if arrays else 0
    cols = [encode_column(a, t, f) for a, t, f in zip(arrays, type_names, formats)]
    return build_data_rows(cols, nrows)


# ------------------------------------------------------------------------ parameter decoding

_TRUE = frozenset({"t", "true", "1", "on", "yes", "y"})
_FALSE = frozenset({"f", "false", "0", "off", "no", "n"})
_BINARY_STRUCTS = {"int2": ">h", "int4": ">i", "int8": ">q", "float4": ">f", "float8": ">d",
                   "oid": ">I"}


def _bad(index: int, what: str, code: str) -> QueryError:
    return QueryError(f"{what} in bind parameter {index + 1}", sqlstate=code)


def decode_param(raw: bytes | None, type_oid: int, fmt: int, index: int = 0) -> object:
    """Decode one Bind parameter.

    Args:
        raw: the bytes (None = NULL).
        type_oid: the parameter's type oid (0 or unknown oids keep text as ``str``).
        fmt: 0 text, 1 binary.
        index: 0-based parameter number, for error messages.

    Raises:
        QueryError: 22P02 for bad text, 22P03 for bad binary data, 0A000 for binary data of a
            type without a decoder, 22021 for invalid UTF-8.
    """
    if raw is None:
        return None
    t = TYPES_BY_OID.get(type_oid)
    name = t.name if t is not None else ("unknown" if type_oid == 0 else "")
    if fmt == 1:
        return _decode_binary(raw, name, type_oid, index)
    if fmt != 0:
        raise ProtocolError(f"unsupported format code {fmt}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise _bad(index, "invalid UTF-8", "22021") from None
    try:
        if name in ("int2", "int4", "int8", "oid"):
            return int(text.strip())
        if name in ("float4", "float8"):
            return float(text.strip().replace("Infinity", "inf"))
        if name == "numeric":
            return Decimal(text.strip())
        if name == "bool":
            low = text.strip().lower()
            if low in _TRUE:
                return True
            if low in _FALSE:
                return False
            raise ValueError(text)
    except (ValueError, InvalidOperation):
        raise _bad(index, f"invalid input syntax for type {name}: {text!r}", "22P02") from None
    if name in ("timestamp", "timestamptz"):
        try:
            v = _dt.datetime.fromisoformat(text.strip())
        except ValueError:
            return text  # e.g. 'now', 'epoch': left to the SQL layer
        if name == "timestamptz" and v.tzinfo is None:
            v = v.replace(tzinfo=_dt.timezone.utc)
        return v
    if name == "bytea" and text.startswith("\\x"):
        try:
            return bytes.fromhex(text[2:])
        except ValueError:
            raise _bad(index, "invalid hexadecimal data", "22P02") from None
    return text


def _decode_binary(raw: bytes, name: str, oid: int, index: int) -> object:
    if name in _BINARY_STRUCTS:
        fmt = _BINARY_STRUCTS[name]
        if len(raw) != struct.calcsize(fmt):
            raise _bad(index, "incorrect binary data format", "22P03")
        return struct.unpack(fmt, raw)[0]
    if name == "bool":
        if len(raw) != 1:
            raise _bad(index, "incorrect binary data format", "22P03")
        return raw != b"\x00"
    if name in ("timestamp", "timestamptz"):
        if len(raw) != 8:
            raise _bad(index, "incorrect binary data format", "22P03")
        us = struct.unpack(">q", raw)[0]
        if us in (2**63 - 1, -2**63):
            return "infinity" if us > 0 else "-infinity"
        v = _dt.datetime(2000, 1, 1) + _dt.timedelta(microseconds=us)
        return v.replace(tzinfo=_dt.timezone.utc) if name == "timestamptz" else v
    if name == "date":
        if len(raw) != 4:
            raise _bad(index, "incorrect binary data format", "22P03")
        return _dt.date(2000, 1, 1) + _dt.timedelta(days=struct.unpack(">i", raw)[0])
    if name == "numeric":
        try:
            return numeric_from_binary(raw)
        except ProtocolError:
            raise _bad(index, "incorrect binary data format", "22P03") from None
    if name == "bytea":
        return bytes(raw)
    if name in TEXT_LIKE:
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise _bad(index, "invalid UTF-8", "22021") from None
    raise UnsupportedError(f"binary format for parameter {index + 1} of type oid {oid} "
                           "is not supported")
