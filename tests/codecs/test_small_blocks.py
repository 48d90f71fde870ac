"""Small blocks (at most 16 values) take their own encoder rule and decoder paths; segments of
many small series and queries over many small blocks depend on them being exact and compact."""

import struct
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from rusts.codecs import Tag, decode, encode
from rusts.codecs import _bits, _ints
from rusts.errors import CodecError

SETTINGS = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])
small = st.integers(1, 16)
SPECIAL = [0x0, 0x8000000000000000, 0x7FF0000000000000, 0xFFF0000000000000,
           0x7FF8000000000000, 0x7FF4DEADBEEF0000, 0x1, 0x000FFFFFFFFFFFFF, 0x7FEFFFFFFFFFFFFF]


def same(a, b) -> bool:
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.dtype.kind == "f":
        return bool((a.view(np.uint64) == b.view(np.uint64)).all())
    return a.tolist() == b.tolist()


def objects(lst):
    a = np.empty(len(lst), dtype=object)
    a[:] = lst
    return a


INTS = hnp.arrays(np.int64, small, elements=st.integers(-(2 ** 63), 2 ** 63 - 1)
                  | st.sampled_from([-(2 ** 63), 2 ** 63 - 1, 0, -1]))
NEAR = st.builds(lambda base, steps: (np.int64(base) + np.cumsum(np.array(steps, np.int64))),
                 st.integers(-(2 ** 62), 2 ** 62), st.lists(st.integers(-1000, 1000), min_size=1,
                                                            max_size=16))
UINTS = hnp.arrays(np.uint64, small, elements=st.integers(0, 2 ** 64 - 1)
                   | st.sampled_from([0, 2 ** 64 - 1, 2 ** 63]))
FLOATS = (hnp.arrays(np.uint64, small, elements=st.integers(0, 2 ** 64 - 1)
                     | st.sampled_from(SPECIAL)).map(lambda u: u.view(np.float64))
          | st.builds(lambda ints, e: np.array(ints, np.int64) / 10.0 ** e,
                      st.lists(st.integers(-(10 ** 12), 10 ** 12), min_size=1, max_size=16),
                      st.integers(0, 6)))


@SETTINGS
@given(INTS | NEAR, st.booleans())
def test_small_int_blocks_roundtrip(values, timestamps):
    assert same(values, decode(encode(values, timestamps=timestamps)))


@SETTINGS
@given(UINTS)
def test_small_uint_blocks_roundtrip(values):
    assert same(values, decode(encode(values)))


@SETTINGS
@given(FLOATS)
def test_small_float_blocks_roundtrip_bit_exact(values):
    assert same(values, decode(encode(values)))


@SETTINGS
@given(INTS | NEAR)
def test_small_rule_is_never_bigger_than_raw_for_or_delta(values):
    size = len(encode(values))
    for codec in (Tag.RAW, Tag.FOR, Tag.DELTA_FOR):
        try:
            assert size <= len(encode(values, codec=codec, compression="none"))
        except CodecError:
            pass  # width over the packing limit


@SETTINGS
@given(st.lists(st.sampled_from(["ok", "warn", "crit", "", "é\u4e2d", "\ud800"]),
                min_size=1, max_size=16))
def test_small_string_blocks_roundtrip(values):
    out = decode(encode(objects(values)))
    assert out.tolist() == values


def test_small_blocks_take_the_compact_codecs():
    t0 = 1_700_000_000_000_000_000
    ts = t0 + np.arange(3, dtype=np.int64) * 10_000_000_000
    block = encode(ts, timestamps=True)
    assert block[0] == Tag.DELTA_FOR and len(block) <= 27
    walk = np.array([51.25, 50.5, 52.75, 53.0, 51.99])
    block = encode(walk)
    assert block[0] == Tag.ALP and len(block) < 10 + 8 * len(walk)
    assert encode(np.full(5, 2.5))[0] == Tag.CONST
    # NaN / -0.0 / full precision: RAW, still exact
    for odd in (np.array([1.5, np.nan, 2.5]), np.array([1.5, -0.0, 2.5]), np.array([0.1, 1 / 3])):
        block = encode(odd)
        assert block[0] == Tag.RAW and same(odd, decode(block))
    names = objects(["ok", "warn"] * 8)
    assert encode(names)[0] == Tag.STR_DICT


def test_small_numeric_blocks_are_never_wrapped():
    for values in (np.zeros(16, np.int64) + np.arange(16) * 7, np.tile([1.5, 2.5], 8),
                   np.tile(np.array([2 ** 60, 5], np.int64), 8)):
        for compression in ("fast", "default", "best"):
            for tier in ("hot", "cold"):
                assert encode(values, compression=compression, tier=tier)[1] >> 4 == 0


@SETTINGS
@given(st.integers(1, 63), st.integers(0, 64), st.data())
def test_small_packing_matches_lane_packing(n, width, data):
    values = data.draw(hnp.arrays(np.uint64, n, elements=st.integers(0, (1 << width) - 1)))
    packed = _bits.pack(values, width)
    assert _bits.pack_small(values.tolist(), n, width) == packed
    assert list(_bits.unpack_small(packed, n, width)) == values.tolist()
    assert _bits.unpack(packed, n, width).tolist() == values.tolist()


def test_unpack_small_rejects_a_wrong_length():
    with pytest.raises(CodecError):
        _bits.unpack_small(b"\x00" * 3, 3, 9)


def _frame(tag: int, vtype: int, n: int, payload: bytes) -> bytes:
    block = struct.pack("<BBI", tag, vtype, n) + payload
    return block + struct.pack("<I", zlib.crc32(block))


def test_zerorun_with_an_empty_middle_run_decodes_by_the_format_definition():
    # runs [2, 1, 0, 2, 1] over 6 deltas: non-zero 2, zero 1, non-zero 0, zero 2, non-zero 1
    runs = np.array([2, 1, 0, 2, 1], np.uint64)
    nz = np.array([5, -3, 4], np.int64).view(np.uint64)
    rsub = bytes((Tag.RAW,)) + runs.astype("<u8").tobytes()
    payload = (struct.pack("<QII", 100, len(runs), len(rsub)) + rsub
               + bytes((Tag.RAW,)) + nz.astype("<u8").tobytes())
    out = decode(_frame(Tag.DELTA_ZERORUN, 1, 7, payload))
    deltas = [5, -3, 0, 0, 0, 4]
    assert out.tolist() == list(100 + np.cumsum([0] + deltas))


def test_zerorun_parts_expand_to_the_values():
    values = np.repeat(np.array([3, 9, 9, -4, 7], np.int64), [5, 1, 40, 3, 20])
    values[50:55] += np.arange(5)
    block = encode(values.view(np.uint64), codec=Tag.DELTA_ZERORUN, compression="none")
    levels, reps = _ints.zerorun_parts(memoryview(block)[6:-4], len(values))
    assert reps is not None and len(levels) < len(values)
    assert np.repeat(levels, reps).view(np.int64).tolist() == values.tolist()


def test_string_dictionary_found_past_the_prefix():
    rng = np.random.default_rng(3)
    names = ["a", "b", "c"]
    values = [names[i] for i in rng.integers(0, 3, 4000)]
    values[3000] = "late"  # not in the first 256 values
    block = encode(objects(values))
    assert block[0] == Tag.STR_DICT
    assert decode(block).tolist() == values


def test_string_dictionaries_beyond_256_entries_and_high_cardinality():
    values = [f"host-{i % 700}" for i in range(4096)]
    block = encode(objects(values))
    assert block[0] == Tag.STR_DICT and decode(block).tolist() == values
    unique = [f"req-{i:08x}" for i in range(4096)]
    block = encode(objects(unique))
    assert block[0] == Tag.STR_RAW and decode(block).tolist() == unique
