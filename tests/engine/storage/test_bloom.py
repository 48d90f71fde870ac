"""Bloom filter: no false negatives, ~1 % false positives, byte round trip."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rusts.storage.bloom import BloomFilter
from rusts.errors import CorruptionError


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 2**64 - 1), max_size=300))
def test_no_false_negatives_and_round_trip(ids):
    arr = np.array(ids, dtype=np.uint64)
    bf = BloomFilter.build(arr)
    assert bf.may_contain_many(arr).all()
    bf2 = BloomFilter.from_bytes(bf.to_bytes())
    assert bf2.may_contain_many(arr).all()
    assert bf2.to_bytes() == bf.to_bytes()
    for sid in ids[:5]:
        assert bf2.may_contain(sid)


def test_false_positive_rate_about_one_percent():
    rng = np.random.default_rng(1)
    ids = rng.integers(0, 2**63, size=100_000, dtype=np.uint64)
    bf = BloomFilter.build(ids)
    others = rng.integers(2**63, 2**64 - 1, size=200_000, dtype=np.uint64)
    fp = bf.may_contain_many(others).mean()
    assert 0.003 < fp < 0.02
    # sequential ids (how the series index allocates them) behave the same
    seq = np.arange(1, 50_001, dtype=np.uint64)
    bf = BloomFilter.build(seq)
    assert bf.may_contain_many(seq).all()
    assert bf.may_contain_many(np.arange(50_001, 150_001, dtype=np.uint64)).mean() < 0.02


def test_empty_filter_contains_nothing():
    bf = BloomFilter.build(np.zeros(0, dtype=np.uint64))
    assert not bf.may_contain(0)
    assert not bf.may_contain_many(np.arange(100, dtype=np.uint64)).any()


@pytest.mark.parametrize("data", [b"", b"\x07\x00\x00\x00\x00\x00\x00\x00\x40\x00\x00\x00\x00\x00\x00\x00",
                                  b"\x00" * 16 + b"\x00" * 8])
def test_malformed_bytes_raise(data):
    with pytest.raises(CorruptionError):
        BloomFilter.from_bytes(data)
