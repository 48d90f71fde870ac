"""The encoder chooses codecs by sizes it computes before building anything: those sizes must
be the sizes of what it then builds, or it picks a bigger block than it thinks."""

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from rusts.codecs import _floats, _ints, _strings
from rusts.errors import CodecError

SETTINGS = settings(max_examples=120, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
sizes = st.integers(17, 600)
values = (hnp.arrays(np.int64, sizes, elements=st.integers(-(2 ** 63), 2 ** 63 - 1))
          | hnp.arrays(np.int64, sizes, elements=st.integers(-300, 300))
          | st.builds(lambda base, steps: base + np.cumsum(np.array(steps, np.int64)),
                      st.integers(-(2 ** 40), 2 ** 40),
                      st.lists(st.integers(-50, 50) | st.just(0), min_size=17, max_size=600))
          | st.builds(lambda v, reps: np.repeat(np.array(v, np.int64), reps),
                      st.lists(st.integers(-1000, 1000), min_size=17, max_size=40),
                      st.integers(1, 30)))


@SETTINGS
@given(values, st.booleans(), st.sampled_from([_ints.TOP, _ints.TIMESTAMPS, _ints.NESTED]))
def test_integer_plan_sizes_are_the_built_sizes(v, signed, mode):
    u = v.view(np.uint64)
    p = _ints.plan(u, signed, mode)
    built = p.build()
    assert len(built) == p.size
    assert _ints.decode(p.tag, built, len(u), nested=mode == _ints.NESTED).tolist() == u.tolist()


@SETTINGS
@given(st.lists(st.integers(0, 299), min_size=17, max_size=2000), st.integers(2, 300))
def test_dictionary_index_plan_sizes_are_the_built_sizes(idx, k):
    codes = np.array(idx, np.int64) % k
    codes = np.unique(codes, return_inverse=True)[1]  # every index below k used
    k = int(codes.max()) + 1
    if k < 2:
        return
    arr = codes.astype(np.uint8) if k <= 256 else codes.astype(np.int64)
    p = _ints.plan_codes(arr, np.bincount(arr, minlength=k))
    built = p.build()
    assert len(built) == p.size
    assert _ints.decode(p.tag, built, len(codes)).tolist() == codes.tolist()


@SETTINGS
@given(hnp.arrays(np.uint64, st.integers(1, 600), elements=st.integers(0, 2 ** 64 - 1)
                  | st.sampled_from([0, 1, 2 ** 63, 2 ** 64 - 1])))
def test_gorilla_size_is_the_built_size(bits):
    g = _floats._Gorilla(_floats._xors(bits))
    payload = g.build()
    assert len(payload) == g.size
    assert _floats.gorilla_decode(payload, len(bits)).tolist() == bits.tolist()


def test_string_raw_size_estimate_matches_the_section():
    lst = ["ok", "é\u4e2d", "", "\ud800x", "warn"] * 40
    uniq = list(dict.fromkeys(lst))
    codes = _strings._codes(_strings._lookup(lst, dict.fromkeys(lst)), len(uniq))
    counts = np.bincount(codes, minlength=len(uniq))
    assert len(lst) + int(counts @ _strings._utf8_lengths(uniq)) == len(_strings.section(lst))


# --------------------------------------------------------------- cold tier: exact smallest
import pytest  # noqa: E402

from rusts.codecs import decode, encode  # noqa: E402
from rusts.codecs._format import Tag  # noqa: E402


@SETTINGS
@given(values, st.booleans())
def test_cold_planning_is_never_larger_and_still_round_trips(v, as_float):
    """Without the decode-speed margins the cold tier picks the exact smallest candidate, so its
    payload is never larger than the hot choice (the hot choice is one of the candidates)."""
    x = (v % 100_000) / 100.0 if as_float else v
    hot = encode(x, compression="none", tier="hot")
    cold = encode(x, compression="none", tier="cold")
    assert len(cold) <= len(hot)
    for b in (hot, cold):
        got = decode(b)
        assert got.dtype == x.dtype and got.view(np.uint64).tolist() == x.view(np.uint64).tolist()


def test_cold_tier_takes_rice_where_the_margin_keeps_bit_packing():
    rng = np.random.default_rng(3)
    walk = np.cumsum(np.rint(rng.normal(0, 100, 8640))).astype(np.int64)
    hot = encode(walk, compression="none", tier="hot")
    cold = encode(walk, compression="none", tier="cold")
    assert hot[0] == Tag.DELTA_FOR and cold[0] == Tag.DELTA_ZERORUN  # Rice inside: 11% smaller
    assert len(cold) < 0.9 * len(hot)
    assert np.array_equal(decode(cold), walk)
    # the choice is per call: hot encoding after (and during an error in) cold is unaffected
    with pytest.raises(CodecError):
        encode(np.array([1, 2]), tier="cold", codec=Tag.GORILLA)
    assert encode(walk, compression="none", tier="hot") == hot
    assert not _ints.EXACT.get()


@SETTINGS
@given(values, st.booleans(), st.sampled_from([_ints.TOP, _ints.TIMESTAMPS, _ints.NESTED]))
def test_cold_integer_plan_sizes_are_the_built_sizes(v, signed, mode):
    """The same with the cold tier's planning (no margins, every codec for small nested blocks)."""
    token = _ints.EXACT.set(True)
    try:
        u = v.view(np.uint64)
        p = _ints.plan(u, signed, mode)
        built = p.build()
    finally:
        _ints.EXACT.reset(token)
    assert len(built) == p.size
    assert _ints.decode(p.tag, built, len(u), nested=mode == _ints.NESTED).tolist() == u.tolist()
