import os
import re

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from rusts.storage.index import LOG_NAME, SeriesIndex
from rusts.model import series_key


def k(m, **tags):
    return series_key(m, tuple(sorted(tags.items())))


KEYS = [k("cpu", host="a", region="us"), k("cpu", host="b", region="us"),
        k("cpu", host="c", region="eu"), k("mem", host="a"), k("cpu", host="d")]


def test_create_lookup_and_tag_queries(tmp_path):
    idx = SeriesIndex.open(tmp_path)
    assert idx.needs_rebuild  # no log yet
    ids = idx.lookup_or_create(KEYS + [KEYS[0]])
    assert ids.dtype == np.uint64
    assert ids.tolist() == [1, 2, 3, 4, 5, 1]
    assert idx.lookup_or_create([KEYS[2], k("disk", path="/")]).tolist() == [3, 6]
    assert idx.series_count == 6
    assert idx.get(KEYS[1]) == 2 and idx.get("nope") is None
    assert idx.key_of(3) == KEYS[2]
    assert idx.tags_of(3) == (("host", "c"), ("region", "eu"))
    assert idx.measurements() == ["cpu", "disk", "mem"]
    assert idx.series_of("cpu").tolist() == [1, 2, 3, 5]
    assert idx.tag_keys("cpu") == ["host", "region"]
    assert idx.tag_values("cpu", "region") == ["eu", "us"]
    assert idx.series_with_tag("cpu", "region", "us").tolist() == [1, 2]
    assert idx.series_with_tag("cpu", "region", "mars").tolist() == []
    assert idx.series_with_tag("nope", "region", "us").tolist() == []
    assert idx.series_with_tag_key("cpu", "region").tolist() == [1, 2, 3]
    assert idx.series_matching("cpu", "host", re.compile("[ab]").fullmatch).tolist() == [1, 2]
    col = idx.tag_column("region", np.array([5, 3, 1, 4, 99], dtype=np.uint64))
    assert col.tolist() == [None, "eu", "us", None, None]
    assert idx.tag_column("host", np.array([4, 2], dtype=np.uint64)).tolist() == ["a", "b"]


def test_caches_follow_new_series(tmp_path):
    idx = SeriesIndex.open(tmp_path)
    idx.lookup_or_create(KEYS)
    assert idx.series_with_tag("cpu", "region", "us").tolist() == [1, 2]
    assert idx.series_with_tag_key("cpu", "region").tolist() == [1, 2, 3]
    assert idx.tag_column("region", np.array([6], dtype=np.uint64)).tolist() == [None]
    idx.lookup_or_create([k("cpu", host="e", region="us")])
    assert idx.series_with_tag("cpu", "region", "us").tolist() == [1, 2, 6]
    assert idx.series_with_tag_key("cpu", "region").tolist() == [1, 2, 3, 6]
    assert idx.series_of("cpu").tolist() == [1, 2, 3, 5, 6]
    assert idx.tag_column("region", np.array([6], dtype=np.uint64)).tolist() == ["us"]


def test_predicate_runs_once_per_distinct_value(tmp_path):
    idx = SeriesIndex.open(tmp_path)
    idx.lookup_or_create([k("cpu", host=f"h{i}", dc=f"dc{i % 3}") for i in range(300)])
    calls = []

    def pred(v):
        calls.append(v)
        return v != "dc1"

    assert len(idx.series_matching("cpu", "dc", pred)) == 200
    assert sorted(calls) == ["dc0", "dc1", "dc2"]


def test_pending_until_persist_and_reload(tmp_path):
    idx = SeriesIndex.open(tmp_path)
    idx.lookup_or_create(KEYS)
    assert idx.pending_count == 5
    assert SeriesIndex.open(tmp_path).series_count == 0  # nothing durable yet
    idx.persist()
    assert idx.pending_count == 0
    idx.lookup_or_create([k("net", iface="eth0")])
    idx.persist()
    again = SeriesIndex.open(tmp_path)
    assert not again.needs_rebuild and again.problems == []
    assert again.series_count == 6
    assert [again.get(x) for x in KEYS] == [1, 2, 3, 4, 5]
    assert again.series_with_tag("cpu", "region", "us").tolist() == [1, 2]
    assert again.lookup_or_create([k("new")]).tolist() == [7]


def test_escaped_and_unicode_keys_round_trip(tmp_path):
    odd = [series_key("we ird,m", (("a b", "c,d"), ("e=f", "g h"))),
           series_key("température", (("lieu", "salle à manger"),)),
           series_key("cpu", (("host", "x\\y"),))]
    idx = SeriesIndex.open(tmp_path)
    idx.lookup_or_create(odd)
    idx.persist()
    again = SeriesIndex.open(tmp_path)
    assert [again.get(x) for x in odd] == [1, 2, 3]
    assert again.measurements() == ["cpu", "température", "we ird,m"]
    assert again.series_with_tag("we ird,m", "a b", "c,d").tolist() == [1]
    assert again.tag_values("we ird,m", "e=f") == ["g h"]
    assert again.series_with_tag("température", "lieu", "salle à manger").tolist() == [2]
    assert again.tags_of(3) == (("host", "x\\y"),)


def test_drop_measurement_persists_and_never_reuses_ids(tmp_path):
    idx = SeriesIndex.open(tmp_path)
    idx.lookup_or_create(KEYS)
    dropped = idx.drop_measurement("cpu")
    assert dropped.tolist() == [1, 2, 3, 5]
    assert idx.measurements() == ["mem"]
    assert idx.get(KEYS[0]) is None and idx.series_count == 1
    assert idx.tag_column("region", np.array([1], dtype=np.uint64)).tolist() == [None]
    with pytest.raises(KeyError):
        idx.key_of(1)
    assert idx.drop_measurement("cpu").tolist() == []
    again = SeriesIndex.open(tmp_path)  # drop_measurement persisted by itself
    assert again.measurements() == ["mem"] and again.series_count == 1
    assert again.lookup_or_create([KEYS[0]]).tolist() == [6]


def test_torn_tail_is_truncated(tmp_path):
    idx = SeriesIndex.open(tmp_path)
    idx.lookup_or_create(KEYS[:2])
    idx.persist()
    good_size = os.path.getsize(tmp_path / LOG_NAME)
    idx.lookup_or_create(KEYS[2:])
    idx.persist()
    with open(tmp_path / LOG_NAME, "r+b") as fh:
        fh.truncate(os.path.getsize(tmp_path / LOG_NAME) - 3)
    again = SeriesIndex.open(tmp_path)
    assert again.series_count == 2 and again.needs_rebuild
    assert "torn" in again.problems[0]
    assert os.path.getsize(tmp_path / LOG_NAME) == good_size
    again.lookup_or_create([KEYS[4]])
    again.persist()
    third = SeriesIndex.open(tmp_path)
    assert third.problems == [] and third.get(KEYS[4]) == 3


def test_corrupt_frame_stops_load_and_rebuild_fills_in(tmp_path):
    idx = SeriesIndex.open(tmp_path)
    idx.lookup_or_create(KEYS[:2])
    idx.persist()
    good_size = os.path.getsize(tmp_path / LOG_NAME)
    idx.lookup_or_create(KEYS[2:])
    idx.persist()
    data = bytearray((tmp_path / LOG_NAME).read_bytes())
    data[-5] ^= 0xFF
    (tmp_path / LOG_NAME).write_bytes(bytes(data))
    again = SeriesIndex.open(tmp_path)
    assert again.series_count == 2 and again.needs_rebuild
    assert "checksum" in again.problems[0]
    assert (tmp_path / f"{LOG_NAME}.corrupt-{good_size}").exists()  # kept, never deleted
    again.ensure([(3, KEYS[2]), (4, KEYS[3]), (5, KEYS[4]), (1, KEYS[0])])
    assert again.lookup_or_create([k("new")]).tolist() == [6]
    again.persist()
    third = SeriesIndex.open(tmp_path)
    assert [third.get(x) for x in KEYS] == [1, 2, 3, 4, 5] and third.problems == []


def test_garbage_file_is_quarantined(tmp_path):
    (tmp_path / LOG_NAME).write_bytes(b"definitely not an index")
    idx = SeriesIndex.open(tmp_path)
    assert idx.series_count == 0 and idx.needs_rebuild
    assert (tmp_path / f"{LOG_NAME}.corrupt-0").read_bytes() == b"definitely not an index"


def test_ensure_conflicts_are_reported(tmp_path):
    idx = SeriesIndex.open(tmp_path)
    idx.lookup_or_create(KEYS[:2])
    idx.ensure([(1, KEYS[1])])  # id 1 belongs to KEYS[0]
    assert idx.key_of(1) == KEYS[0] and len(idx.problems) == 1
    idx.ensure([(10, KEYS[0])])  # a second id for a known key: alias, still queryable
    assert idx.get(KEYS[0]) == 1 and idx.key_of(10) == KEYS[0]
    assert idx.series_with_tag("cpu", "host", "a").tolist() == [1, 10]
    assert idx.lookup_or_create([k("x")]).tolist() == [11]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["cpu", "m,x", "é"]),
                          st.dictionaries(st.sampled_from(["a", "b c", "d=e"]),
                                          # backslash excluded: model.series_key does not
                                          # escape it, so "x\\" before "," is ambiguous
                                          st.text(st.characters(blacklist_characters="\\"),
                                                  min_size=1, max_size=4), max_size=3)),
                max_size=30))
def test_property_index_matches_a_dict(tmp_path_factory, points):
    d = tmp_path_factory.mktemp("idx")
    keys = [series_key(m, tuple(sorted(t.items()))) for m, t in points]
    idx = SeriesIndex.open(d)
    ids = idx.lookup_or_create(keys)
    idx.persist()
    expect = {}
    for key in keys:
        expect.setdefault(key, len(expect) + 1)
    assert ids.tolist() == [expect[x] for x in keys]
    again = SeriesIndex.open(d)
    for (m, tags), key in zip(points, keys):
        sid = expect[key]
        assert again.key_of(sid) == key
        for tk, tv in tags.items():
            assert sid in again.series_with_tag(m, tk, tv)
            assert again.tag_column(tk, np.array([sid], dtype=np.uint64))[0] == tv


def test_lookup_of_known_keys_returns_their_ids(tmp_path):
    idx = SeriesIndex.open(tmp_path)
    keys = [f"cpu,host=h{i:06d},region=r{i % 50}" for i in range(20_000)]
    first = idx.lookup_or_create(keys)
    assert np.array_equal(idx.lookup_or_create(keys[::2]), first[::2])
    assert len(idx.series_with_tag("cpu", "region", "r7")) == 400
