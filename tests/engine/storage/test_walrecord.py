"""WAL record codec: round trips (hypothesis + fixed cases), corruption detection, speed."""

from __future__ import annotations


import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rusts.errors import CorruptionError
from rusts.model import Column, FieldType, SeriesRows, WriteBatch, LineError
from rusts.storage.walrecord import decode_batch, encode_batch

i64 = st.integers(-(2**63), 2**63 - 1)
u64 = st.integers(0, 2**64 - 1)
text = st.text(max_size=12)


def values_of(draw, ftype: FieldType, n: int) -> np.ndarray:
    """``n`` drawn values of ``ftype`` (any float, any int64/uint64, strings) as its array."""
    if ftype is FieldType.FLOAT:
        vals = np.array(draw(st.lists(st.floats(allow_nan=True), min_size=n, max_size=n)),
                        dtype=np.float64)
    elif ftype is FieldType.INTEGER:
        vals = np.array(draw(st.lists(i64, min_size=n, max_size=n)), dtype=np.int64)
    elif ftype is FieldType.UNSIGNED:
        vals = np.array(draw(st.lists(u64, min_size=n, max_size=n)), dtype=np.uint64)
    elif ftype is FieldType.BOOLEAN:
        vals = np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n)), dtype=bool)
    else:
        vals = np.empty(n, dtype=object)
        vals[:] = draw(st.lists(text, min_size=n, max_size=n))
    return vals


@st.composite
def columns(draw, n: int) -> Column:
    ftype = draw(st.sampled_from(list(FieldType)))
    vals = values_of(draw, ftype, n)
    mask = None
    if n and draw(st.booleans()):
        mask = np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n)), dtype=bool)
    return Column(ftype, vals, mask)


@st.composite
def series_rows(draw) -> SeriesRows:
    n = draw(st.integers(0, 20))
    tags = tuple(sorted(draw(st.dictionaries(text, text, max_size=3)).items()))
    ts = np.array(draw(st.lists(i64, min_size=n, max_size=n)), dtype=np.int64)
    names = draw(st.lists(text, unique=True, max_size=4))
    cols = {name: draw(columns(n)) for name in names}
    return SeriesRows(draw(text), tags, ts, cols, np.arange(1, n + 1, dtype=np.int64))


batches = st.lists(series_rows(), max_size=4).map(lambda s: WriteBatch(tuple(s)))


def assert_same(a: WriteBatch, b: WriteBatch) -> None:
    assert len(a.series) == len(b.series)
    for x, y in zip(a.series, b.series):
        assert x.measurement == y.measurement
        assert x.tags == y.tags
        np.testing.assert_array_equal(x.timestamps, y.timestamps)
        assert y.timestamps.dtype == np.int64
        assert list(x.columns) == list(y.columns)
        for name, cx in x.columns.items():
            cy = y.columns[name]
            assert cx.type == cy.type
            assert cy.values.dtype == cx.type.dtype
            if cx.mask is None:
                assert cy.mask is None
                valid = np.ones(len(cx), dtype=bool)
            else:
                np.testing.assert_array_equal(cx.mask, cy.mask)
                valid = cx.mask
            if cx.type is FieldType.FLOAT:  # bit-exact, NaN payloads and -0.0 included
                np.testing.assert_array_equal(cx.values[valid].view(np.uint64),
                                              cy.values[valid].view(np.uint64))
            else:
                assert list(cx.values[valid]) == list(cy.values[valid])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches)
def test_roundtrip_hypothesis(batch: WriteBatch) -> None:
    out = decode_batch(encode_batch(batch))
    assert_same(batch, out)
    assert out.errors == ()
    for s in out.series:
        assert (s.line_numbers == 0).all() and len(s.line_numbers) == len(s)


def test_roundtrip_unicode_masks_and_errors_dropped() -> None:
    strs = np.array(["ä€😀", "", "x\x00y", None], dtype=object)
    s = SeriesRows("m é", (("host", "ß,=x"), ("z", "")),
                   np.array([3, 1, 2, 2], dtype=np.int64),
                   {"s": Column(FieldType.STRING, strs, np.array([1, 1, 1, 0], dtype=bool)),
                    "b": Column(FieldType.BOOLEAN, np.array([True, False, True, True])),
                    "u": Column(FieldType.UNSIGNED, np.array([2**64 - 1, 0, 1, 5], dtype=np.uint64)),
                    "f": Column(FieldType.FLOAT, np.array([np.nan, -0.0, np.inf, 1.5]))},
                   np.array([1, 2, 3, 4], dtype=np.int64))
    batch = WriteBatch((s,), errors=(LineError(5, "bad", "nope"),))
    out = decode_batch(encode_batch(batch))
    assert_same(batch, out)
    assert list(out.series[0].columns["s"].values[:3]) == ["ä€😀", "", "x\x00y"]
    assert out.errors == ()
    assert out.series[0].key == s.key


def test_decoded_arrays_are_writable() -> None:
    s = SeriesRows("m", (), np.arange(3, dtype=np.int64),
                   {"v": Column(FieldType.FLOAT, np.ones(3))}, np.arange(3))
    out = decode_batch(encode_batch(WriteBatch((s,))))
    out.series[0].timestamps[0] = 7
    out.series[0].columns["v"].values[0] = 7.0


def _sample() -> bytes:
    s = SeriesRows("cpu", (("host", "a"),), np.arange(4, dtype=np.int64),
                   {"v": Column(FieldType.FLOAT, np.arange(4.0)),
                    "s": Column(FieldType.STRING, np.array(["a", "bb", "c", "dd"], dtype=object))},
                   np.arange(4))
    return encode_batch(WriteBatch((s,)))


def test_every_truncation_is_detected() -> None:
    buf = _sample()
    for cut in range(len(buf)):
        with pytest.raises(CorruptionError):
            decode_batch(buf[:cut])


def test_trailing_bytes_bad_version_and_type_detected() -> None:
    buf = _sample()
    with pytest.raises(CorruptionError):
        decode_batch(buf + b"\x00")
    with pytest.raises(CorruptionError):
        decode_batch(b"\x09" + buf[1:])
    with pytest.raises(CorruptionError):  # string index beyond the string table
        decode_batch(buf[:2] + b"\x00\x00\x00\x00" + buf[6:])
    with pytest.raises(CorruptionError):
        decode_batch(buf[:1] + b"\x01" + buf[2:])
    one = SeriesRows("m", (), np.array([5], dtype=np.int64),
                     {"b": Column(FieldType.BOOLEAN, np.array([True]))}, np.array([1]))
    buf = encode_batch(WriteBatch((one,)))
    # tail: col_type u8, col_mask u8, ts i64, bool u8, empty string section (u64 blob len)
    pos = len(buf) - 19
    assert buf[pos] == FieldType.BOOLEAN
    decode_batch(buf)
    with pytest.raises(CorruptionError):
        decode_batch(buf[:pos] + b"\x07" + buf[pos + 1:])
    with pytest.raises(CorruptionError):  # column flag other than 0/1
        decode_batch(buf[:pos + 1] + b"\x02" + buf[pos + 2:])


def test_random_byte_flips_never_crash_otherwise() -> None:
    buf = bytearray(_sample())
    rng = np.random.default_rng(1)
    for _ in range(300):
        b = bytearray(buf)
        i = int(rng.integers(len(b)))
        b[i] ^= int(rng.integers(1, 256))
        try:
            decode_batch(bytes(b))
        except CorruptionError:
            pass


# Bytes written by format version 1; they must keep decoding to the same batch (and encoding
# the batch must keep producing them) unless the version byte changes.
GOLDEN_V1 = bytes.fromhex(
    "01000800000001000000050000000100000003000000040000000100000001000000010000000100000001"
    "000000010000000d00000000000000637075686f73746166697562730000000001000000010000000200"
    "000002000000050000000300000004000000050000000600000007000000000102040300010000000a00"
    "000000000000140000000000000080000000000000f83f00000000000000c0ffffffffffffffff000000"
    "00000000000300000000000000ffffffffffffffff010002000000020000000400000000000000c3a97879")


def golden_batch() -> WriteBatch:
    s = SeriesRows("cpu", (("host", "a"),), np.array([10, 20], dtype=np.int64),
                   {"f": Column(FieldType.FLOAT, np.array([1.5, -2.0])),
                    "i": Column(FieldType.INTEGER, np.array([-1, 7], dtype=np.int64),
                                np.array([True, False])),
                    "u": Column(FieldType.UNSIGNED, np.array([3, 2**64 - 1], dtype=np.uint64)),
                    "b": Column(FieldType.BOOLEAN, np.array([True, False])),
                    "s": Column(FieldType.STRING, np.array(["é", "xy"], dtype=object))},
                   np.array([1, 2]))
    return WriteBatch((s,))


def test_golden_v1() -> None:
    assert encode_batch(golden_batch()) == GOLDEN_V1
    assert_same(golden_batch(), decode_batch(GOLDEN_V1))
