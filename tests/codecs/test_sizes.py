"""What the codecs buy: the sizes a user sees on typical time-series blocks (4,096 values)."""

import numpy as np
import pytest

from rusts.codecs import Tag, decode, decoded_count, encode
from rusts.errors import CodecError

N = 4096
rng = np.random.default_rng(2024)
T0 = 1_700_000_000_000_000_000


def per_value(values, **kw) -> float:
    block = encode(values, **kw)
    out = decode(block)
    assert len(out) == len(values)
    return len(block) / len(values)


def test_regular_timestamps_cost_a_few_bytes_a_block():
    ts = T0 + np.arange(N, dtype=np.int64) * 10_000_000_000
    assert len(encode(ts, timestamps=True)) <= 32
    assert per_value(ts[:1000], timestamps=True) <= 0.05


def test_two_decimal_random_walk_under_two_bytes_a_value():
    walk = np.round(np.clip(50 + np.cumsum(rng.normal(0, 1.5, N)), 0, 100), 2)
    assert per_value(walk) <= 2.0
    assert encode(walk)[0] == Tag.ALP


def test_counters_under_one_and_a_half_bytes_a_value():
    counter = np.cumsum(rng.poisson(1500, N)).astype(np.int64)
    assert per_value(counter) <= 1.5


def test_low_cardinality_strings_under_half_a_byte_a_value():
    names = np.array(["ok", "warn", "crit", "unknown", "maintenance", "degraded", "starting",
                      "stopping", "paused", "error"], dtype=object)
    assert per_value(names[rng.integers(0, len(names), N)]) <= 0.5


def test_gauge_sitting_still_costs_its_changes_only():
    level = np.repeat(np.round(rng.uniform(0, 100, 16), 1), N // 16)
    assert per_value(level) <= 0.05


def test_constant_and_boolean_blocks():
    assert len(encode(np.full(N, 0.25))) <= 20
    assert per_value(rng.random(N) < 0.5) <= 0.13


def test_cold_tier_uses_zstd_when_it_helps_and_none_never_wraps():
    text = np.array([f"GET /api/v1/items/{i % 50}?page={i % 7}" for i in range(N)], dtype=object)
    hot, cold, raw = (encode(text, tier="hot"), encode(text, tier="cold"),
                      encode(text, compression="none"))
    assert raw[1] >> 4 == 0
    assert cold[1] >> 4 == 2
    assert len(cold) <= len(hot) <= len(raw)
    for block in (hot, cold, raw):
        assert decode(block).tolist() == text.tolist()


def test_decoded_count_reads_the_header_only():
    block = encode(np.arange(1234, dtype=np.int64))
    assert decoded_count(block) == 1234
    assert decoded_count(memoryview(block)) == 1234
    with pytest.raises(CodecError):
        decoded_count(block[:5])
