"""Retention: cutoffs and precedence, expired segments, measurement ranges, the policy store."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from rusts.config import RetentionPolicy
from rusts.errors import CorruptionError, QueryError
from rusts.storage.manifest import SegmentMeta
from rusts.model import Column, FieldType
from rusts.lifecycle.policies import (PolicyStore, cold_after_ns, cutoff_for, cutoffs, effective_policy, expired_partitions,
                             make_policy, measurement_ranges, policy_from_json, query_start, segment_expired)
from rusts.storage.segment import SegmentReader, SeriesData, write_segment

S = 10**9
DAY = 86_400


def P(name, m="*", d=30 * DAY, tier=None):
    return RetentionPolicy(name=name, measurement=m, duration=d, tier_after=tier)


def test_named_policy_overrides_wildcard_and_longest_wins_among_equals():
    pols = [P("all", "*", 7 * DAY), P("cpu", "cpu", 90 * DAY), P("cpu2", "cpu", 30 * DAY)]
    assert effective_policy(pols, "cpu").name == "cpu"
    assert effective_policy(pols, "mem").name == "all"
    assert effective_policy([P("cpu", "cpu")], "mem") is None


def test_cutoffs_always_include_named_measurements():
    now = 1000 * DAY * S
    pols = [P("all", "*", 7 * DAY), P("keep", "mem", 90 * DAY)]
    c = cutoffs(pols, now)  # no measurements passed: "mem" must still not fall back to "*"
    assert c == {"*": now - 7 * DAY * S, "mem": now - 90 * DAY * S}
    assert cutoff_for(c, "mem") == now - 90 * DAY * S
    assert cutoff_for(c, "disk") == now - 7 * DAY * S
    assert cutoff_for(cutoffs([P("m", "mem")], now), "disk") is None
    assert cutoffs(pols, now, ["disk"])["disk"] == now - 7 * DAY * S


def test_query_start_is_raised_to_the_cutoff():
    c = {"cpu": 500}
    assert query_start(0, "cpu", c) == 500
    assert query_start(900, "cpu", c) == 900
    assert query_start(0, "mem", c) == 0


def test_cold_after_is_the_shortest_configured_age():
    assert cold_after_ns([], None) is None
    assert cold_after_ns([P("a", tier=3 * DAY), P("b", tier=DAY)], None) == DAY * S
    assert cold_after_ns([P("a")], 2 * DAY * S) == 2 * DAY * S


def meta(name, lo, hi):
    return SegmentMeta(file=name, partition=0, min_time=lo, max_time=hi, size=1, series_count=1, point_count=1)


def test_segments_expire_only_when_every_measurement_in_them_is_expired():
    a = meta("a", 0, 99)
    contents = {"a": {"cpu": (0, 99), "mem": (0, 50)}}
    get = lambda m: contents[m.file]  # noqa: E731
    assert segment_expired(a, {"cpu": 100, "mem": 51}, get)
    assert not segment_expired(a, {"cpu": 100, "mem": 50}, get)   # mem's newest row is at the cutoff
    assert not segment_expired(a, {"cpu": 100}, get)              # mem has no policy: kept forever
    assert segment_expired(a, {"cpu": 100, "*": 60}, get)         # mem falls under "*"
    # without contents only a wildcard policy can expire, and only below every cutoff
    assert segment_expired(a, {"*": 100}) and not segment_expired(a, {"cpu": 1000})
    assert not segment_expired(a, {"*": 100, "mem": 50})
    assert [m.file for m in expired_partitions([a, meta("b", 100, 200)], {"*": 150})] == ["a"]


def test_measurement_ranges_from_a_real_segment(tmp_path):
    p = str(tmp_path / "s.seg")
    mk = lambda sid, key, ts: SeriesData(sid, key, np.array(ts, dtype=np.int64),  # noqa: E731
                                         {"v": Column(FieldType.FLOAT, np.ones(len(ts)))})
    write_segment(p, [mk(1, "cpu,h=a", [5, 9]), mk(2, "mem,h=a", [1, 2]), mk(3, "cpu,h=b", [3, 20])], block_rows=1)
    r = SegmentReader.open(p)
    got = measurement_ranges(r, {1: "cpu", 2: "mem", 3: "cpu"}.__getitem__)
    assert got == {"cpu": (3, 20), "mem": (1, 2)}


# ------------------------------------------------------------------------------------ store
def test_policy_validation_errors_are_client_errors():
    with pytest.raises(QueryError, match="tier_after"):
        make_policy("x", "*", "7d", "30d")
    with pytest.raises(QueryError, match="duration"):
        make_policy("x", "*", "soon")
    with pytest.raises(QueryError, match="name"):
        make_policy("", "*", "7d")
    with pytest.raises(QueryError, match="unknown"):
        policy_from_json({"name": "x", "duration": "1d", "colour": "red"})
    p = policy_from_json({"name": "x", "duration": "1d", "tier_after": "12h"})
    assert (p.measurement, p.duration, p.tier_after) == ("*", DAY, DAY // 2)


def test_store_changes_persist_as_an_overlay_on_the_configuration(tmp_path):
    config = [P("default", "*", 30 * DAY), P("cpu", "cpu", 90 * DAY)]
    s = PolicyStore.open(tmp_path, config)
    assert [p.name for p in s.list()] == ["cpu", "default"]
    s.add(make_policy("mem", "mem", "7d"))
    s.update("default", duration="14d")
    s.remove("cpu")
    with pytest.raises(QueryError, match="already exists"):
        s.add(make_policy("mem", "mem", "1d"))
    with pytest.raises(QueryError, match="does not exist"):
        s.update("nope", duration="1d")
    with pytest.raises(QueryError, match="does not exist"):
        s.remove("cpu")
    with pytest.raises(QueryError, match="shorter"):
        s.update("mem", tier_after="8d")

    again = PolicyStore.open(tmp_path, config)  # restart with the same configuration
    assert {p.name: p.duration for p in again.list()} == {"default": 14 * DAY, "mem": 7 * DAY}
    assert {d["name"]: d["source"] for d in again.to_json()} == {"default": "api", "mem": "api"}
    # a policy added to rusts.yml later, untouched over the API, takes effect
    later = PolicyStore.open(tmp_path, [*config, P("disk", "disk", DAY)])
    assert {p.name for p in later.list()} == {"default", "mem", "disk"}
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]
    # a removed API-only policy disappears entirely
    later.remove("mem")
    assert "mem" not in {p.name for p in PolicyStore.open(tmp_path, config).list()}


def test_unreadable_policy_file_is_reported_not_ignored(tmp_path):
    (tmp_path / "retention.json").write_text("{broken")
    with pytest.raises(CorruptionError, match="retention"):
        PolicyStore.open(tmp_path)
    (tmp_path / "retention.json").write_text(json.dumps({"format": 1, "set": [{"name": "x", "duration": -1}]}))
    with pytest.raises(CorruptionError):
        PolicyStore.open(tmp_path)
