"""encode_blocks: many blocks of one column encoded at once; every block it returns decodes with
the ordinary decoder to exactly its values (bit patterns for floats, dtype included)."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rusts.codecs import COMPRESSION_LEVELS, Tag, decode, encode, encode_blocks
from rusts.codecs._format import TYPE_FLOAT, TYPE_INT, TYPE_STRING, TYPE_UINT

SETTINGS = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
I64 = (-(2 ** 63), 2 ** 63 - 1)


def check(values, bounds, vtype, **kw) -> list:
    """Encode, decode every block, compare; returns the blocks (None: left to encode())."""
    out = encode_blocks(values, np.asarray(bounds, np.int64), vtype=vtype, **kw)
    assert len(out) == len(bounds) - 1
    for i, block in enumerate(out):
        want = values[bounds[i]:bounds[i + 1]]
        if block is None:
            continue
        got = decode(block)
        assert got.dtype == want.dtype and len(got) == len(want)
        if want.dtype.kind == "f":
            assert (got.view(np.uint64) == want.view(np.uint64)).all(), i
        elif want.dtype.kind == "O":
            assert got.tolist() == want.tolist(), i
        else:
            assert (got == want).all(), i
    return out


@st.composite
def bounded(draw, make):
    """(values, bounds): blocks of 0..1500 values (the writer's hourly blocks), cut at random."""
    sizes = draw(st.lists(st.integers(0, 1500), min_size=1, max_size=6))
    values = make(draw, sum(sizes))
    return values, np.concatenate(([0], np.cumsum(sizes))).astype(np.int64)


def _ints(draw, n):
    kind = draw(st.sampled_from(["wide", "small", "walk", "runs", "sparse", "const"]))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    if kind == "wide":
        return rng.integers(*I64, n, dtype=np.int64, endpoint=True)
    if kind == "small":
        return rng.integers(-300, 300, n)
    if kind == "walk":
        base = draw(st.integers(*I64))
        return (np.int64(base).astype(np.uint64) + np.cumsum(rng.integers(-5000, 5000, n)).astype(np.uint64)).view(np.int64)
    if kind == "runs":
        return np.repeat(rng.integers(-50, 50, n // 7 + 1), 7)[:n]
    if kind == "sparse":
        return np.where(rng.random(n) < 0.9, 0, rng.integers(-(2**40), 2**40, n))
    return np.full(n, draw(st.integers(*I64)), np.int64)


@SETTINGS
@given(bounded(_ints), st.sampled_from(sorted(COMPRESSION_LEVELS)))
def test_integer_blocks_round_trip(vb, compression):
    values, bounds = vb
    check(values, bounds, TYPE_INT, compression=compression)


@SETTINGS
@given(bounded(_ints))
def test_unsigned_blocks_round_trip(vb):
    values, bounds = vb
    check(values.view(np.uint64), bounds, TYPE_UINT)


@SETTINGS
@given(bounded(_ints))
def test_timestamp_blocks_round_trip(vb):
    values, bounds = vb
    check(np.sort(values), bounds, TYPE_INT, timestamps=True)
    check(values, bounds, TYPE_INT, timestamps=True)  # unsorted still decodes (deltas wrap)


def _floats(draw, n):
    kind = draw(st.sampled_from(["decimal", "integral", "sparse", "random", "special", "const"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if kind == "decimal":
        return np.round(rng.lognormal(1.3, 0.8, n), draw(st.integers(0, 4)))
    if kind == "integral":
        return np.round(rng.normal(0, 1e6, n))
    if kind == "sparse":
        return np.where(rng.random(n) < 0.9, 0.0, np.round(rng.uniform(3, 15, n), 2))
    if kind == "random":
        return rng.normal(0, 1, n)
    if kind == "special":
        v = np.round(rng.normal(0, 100, n), 1)
        bad = np.array([np.nan, np.inf, -np.inf, -0.0, 1e300, 5e-324])
        if n:
            v[rng.integers(0, n, max(1, n // 100))] = rng.choice(bad, max(1, n // 100))
        return v
    return np.full(n, draw(st.floats(allow_nan=True)))


@SETTINGS
@given(bounded(_floats), st.sampled_from(["hot", "cold"]))
def test_float_blocks_round_trip(vb, tier):
    values, bounds = vb
    check(values, bounds, TYPE_FLOAT, tier=tier)


def _strings(draw, n):
    alphabet = draw(st.lists(st.text(max_size=6), min_size=1, max_size=draw(st.sampled_from([3, 80]))))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    out = np.empty(n, dtype=object)
    out[:] = [alphabet[i] for i in rng.integers(0, len(alphabet), n)]
    return out


@SETTINGS
@given(bounded(_strings))
def test_string_blocks_round_trip(vb):
    values, bounds = vb
    check(values, bounds, TYPE_STRING)


def test_typical_columns_are_all_batched_and_no_larger():
    """Hourly blocks of decimal gauges, sparse amounts, small integers, timestamps and flags:
    every block is batched, and the total is within 2% of the per-block encoder's."""
    rng = np.random.default_rng(5)
    sizes = rng.integers(900, 1400, 40)
    bounds = np.concatenate(([0], np.cumsum(sizes)))
    n = int(bounds[-1])
    cols = [
        (np.round(rng.lognormal(1.3, 0.8, n), 2), TYPE_FLOAT, False),
        (np.where(rng.random(n) < 0.92, 0.0, np.round(rng.uniform(3, 15, n), 2)), TYPE_FLOAT, False),
        (np.where(rng.random(n) < 0.6, 2.75, 0.0), TYPE_FLOAT, False),
        (rng.integers(1, 266, n), TYPE_INT, False),
        (1_700_000_000 * 10**9 + np.cumsum(rng.integers(1, 5 * 10**9, n)), TYPE_INT, True),
        (np.where(rng.random(n) < 0.05, "Y", "N").astype(object), TYPE_STRING, False),
    ]
    for values, vtype, ts in cols:
        out = check(values, bounds, vtype, timestamps=ts)
        assert all(b is not None for b in out)
        per_block = sum(len(encode(values[a:b], timestamps=ts)) for a, b in zip(bounds[:-1], bounds[1:]))
        assert sum(map(len, out)) <= per_block * 1.02


@pytest.mark.parametrize("values,vtype", [
    (np.full(2000, np.nan), TYPE_FLOAT),
    (np.random.default_rng(1).normal(0, 1, 2000), TYPE_FLOAT),  # full precision: Gorilla/RAW
    (np.array([f"k{i}" for i in range(2000)], dtype=object), TYPE_STRING),  # high cardinality
    (np.array(["a\0b", "c"] * 1000, dtype=object), TYPE_STRING),
    (np.array(["\ud800", "x"] * 1000, dtype=object), TYPE_STRING),  # lone surrogate
])
def test_data_outside_the_batch_codecs_is_left_or_exact(values, vtype):
    out = check(values, [0, 1000, 2000], vtype)
    for block in out:
        if block is not None:
            assert block[0] in (Tag.CONST, Tag.ALP, Tag.STR_DICT)


def test_small_blocks_are_left_to_the_per_block_encoder():
    v = np.arange(300, dtype=np.int64)
    out = check(v, [0, 10, 73, 137, 300], TYPE_INT)  # 10, 63, 64 and 163 values
    assert out[0] is None and out[1] is None and out[2] is not None and out[3] is not None


def test_non_string_object_column_is_left_to_the_per_block_encoder():
    v = np.array([1, "a"] * 100, dtype=object)
    assert encode_blocks(v, np.array([0, 200]), vtype=TYPE_STRING) == [None]
