"""Type codecs: vectorised result encoding (text and binary) and parameter decoding."""

from __future__ import annotations

import datetime as dt
import math
import struct
from decimal import Decimal

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from rusts.errors import QueryError, UnsupportedError
from rusts.protocols.pgwire import _frontend as fe
from rusts.protocols.pgwire import decode_param, encode_data_rows, pg_type
from rusts.protocols.pgwire._types import numeric_binary, numeric_from_binary

EPOCH = dt.datetime(1970, 1, 1)


def rows(arrays, types, formats):
    """Encode then parse back the DataRow messages: list of rows of bytes/None."""
    data = encode_data_rows(tuple(arrays), tuple(types), tuple(formats))
    msgs, rest = fe.parse_backend(data)
    assert rest == b""
    assert all(mm.type == "D" for mm in msgs)
    return [mm.fields for mm in msgs]


def column(arr, t, fmt):
    return [r[0] for r in rows([arr], [t], [fmt])]


def pg_float(text: bytes) -> float:
    s = text.decode()
    return {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}.get(s) or float(s)


def same_float(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or (a == b and math.copysign(1, a) == math.copysign(1, b))


@settings(max_examples=150, deadline=None)
@given(hnp.arrays(np.float64, st.integers(0, 60)))
def test_float8_text_and_binary_round_trip(values):
    text = column(values, "float8", 0)
    binary = column(values, "float8", 1)
    for v, t, b in zip(values.tolist(), text, binary):
        assert same_float(pg_float(t), v)
        assert same_float(struct.unpack(">d", b)[0], v)


def test_float_text_spelling():
    values = np.array([math.nan, math.inf, -math.inf, 0.1, 100.0, 1e20, -0.0, 1.5e-7])
    assert column(values, "float8", 0) == [b"NaN", b"Infinity", b"-Infinity", b"0.1", b"100",
                                          b"1e+20", b"-0", b"1.5e-7"]
    assert column(np.array([0.1, 3.4028235e38], dtype=np.float32), "float4", 0) == [b"0.1",
                                                                                   b"3.4028235e+38"]


@settings(max_examples=150, deadline=None)
@given(hnp.arrays(np.float32, st.integers(0, 40)))
def test_float4_round_trip(values):
    for v, t, b in zip(values.tolist(), column(values, "float4", 0), column(values, "float4", 1)):
        assert same_float(float(np.float32(pg_float(t))), v)
        assert same_float(struct.unpack(">f", b)[0], v)


@settings(max_examples=150, deadline=None)
@given(hnp.arrays(np.int64, st.integers(0, 60)))
def test_int8_round_trip(values):
    assert [int(t) for t in column(values, "int8", 0)] == values.tolist()
    assert [struct.unpack(">q", b)[0] for b in column(values, "int8", 1)] == values.tolist()


def test_small_ints_and_oid_binary_widths():
    assert column(np.array([-2, 7]), "int2", 1) == [b"\xff\xfe", b"\x00\x07"]
    assert column(np.array([-2]), "int4", 1) == [b"\xff\xff\xff\xfe"]
    assert column(np.array([4000000000], dtype=np.uint64), "oid", 1) == [struct.pack(">I", 4000000000)]


def pg_timestamp_text(ns: int) -> str:
    t = EPOCH + dt.timedelta(microseconds=ns // 1000)
    s = t.strftime("%Y-%m-%d %H:%M:%S")
    if t.microsecond:
        s += f".{t.microsecond:06d}".rstrip("0")
    return s


@settings(max_examples=150, deadline=None)
@given(st.lists(st.integers(-(2**63) + 1, 2**63 - 1), max_size=40))
def test_timestamp_text_and_binary(ns_list):
    ns = np.array(ns_list, dtype=np.int64)
    expected = [pg_timestamp_text(v) for v in ns_list]
    assert [t.decode() for t in column(ns, "timestamp", 0)] == expected
    assert [t.decode() for t in column(ns, "timestamptz", 0)] == [e + "+00" for e in expected]
    got = [struct.unpack(">q", b)[0] for b in column(ns, "timestamp", 1)]
    assert got == [v // 1000 - 946_684_800_000_000 for v in ns_list]


def test_timestamp_examples_and_nulls():
    arr = np.array([0, None, 1_700_000_000_500_000_000, 1_700_000_000_000_123_000], dtype=object)
    assert column(arr, "timestamp", 0) == [b"1970-01-01 00:00:00", None,
                                           b"2023-11-14 22:13:20.5", b"2023-11-14 22:13:20.000123"]
    assert column(np.array([0], dtype="datetime64[ns]"), "timestamptz", 0) == [b"1970-01-01 00:00:00+00"]
    assert column(np.array(["NaT"], dtype="datetime64[ns]"), "timestamp", 0) == [None]


def test_bool_text_binary():
    arr = np.array([True, None, False], dtype=object)
    assert column(arr, "bool", 0) == [b"t", None, b"f"]
    assert column(arr, "bool", 1) == [b"\x01", None, b"\x00"]


@settings(max_examples=150, deadline=None)
@given(st.lists(st.one_of(st.none(), st.text()), max_size=30))
def test_text_round_trip_with_nulls(values):
    arr = np.empty(len(values), dtype=object)
    arr[:] = values
    expected = [None if v is None else v.encode("utf-8") for v in values]
    assert column(arr, "text", 0) == expected
    assert column(arr, "varchar", 1) == expected


def test_non_string_objects_in_text_columns_are_stringified():
    assert column(np.array([1, "a", 2.5], dtype=object), "text", 0) == [b"1", b"a", b"2.5"]


@settings(max_examples=200, deadline=None)
@given(st.decimals(allow_nan=True, allow_infinity=True, places=None))
def test_numeric_binary_round_trip(d):
    back = numeric_from_binary(numeric_binary(d))
    if d.is_nan():
        assert back.is_nan()
    else:
        assert back == d


def test_numeric_binary_known_bytes():
    # PostgreSQL's own encoding of 12345.678: ndigits 3, weight 1, sign 0, dscale 3, 1 2345 6780
    assert numeric_binary(Decimal("12345.678")) == struct.pack(">hhHh3H", 3, 1, 0, 3, 1, 2345, 6780)
    assert numeric_binary(Decimal("-0.0001")) == struct.pack(">hhHh1H", 1, -1, 0x4000, 4, 1)
    assert numeric_binary(0) == struct.pack(">hhHh", 0, 0, 0, 0)


def test_numeric_text():
    arr = np.array([Decimal("1.50"), None, Decimal("1E+3"), Decimal("NaN"), 7], dtype=object)
    assert column(arr, "numeric", 0) == [b"1.50", None, b"1000", b"NaN", b"7"]
    assert column(np.array([2**64 - 1], dtype=np.uint64), "numeric", 0) == [b"18446744073709551615"]
    assert [numeric_from_binary(b) for b in column(np.array([2**64 - 1], dtype=np.uint64), "numeric", 1)] \
        == [Decimal(2**64 - 1)]


def test_bytea_and_json_and_char():
    arr = np.array([b"\x00\xff", None], dtype=object)
    assert column(arr, "bytea", 0) == [b"\\x00ff", None]
    assert column(arr, "bytea", 1) == [b"\x00\xff", None]
    assert column(np.array(['{"a": 1}'], dtype=object), "json", 1) == [b'{"a": 1}']
    assert column(np.array(["r"], dtype=object), "char", 0) == [b"r"]


def test_mixed_row_layout_with_nulls_in_every_column():
    n = 50
    rng = np.random.default_rng(3)
    nulls = rng.random((3, n)) < 0.3
    ints = np.array([None if nulls[0, i] else i for i in range(n)], dtype=object)
    texts = np.array([None if nulls[1, i] else "x" * (i % 7) for i in range(n)], dtype=object)
    floats = np.arange(n) / 4
    got = rows([ints, texts, floats], ["int8", "text", "float8"], [1, 0, 0])
    assert len(got) == n
    for i, r in enumerate(got):
        assert r[0] == (None if nulls[0, i] else struct.pack(">q", i))
        assert r[1] == (None if nulls[1, i] else b"x" * (i % 7))
        assert float(r[2]) == i / 4


def test_zero_rows_and_zero_columns():
    assert encode_data_rows((np.array([], dtype=np.int64),), ("int8",), (0,)) == b""


def test_pg_type_aliases():
    assert pg_type("double precision").oid == 701
    assert pg_type("TIMESTAMPTZ").oid == 1184
    assert pg_type("whatever").name == "text"


@pytest.mark.parametrize("raw,oid,fmt,expected", [
    (b"42", 20, 0, 42),
    (b" -7 ", 23, 0, -7),
    (b"1.5", 701, 0, 1.5),
    (b"Infinity", 701, 0, math.inf),
    (b"true", 16, 0, True),
    (b"off", 16, 0, False),
    (b"12.50", 1700, 0, Decimal("12.50")),
    (b"hello", 0, 0, "hello"),
    (b"2024-01-02 03:04:05.5", 1114, 0, dt.datetime(2024, 1, 2, 3, 4, 5, 500000)),
    (b"2024-01-02 03:04:05+00", 1184, 0, dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)),
    (b"now", 1114, 0, "now"),
    (struct.pack(">q", -5), 20, 1, -5),
    (struct.pack(">i", 5), 23, 1, 5),
    (struct.pack(">h", 5), 21, 1, 5),
    (struct.pack(">d", 2.5), 701, 1, 2.5),
    (struct.pack(">f", 2.5), 700, 1, 2.5),
    (b"\x01", 16, 1, True),
    ("héllo".encode(), 25, 1, "héllo"),
    (struct.pack(">q", 0), 1114, 1, dt.datetime(2000, 1, 1)),
    (struct.pack(">q", 1_000_001), 1184, 1, dt.datetime(2000, 1, 1, 0, 0, 1, 1, tzinfo=dt.timezone.utc)),
    (struct.pack(">i", 1), 1082, 1, dt.date(2000, 1, 2)),
    (numeric_binary(Decimal("-3.25")), 1700, 1, Decimal("-3.25")),
    (b"\\x00ff", 17, 0, b"\x00\xff"),
    (None, 20, 1, None),
])
def test_decode_param(raw, oid, fmt, expected):
    assert decode_param(raw, oid, fmt) == expected


@pytest.mark.parametrize("raw,oid,fmt,code", [
    (b"abc", 20, 0, "22P02"),
    (b"maybe", 16, 0, "22P02"),
    (b"\x00\x01", 20, 1, "22P03"),
    (b"\xff", 25, 0, "22021"),
    (b"\x00" * 16, 2950, 1, "0A000"),  # uuid binary: no decoder
])
def test_decode_param_errors(raw, oid, fmt, code):
    with pytest.raises((QueryError, UnsupportedError)) as info:
        decode_param(raw, oid, fmt, 2)
    assert info.value.sqlstate == code
    assert "parameter 3" in str(info.value)
