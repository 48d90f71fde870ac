"""The vectorised bit helpers against plain-Python references."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rusts.codecs import _bits
from rusts.errors import CodecError

U64S = st.lists(st.integers(0, 2 ** 64 - 1), max_size=200).map(lambda v: np.array(v, np.uint64))


@settings(max_examples=150, deadline=None)
@given(U64S)
def test_bit_length_and_trailing_zeros(u):
    assert _bits.bit_length(u).tolist() == [int(v).bit_length() for v in u.tolist()]
    expected_tz = [64 if v == 0 else (v & -v).bit_length() - 1 for v in u.tolist()]
    assert _bits.trailing_zeros(u).tolist() == expected_tz


def reference_pack(values: list[int], width: int) -> bytes:
    """The documented layout, bit by bit: 64-value lanes, then a plain stream for the tail."""
    if len(values) >= _bits.PAD_LANES_FROM:  # zero-padded to whole lanes
        values = values + [0] * (-len(values) % 64)
    lanes = len(values) // 64
    out = b""
    if lanes:
        lane_ints = [sum(values[k * lanes + lane] << (k * width) for k in range(64))
                     for lane in range(lanes)]
        out = b"".join(((lane_ints[lane] >> (64 * j)) & (2 ** 64 - 1)).to_bytes(8, "little")
                       for j in range(width) for lane in range(lanes))
    tail = values[lanes * 64:]
    stream = sum(v << (i * width) for i, v in enumerate(tail))
    return out + stream.to_bytes((len(tail) * width + 7) // 8, "little")


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 64), st.lists(st.integers(0, 2 ** 64 - 1), max_size=300))
def test_pack_matches_the_documented_layout(width, raw):
    u = np.array([v & ((1 << width) - 1) for v in raw], dtype=np.uint64)
    packed = _bits.pack(u, width)
    assert packed == reference_pack(u.tolist(), width)
    assert len(packed) == _bits.packed_size(len(u), width)
    assert _bits.unpack(packed, len(u), width).tolist() == u.tolist()


@pytest.mark.parametrize("n", [1024, 1030, 1087, 4095])
def test_pack_pads_the_last_lane_of_large_arrays(n):
    u = (np.arange(n, dtype=np.uint64) * np.uint64(2654435761)) % np.uint64(1 << 13)
    packed = _bits.pack(u, 13)
    assert packed == reference_pack(u.tolist(), 13)
    assert len(packed) == -(-n // 64) * 13 * 8
    assert _bits.unpack(packed, n, 13).tolist() == u.tolist()


def test_pack_of_a_full_block_has_no_padding():
    u = np.arange(4096, dtype=np.uint64) % np.uint64(1 << 13)
    assert len(_bits.pack(u, 13)) == 4096 * 13 // 8


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 64), st.integers(0, 2 ** 64 - 1)), max_size=200))
def test_variable_width_pack_roundtrip(items):
    widths = np.array([w for w, _ in items], dtype=np.int64)
    u = np.array([v & ((1 << w) - 1) for w, v in items], dtype=np.uint64)
    packed = _bits.pack_var(u, widths)
    assert len(packed) == (int(widths.sum()) + 7) // 8
    assert _bits.unpack_var(packed, widths).tolist() == u.tolist()


@settings(max_examples=150, deadline=None)
@given(U64S)
def test_varint_matches_leb128(u):
    ref = bytearray()
    for v in u.tolist():
        while True:
            b = v & 0x7F
            v >>= 7
            ref.append(b | (0x80 if v else 0))
            if not v:
                break
    enc = _bits.varint_encode(u)
    assert enc == bytes(ref)
    assert _bits.varint_size(u) == len(enc)
    assert _bits.varint_decode(enc, len(u)).tolist() == u.tolist()


@settings(max_examples=150, deadline=None)
@given(st.lists(st.integers(-(2 ** 63), 2 ** 63 - 1), max_size=100))
def test_zigzag(values):
    x = np.array(values, dtype=np.int64)
    z = _bits.zigzag(x)
    assert z.tolist() == [((v << 1) ^ (v >> 63)) % 2 ** 64 for v in values]
    assert _bits.unzigzag(z).view(np.int64).tolist() == values


def test_malformed_streams_raise():
    with pytest.raises(CodecError):
        _bits.unpack(b"\0" * 3, 10, 3)
    with pytest.raises(CodecError):
        _bits.varint_decode(b"\x80", 1)
    with pytest.raises(CodecError):
        _bits.varint_decode(b"\x01\x02", 1)
    with pytest.raises(CodecError, match="overflows"):
        _bits.varint_decode(b"\xff" * 9 + b"\x02", 1)
    with pytest.raises(CodecError):
        _bits.unpack_var(b"\0", np.array([9]))


@pytest.mark.parametrize("n", [65, 127, 360, 1000, 1023])
@pytest.mark.parametrize("width", [1, 7, 10, 16, 32, 33, 63, 64])
def test_unpack_of_lanes_and_a_tail(n, width):
    """Blocks with whole lanes and a tail unpack through one cached gather plan per recurring
    (n, width), and lane by lane before."""
    rng = np.random.default_rng(n * 100 + width)
    u = rng.integers(0, 2 ** 63, n, dtype=np.uint64) * np.uint64(2) + rng.integers(0, 2, n, dtype=np.uint64)
    if width < 64:
        u &= np.uint64((1 << width) - 1)
    packed = _bits.pack(u, width)
    assert packed == reference_pack(u.tolist(), width)
    for _ in range(_bits._MIXED_AFTER + 1):  # lane by lane, then from the size's cached plan
        assert _bits.unpack(packed, n, width).tolist() == u.tolist()
    assert (n, width) in _bits._MIXED_PLANS
