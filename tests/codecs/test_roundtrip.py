"""Round trips of every codec and dtype: exact values (bit patterns for floats) and exact dtype."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from rusts.codecs import COMPRESSION_LEVELS, Tag, decode, decoded_count, encode
from rusts.errors import CodecError

SETTINGS = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
I64 = (-(2 ** 63), 2 ** 63 - 1)
U64_MAX = 2 ** 64 - 1
SPECIAL_FLOAT_BITS = [
    0x0000000000000000, 0x8000000000000000,  # +0.0, -0.0
    0x7FF0000000000000, 0xFFF0000000000000,  # +-inf
    0x7FF8000000000000, 0xFFF8000000000001, 0x7FF0000000000001, 0x7FF4DEADBEEF0000,  # NaNs
    0x0000000000000001, 0x000FFFFFFFFFFFFF, 0x8000000000000001,  # subnormals
    0x7FEFFFFFFFFFFFFF, 0x0010000000000000,  # max, min normal
]
lengths = st.integers(0, 300)


def same(a: np.ndarray, b: np.ndarray) -> bool:
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.dtype.kind == "f":
        return bool((a.view(np.uint64) == b.view(np.uint64)).all())
    if a.dtype.kind == "O":
        return all(type(x) is str for x in b) and a.tolist() == b.tolist()
    return bool((a == b).all())


def roundtrip(values, **kw) -> bytes:
    block = encode(values, **kw)
    out = decode(block)
    assert same(values, out), (values[:8], out[:8])
    assert decoded_count(block) == len(values)
    return block


def _int_arrays(dtype, lo, hi):
    plain = hnp.arrays(dtype, lengths, elements=st.integers(lo, hi))
    extremes = hnp.arrays(dtype, lengths, elements=st.sampled_from([lo, hi, 0, 1, lo + 1, hi - 1]))
    # sorted / runs / small steps around a random base exercise the delta codecs
    walks = st.builds(
        lambda base, steps: (np.asarray(base, dtype).astype(np.uint64)
                             + np.cumsum(np.asarray(steps, np.int64)).astype(np.uint64)
                             ).view(dtype) if len(steps) else np.zeros(0, dtype),
        st.integers(lo, hi), st.lists(st.integers(-(2 ** 40), 2 ** 40), max_size=300))
    # runs of repeated values (zero deltas) and small-radix values exercise DELTA_ZERORUN and
    # FOR_RADIX; long enough to fill 64-value lanes plus a tail
    runs = st.builds(
        lambda pairs: np.repeat(np.array([v for v, _ in pairs], dtype=dtype),
                                [c for _, c in pairs]),
        st.lists(st.tuples(st.integers(lo, hi) | st.integers(0, 12), st.integers(1, 60)),
                 max_size=40))
    radix = st.builds(lambda base, k, idx: (np.asarray(idx, np.uint64) % np.uint64(k)
                                             + np.asarray(base, dtype).astype(np.uint64)
                                             ).view(dtype),
                      st.integers(lo, hi), st.integers(2, 40),
                      st.lists(st.integers(0, 1000), min_size=64, max_size=400))
    return plain | extremes | walks | runs | radix


INT64S = _int_arrays(np.int64, *I64)
UINT64S = _int_arrays(np.uint64, 0, U64_MAX)
FLOAT_BITS = hnp.arrays(np.uint64, lengths,
                        elements=st.integers(0, U64_MAX) | st.sampled_from(SPECIAL_FLOAT_BITS))
DECIMALS = st.builds(
    lambda ints, e, noise: _with_noise((np.asarray(ints, np.int64) / 10.0 ** e), noise),
    st.lists(st.integers(-(10 ** 9), 10 ** 9), max_size=300), st.integers(0, 6),
    st.lists(st.tuples(st.integers(0, 299), st.sampled_from(SPECIAL_FLOAT_BITS + [0x3FB999999999999A])),
             max_size=10))


def _with_noise(f: np.ndarray, noise) -> np.ndarray:
    f = f.astype(np.float64)
    for i, bits in noise:
        if i < len(f):
            f.view(np.uint64)[i] = bits
    return f


DECIMAL_RUNS = st.builds(
    lambda pairs, e: np.repeat(np.array([v for v, _ in pairs], np.int64) / 10.0 ** e,
                               [c for _, c in pairs]),
    st.lists(st.tuples(st.integers(-(10 ** 6), 10 ** 6), st.integers(1, 80)), max_size=60),
    st.integers(0, 4))
FLOATS = FLOAT_BITS.map(lambda u: u.view(np.float64)) | DECIMALS | DECIMAL_RUNS | hnp.arrays(
    np.float64, lengths, elements=st.floats(allow_nan=True, allow_infinity=True, width=64))
TEXT = st.text(alphabet=st.characters(codec=None, exclude_categories=()), max_size=30)
STRINGS = st.lists(TEXT, max_size=200) | st.builds(
    lambda pool, idx: [pool[i % len(pool)] for i in idx],
    st.lists(TEXT, min_size=1, max_size=8), st.lists(st.integers(0, 100), max_size=300))
BOOLS = hnp.arrays(np.bool_, lengths)
compressions = st.sampled_from(COMPRESSION_LEVELS)
tiers = st.sampled_from(["hot", "cold"])


def objects(lst) -> np.ndarray:
    a = np.empty(len(lst), dtype=object)
    a[:] = lst
    return a


@SETTINGS
@given(INT64S, compressions, tiers)
def test_int64_roundtrip(values, compression, tier):
    roundtrip(values, compression=compression, tier=tier)


@SETTINGS
@given(INT64S)
def test_timestamps_roundtrip(values):
    roundtrip(values, timestamps=True)


@SETTINGS
@given(UINT64S, compressions, tiers)
def test_uint64_roundtrip(values, compression, tier):
    roundtrip(values, compression=compression, tier=tier)


@SETTINGS
@given(FLOATS, compressions, tiers)
def test_float64_roundtrip_bit_exact(values, compression, tier):
    roundtrip(values, compression=compression, tier=tier)


@SETTINGS
@given(STRINGS, compressions)
def test_strings_roundtrip(values, compression):
    roundtrip(objects(values), compression=compression)


@SETTINGS
@given(BOOLS, compressions)
def test_bools_roundtrip(values, compression):
    roundtrip(values, compression=compression)


INT_CODECS = [Tag.RAW, Tag.FOR, Tag.DELTA_FOR, Tag.DOD_FOR, Tag.ZIGZAG_VARINT, Tag.ZIGZAG_RICE,
              Tag.DELTA_ZERORUN, Tag.FOR_RADIX,
              Tag.DELTA_ZIGZAG_VARINT]


@SETTINGS
@given(INT64S | UINT64S, st.sampled_from(INT_CODECS))
def test_every_integer_codec_roundtrips_when_applicable(values, codec):
    try:
        block = encode(values, codec=codec)
    except CodecError:
        return  # not applicable (too few values for a delta codec, or width over 56 bits)
    assert block[0] == codec
    assert same(values, decode(block))


@SETTINGS
@given(FLOATS, st.sampled_from([Tag.RAW, Tag.GORILLA, Tag.ALP]))
def test_every_float_codec_roundtrips(values, codec):
    block = encode(values, codec=codec)
    assert block[0] == codec
    assert same(values, decode(block))


@SETTINGS
@given(STRINGS, st.sampled_from([Tag.STR_RAW, Tag.STR_DICT]))
def test_every_string_codec_roundtrips(values, codec):
    block = encode(objects(values), codec=codec)
    assert same(objects(values), decode(block))


def test_forced_codecs_reject_values_they_cannot_hold():
    with pytest.raises(CodecError):
        encode(np.array([1, 2], dtype=np.int64), codec=Tag.CONST)
    with pytest.raises(CodecError):
        encode(np.array([5], dtype=np.int64), codec=Tag.DOD_FOR)
    with pytest.raises(CodecError):
        encode(np.array([1.0]), codec=Tag.DELTA_FOR)


@pytest.mark.parametrize("values", [
    np.zeros(0, np.int64), np.zeros(0, np.uint64), np.zeros(0, np.float64), np.zeros(0, bool),
    objects([]), np.array([7], np.int64), np.array([-0.0]), np.array([np.nan]),
    np.array([True]), objects([""]), objects(["", ""]), objects(["\0", ""]),
    objects(["a" * 1_000_000, "b"]), objects(["\ud800", "\udfff x", "\ud83d\ude00"]),
    np.array([I64[0], I64[1], I64[0], I64[1]], np.int64),
    np.array([0, U64_MAX, 0, U64_MAX], np.uint64),
])
def test_edge_cases(values):
    for compression in COMPRESSION_LEVELS:
        for tier in ("hot", "cold"):
            roundtrip(values, compression=compression, tier=tier)


def test_rejects_unsupported_input():
    with pytest.raises(CodecError, match="dtype"):
        encode(np.zeros(3, np.complex128))
    with pytest.raises(CodecError, match="str"):
        encode(objects(["a", 3, "b"]))
    with pytest.raises(CodecError, match="str"):
        encode(objects([b"x", b"x"]))
    with pytest.raises(CodecError, match="compression"):
        encode(np.zeros(3), compression="max")
    with pytest.raises(CodecError, match="tier"):
        encode(np.zeros(3), tier="warm")
    with pytest.raises(CodecError, match="1-d"):
        encode(np.zeros((2, 2)))


def test_narrow_dtypes_widen_to_the_stored_types():
    assert decode(encode(np.arange(5, dtype=np.int32))).dtype == np.int64
    assert decode(encode(np.arange(5, dtype=np.float32))).dtype == np.float64
    assert decode(encode(np.array(["ab", "c"]))).tolist() == ["ab", "c"]


@pytest.mark.parametrize("values", [
    np.arange(300, dtype=np.int64) * 3, np.arange(300, dtype=np.uint64),
    np.round(np.linspace(0, 10, 300), 2), np.array([1.5, 2.5]), np.zeros(100, bool) | True,
    objects(["a", "b"] * 50), np.full(10, 7, np.int64),
])
def test_decoded_arrays_are_writable_copies_of_the_block(values):
    buf = bytearray(encode(values, compression="none"))
    out = decode(memoryview(buf))
    buf[6:-4] = bytes(len(buf) - 10)  # the caller's buffer (an mmap) may change or close
    assert out.flags.writeable and same(values, out)


def test_concurrent_encode_decode_from_threads():
    """The storage layer runs codecs in worker threads: results must not mix."""
    import concurrent.futures

    rng = np.random.default_rng(5)
    inputs = [objects([f"k{j}-{i % 13}" for i in range(2000)]) for j in range(8)]
    inputs += [np.round(rng.normal(0, 50, 4096).cumsum(), 2) for _ in range(8)]

    def work(values):
        for _ in range(5):
            for tier in ("hot", "cold"):
                assert same(values, decode(encode(values, tier=tier, compression="best")))
        return True

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        assert all(pool.map(work, inputs))


@pytest.mark.parametrize("n", [17, 64, 360, 5000])
@pytest.mark.parametrize("first,step", [(1_451_606_400 * 10**9, 10**10), (-5, 3), (2**62, 2**61), (7, -1)])
def test_regular_sequences_round_trip(n, first, step):
    """Constant deltas (regular timestamps) decode as an arithmetic sequence, wrapping like int64."""
    v = (np.arange(n, dtype=np.int64) * np.int64(step) + np.int64(first)) if abs(step) < 2**61 else \
        np.array([(first + i * step + 2**63) % 2**64 - 2**63 for i in range(n)], dtype=np.int64)
    for ts in (True, False):
        assert same(decode(encode(v, timestamps=ts)), v)
