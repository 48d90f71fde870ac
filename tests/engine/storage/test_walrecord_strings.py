"""The WAL's string-values section built from few-distinct-value arrays (comparison passes and
numpy scatters) is byte for byte the section of the plain per-value encoding."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rusts.storage.walrecord import _strings_section, _value_strings_section

words = st.lists(st.text(max_size=70), min_size=1, max_size=12)


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(words, st.integers(0, 3000), st.integers(0, 2**32 - 1)), max_size=4))
def test_value_section_equals_the_plain_encoding(specs):
    arrays = []
    for vocab, n, seed in specs:
        a = np.empty(n, dtype=object)
        a[:] = [vocab[i] for i in np.random.default_rng(seed).integers(0, len(vocab), n)]
        arrays.append(a)
    want = _strings_section(np.concatenate(arrays).tolist() if arrays else [])
    assert _value_strings_section(arrays) == want


def test_lone_surrogate_fails_as_before():
    a = np.array(["\ud800", "x"] * 1000, dtype=object)
    with pytest.raises(UnicodeEncodeError):
        _strings_section(a.tolist())
    with pytest.raises(UnicodeEncodeError):
        _value_strings_section([a])
