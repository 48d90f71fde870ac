"""Series keys are canonical and unambiguous for any text (backslashes, separators, NUL)."""

from hypothesis import given, settings
from hypothesis import strategies as st

from rusts.storage.index import split_key
from rusts.model import parse_series_key, series_key

text = st.text(alphabet=st.sampled_from(list("ab\\, =\x00é")), min_size=1, max_size=8)


@settings(max_examples=300)
@given(text, st.dictionaries(text, st.text(alphabet=st.sampled_from(list("ab\\, =\x00")), max_size=6), max_size=4))
def test_series_key_round_trips(measurement, tags):
    t = tuple(sorted(tags.items()))
    key = series_key(measurement, t)
    assert parse_series_key(key) == (measurement, t)
    assert split_key(key) == (measurement, t)


def test_distinct_tag_sets_give_distinct_keys():
    assert series_key("m", (("a", "x\\"), ("b", "y"))) != series_key("m", (("a", "x\\,b=y"),))
