"""Codec hints (rusts.codecs.Hint): a column's blocks encoded with one hint round-trip exactly,
whatever the sequence of blocks, and stay near the size of a full search on regular columns."""

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from rusts.codecs import Hint, decode, encode
from tests.codecs.test_roundtrip import FLOATS, INT64S, SETTINGS, UINT64S, same

columns = st.lists(FLOATS, min_size=1, max_size=6) | st.lists(INT64S, min_size=1, max_size=6) | st.lists(
    UINT64S, min_size=1, max_size=6)


@SETTINGS
@given(columns, st.booleans())
def test_every_block_of_a_hinted_column_round_trips(blocks, timestamps):
    hint = Hint()
    for values in blocks:
        ts = timestamps and values.dtype == np.int64
        out = decode(encode(values, timestamps=ts, hint=hint))
        assert same(values, out), (values[:8], out[:8])


def _decimal_blocks(rng, k=40, n=1200, decimals=2):
    return [np.round(rng.lognormal(1.3, 0.8, n), decimals) for _ in range(k)]


def test_hinted_blocks_take_the_previous_codec_and_stay_within_a_few_percent_of_a_full_search():
    rng = np.random.default_rng(5)
    cases = [_decimal_blocks(rng), [rng.integers(1, 266, 1200) for _ in range(40)],
             [np.cumsum(rng.integers(1, 10**9, 1200)) for _ in range(40)],  # timestamps-like
             [rng.random(1200) for _ in range(40)],  # full-precision floats: no ALP
             # a 2-decimal random walk clipped at 0 and 100: some blocks sit at a bound
             np.split(np.round(np.clip(50 + np.cumsum(rng.normal(0, 3, 48_000)), 0, 100), 2), 40)]
    for blocks in cases:
        hint = Hint()
        full = sum(len(encode(b)) for b in blocks)
        hinted = sum(len(encode(b, hint=hint)) for b in blocks)
        assert hinted <= full * 1.03, (full, hinted)
    # a column that changes its nature mid-way gets the full search again at once
    hint, blocks = Hint(), _decimal_blocks(rng, k=5) + [rng.random(1200) for _ in range(5)]
    for b in blocks:
        assert len(encode(b, hint=hint)) <= len(encode(b)) * 1.05 + 16
