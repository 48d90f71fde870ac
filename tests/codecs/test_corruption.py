"""Corrupt, truncated and adversarial blocks: always CodecError, never wrong values or a crash."""

import struct
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rusts.codecs import Tag, decode, decoded_count, encode
from rusts.errors import CodecError, CorruptionError

rng = np.random.default_rng(7)
walk = np.round(20 + np.cumsum(rng.normal(0, 1, 64)), 2)


def objects(lst):
    a = np.empty(len(lst), dtype=object)
    a[:] = lst
    return a


SMALL_BLOCKS = {
    "ts_regular": encode(np.arange(40, dtype=np.int64) * 10_000_000_000, timestamps=True),
    "ts_jitter": encode(np.arange(40, dtype=np.int64) * 1000 + rng.integers(0, 50, 40),
                        timestamps=True),
    "ts_dod": encode(np.cumsum(np.arange(40, dtype=np.int64)), codec=Tag.DOD_FOR),
    "int_for": encode(rng.integers(-100, 100, 40)),
    "int_varint": encode(np.array([0, 1, -5, 2 ** 40, 3] * 8, dtype=np.int64),
                         codec=Tag.ZIGZAG_VARINT),
    "int_dvarint": encode(np.arange(40, dtype=np.int64) ** 3, codec=Tag.DELTA_ZIGZAG_VARINT),
    "uint_raw": encode(rng.integers(0, 2 ** 64 - 1, 20, dtype=np.uint64)),
    "zerorun": encode(np.repeat(np.arange(8, dtype=np.int64) * 7, 9), codec=Tag.DELTA_ZERORUN),
    "rice": encode(rng.integers(-40, 40, 70), codec=Tag.ZIGZAG_RICE),
    "radix": encode(rng.integers(0, 10, 70).astype(np.uint64), codec=Tag.FOR_RADIX),
    "lanes": encode(rng.integers(0, 1000, 130)),
    "const": encode(np.full(40, 3.5)),
    "alp": encode(np.concatenate([walk[:40], [np.nan, -0.0]])),
    "gorilla": encode(np.cumsum(rng.normal(0, 1, 40)), codec=Tag.GORILLA),
    "bool": encode(rng.random(40) < 0.5),
    "str_dict": encode(objects(["a", "bb", "é"] * 13)),
    "str_raw": encode(objects([f"s{i}" for i in range(30)] + ["\0x"])),
    "str_const": encode(objects(["same"] * 9)),
    "lz4": encode(np.tile(rng.integers(-(2 ** 60), 2 ** 60, 8), 8), compression="best"),
    "zstd": encode(objects([f"host-{i % 7}-{i}" for i in range(40)]), tier="cold"),
}


def test_small_blocks_cover_the_wrappers():
    assert SMALL_BLOCKS["lz4"][1] >> 4 == 1
    assert SMALL_BLOCKS["zstd"][1] >> 4 == 2


@pytest.mark.parametrize("name", sorted(SMALL_BLOCKS))
def test_truncation_at_every_offset_raises(name):
    block = SMALL_BLOCKS[name]
    expected = decode(block)
    assert len(expected) == decoded_count(block)
    for cut in range(len(block)):
        with pytest.raises(CodecError):
            decode(block[:cut])


@pytest.mark.parametrize("name", sorted(SMALL_BLOCKS))
def test_every_single_bit_flip_raises(name):
    block = bytearray(SMALL_BLOCKS[name])
    for i in range(len(block) * 8):
        block[i // 8] ^= 1 << (i % 8)
        with pytest.raises(CodecError):
            decode(bytes(block))
        block[i // 8] ^= 1 << (i % 8)


def test_trailing_garbage_raises():
    for block in SMALL_BLOCKS.values():
        with pytest.raises(CodecError):
            decode(block + b"\0")


def test_codec_error_is_a_corruption_error_and_names_the_problem():
    block = bytearray(SMALL_BLOCKS["alp"])
    block[-1] ^= 0xFF
    with pytest.raises(CorruptionError, match="CRC"):
        decode(bytes(block))
    with pytest.raises(CodecError, match="truncated"):
        decode(b"\x01\x00")
    bad_tag = bytearray(SMALL_BLOCKS["alp"])
    bad_tag[0] = 0x7F
    with pytest.raises(CodecError, match="unknown codec tag"):
        decode(_recrc(bytes(bad_tag)))


def _recrc(block: bytes) -> bytes:
    body = block[:-4]
    return body + struct.pack("<I", zlib.crc32(body))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(sorted(SMALL_BLOCKS)), st.data())
def test_adversarial_payloads_with_valid_crc_never_crash(name, data):
    """A block whose CRC was recomputed after tampering (a bug or an attacker, not bit rot):
    decode either rejects it with CodecError or returns an array of the declared length."""
    block = bytearray(SMALL_BLOCKS[name][:-4])
    edits = data.draw(st.lists(st.tuples(st.integers(0, len(block) - 1), st.integers(0, 255)),
                               min_size=1, max_size=4))
    for pos, val in edits:
        block[pos] = val
    if data.draw(st.booleans()):
        block = block[:data.draw(st.integers(0, len(block)))]
    _decode_or_codec_error(_recrc(bytes(block)))


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 0x0F), st.integers(0, 0x2F), st.integers(0, 300), st.binary(max_size=200))
def test_random_headers_and_payloads_never_crash(tag, type_wrap, count, payload):
    body = struct.pack("<BBI", tag, type_wrap, count) + payload
    _decode_or_codec_error(body + struct.pack("<I", zlib.crc32(body)))


def test_huge_declared_sizes_are_rejected_before_allocating():
    body = struct.pack("<BBI", Tag.CONST, 0, 2 ** 32 - 1) + b"\0" * 8
    with pytest.raises(CodecError, match="limit"):
        decode(_recrc(body + b"\0\0\0\0"))
    body = struct.pack("<BBII", Tag.RAW, 0x10, 4, 2 ** 31) + b"\0" * 8
    with pytest.raises(CodecError, match="limit"):
        decode(_recrc(body + b"\0\0\0\0"))


def _decode_or_codec_error(block: bytes) -> None:
    try:
        out = decode(block)
    except CodecError:
        return
    assert isinstance(out, np.ndarray)
    assert len(out) == decoded_count(block)
    assert out.dtype in (np.int64, np.uint64, np.float64, np.bool_, np.dtype(object))
