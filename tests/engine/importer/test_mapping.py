"""Arrow columns -> timestamps, tags and typed fields (rusts.importer.mapping)."""

from __future__ import annotations

import datetime as dt
import decimal

import numpy as np
import pyarrow as pa
import pytest

from rusts.importer.errors import ImportInputError
from rusts.importer.mapping import (REJECT_NO_FIELDS, REJECT_NO_TIME, make_plan, normalise,
                                    to_write_batch)
from rusts.model import FieldType

NS = [1_700_000_000_000_000_000, 1_700_000_001_000_000_000]


def _one(ts: pa.Array, **kw):
    rb = pa.record_batch({"timestamp": ts, "v": pa.array([1.0, 2.0])})
    plan = make_plan(rb.schema, measurement="m", **kw)
    return normalise(rb, plan).batch.column("timestamp").to_pylist()


@pytest.mark.parametrize("unit,div", [("s", 10**9), ("ms", 10**6), ("us", 10**3), ("ns", 1)])
def test_every_timestamp_unit_becomes_nanoseconds(unit, div):
    assert _one(pa.array([n // div for n in NS], pa.timestamp(unit))) == NS


def test_timezone_aware_timestamps_are_stored_as_the_utc_instant():
    plus1 = dt.timezone(dt.timedelta(hours=1))  # Paris in November: 23:13 there is 22:13 UTC
    paris = pa.array([dt.datetime(2023, 11, 14, 23, 13, 20, tzinfo=plus1),
                      dt.datetime(2023, 11, 14, 23, 13, 21, tzinfo=plus1)],
                     pa.timestamp("ms", tz="Europe/Paris"))
    assert _one(paris) == NS


def test_int64_is_nanoseconds_unless_a_unit_is_given():
    assert _one(pa.array(NS, pa.int64())) == NS
    assert _one(pa.array([n // 10**6 for n in NS], pa.int64()), int_unit="ms") == NS


def test_date64_is_milliseconds_and_date32_days():
    day = 19_675
    assert _one(pa.array([day * 86_400_000, (day + 1) * 86_400_000], pa.date64())) == \
        [day * 86_400 * 10**9, (day + 1) * 86_400 * 10**9]
    assert _one(pa.array([day, day + 1], pa.date32())) == [day * 86_400 * 10**9, (day + 1) * 86_400 * 10**9]


def test_iso_strings_with_and_without_offset():
    assert _one(pa.array(["2023-11-14T22:13:20", "2023-11-14T22:13:21"])) == NS
    assert _one(pa.array(["2023-11-14T23:13:20+01:00", "2023-11-14T23:13:21+01:00"])) == NS


def test_timestamp_out_of_range_is_a_clear_error():
    with pytest.raises(ImportInputError, match="out of the range"):
        _one(pa.array([10**12, 1], pa.timestamp("s")))


def test_field_types_map_to_rusts_types():
    n = 3
    rb = pa.record_batch({
        "timestamp": pa.array(range(n), pa.int64()),
        "f32": pa.array([1.5, 2.5, 3.5], pa.float32()), "f64": pa.array([0.1, 0.2, 0.3]),
        "i8": pa.array([-1, 0, 1], pa.int8()), "i64": pa.array([-(2**62), 0, 2**62]),
        "u8": pa.array([0, 1, 255], pa.uint8()), "u64": pa.array([0, 1, 2**64 - 1], pa.uint64()),
        "b": pa.array([True, False, True]), "s": pa.array(["a", "b", "c"]),
        "ls": pa.array(["x", "y", "z"], pa.large_string()),
        "ds": pa.array(["p", "q", "p"]).dictionary_encode(),
        "dec": pa.array([decimal.Decimal("1.25"), decimal.Decimal("2.5"), decimal.Decimal("0")]),
        "when": pa.array([1, 2, 3], pa.timestamp("ms")),
    })
    plan = make_plan(rb.schema, measurement="m")
    types = dict(plan.fields)
    assert types == {"f32": FieldType.FLOAT, "f64": FieldType.FLOAT, "i8": FieldType.INTEGER,
                     "i64": FieldType.INTEGER, "u8": FieldType.UNSIGNED, "u64": FieldType.UNSIGNED,
                     "b": FieldType.BOOLEAN, "s": FieldType.STRING, "ls": FieldType.STRING,
                     "ds": FieldType.STRING, "dec": FieldType.FLOAT, "when": FieldType.INTEGER}
    norm = normalise(rb, plan)
    (frame,) = to_write_batch(norm.batch, plan, norm.rows).frames
    cols = frame.columns
    assert cols["f32"].values.tolist() == [1.5, 2.5, 3.5]
    assert cols["u64"].values.dtype == np.uint64 and cols["u64"].values.tolist() == [0, 1, 2**64 - 1]
    assert cols["i64"].values.tolist() == [-(2**62), 0, 2**62]
    assert cols["b"].values.tolist() == [True, False, True]
    assert cols["ls"].values.tolist() == ["x", "y", "z"]
    assert cols["ds"].values.tolist() == ["p", "q", "p"]
    assert cols["dec"].values.tolist() == [1.25, 2.5, 0.0]
    assert cols["when"].values.tolist() == [1_000_000, 2_000_000, 3_000_000]
    assert all(c.mask is None for c in cols.values())


def test_unstorable_column_is_named_and_can_be_skipped():
    rb = pa.record_batch({"timestamp": pa.array([1], pa.int64()), "v": [1.0],
                          "blob": pa.array([b"\x00"], pa.binary()), "l": pa.array([[1, 2]])})
    with pytest.raises(ImportInputError) as e:
        make_plan(rb.schema, measurement="m")
    assert "'blob' (binary)" in str(e.value) and "'l'" in str(e.value)
    assert "--skip-column blob" in str(e.value)
    plan = make_plan(rb.schema, measurement="m", skip=("blob", "l"))
    assert plan.fields == (("v", FieldType.FLOAT),)


def test_missing_columns_are_clear_errors():
    schema = pa.schema([("time", pa.int64()), ("host", pa.string()), ("v", pa.float64())])
    assert make_plan(schema, measurement="m").time_column == "time"  # the original's fallback
    with pytest.raises(ImportInputError, match="timestamp column 'when' not found"):
        make_plan(schema, measurement="m", timestamp_column="when")
    with pytest.raises(ImportInputError, match="tag column 'region' not found"):
        make_plan(schema, measurement="m", tags=("region",))
    with pytest.raises(ImportInputError, match="no field columns"):
        make_plan(schema, measurement="m", tags=("host",), skip=("v",))
    with pytest.raises(ImportInputError, match="has type double"):
        make_plan(pa.schema([("timestamp", pa.float64()), ("v", pa.int64())]), measurement="m")


def test_nulls_are_skipped_per_field_and_empty_rows_counted():
    rb = pa.record_batch({
        "timestamp": pa.array([1, 2, None, 4, 5], pa.int64()),
        "a": pa.array([1.0, None, 3.0, None, 5.0]),
        "b": pa.array([None, "x", "y", None, None]),
    })
    plan = make_plan(rb.schema, measurement="m")
    norm = normalise(rb, plan, first_row=11)
    assert norm.rejected == {REJECT_NO_TIME: 1, REJECT_NO_FIELDS: 1}
    assert norm.rows.tolist() == [11, 12, 15]
    (frame,) = to_write_batch(norm.batch, plan, norm.rows).frames
    assert frame.timestamps.tolist() == [1, 2, 5]
    a, b = frame.columns["a"], frame.columns["b"]
    assert a.mask.tolist() == [True, False, True] and a.values[a.mask].tolist() == [1.0, 5.0]
    assert b.mask.tolist() == [False, True, False] and b.values[1] == "x"


def test_rows_are_grouped_by_tag_set_keeping_input_order():
    rb = pa.record_batch({
        "timestamp": pa.array([5, 1, 4, 2, 3, 6], pa.int64()),
        "host": pa.array(["b", "a", "b", None, "a", ""]),
        "dc": pa.array(["x", "x", "x", "y", "x", "y"]).dictionary_encode(),
        "v": pa.array([1, 2, 3, 4, 5, 6], pa.int64()),
    })
    plan = make_plan(rb.schema, measurement="cpu", tags=("host", "dc"))
    assert plan.tags == ("dc", "host")
    norm = normalise(rb, plan)
    (frame,) = to_write_batch(norm.batch, plan, norm.rows).frames
    got = {}
    for i, key in enumerate(frame.keys):
        a, b = frame.starts[i], frame.starts[i + 1]
        got[key] = (frame.tags[i], frame.columns["v"].values[a:b].tolist(), frame.line_numbers[a:b].tolist())
    # a null and an empty tag value are both "no tag": one series
    assert got == {"cpu,dc=x,host=a": ((("dc", "x"), ("host", "a")), [2, 5], [2, 5]),
                   "cpu,dc=x,host=b": ((("dc", "x"), ("host", "b")), [1, 3], [1, 3]),
                   "cpu,dc=y": ((("dc", "y"),), [4, 6], [4, 6])}


def test_integer_and_boolean_tag_columns_become_text():
    rb = pa.record_batch({"timestamp": pa.array([1, 2], pa.int64()), "zone": pa.array([7, 8], pa.int16()),
                          "v": [1.0, 2.0]})
    plan = make_plan(rb.schema, measurement="m", tags=("zone",))
    batch = to_write_batch(normalise(rb, plan).batch, plan)
    assert sorted(batch.frames[0].keys) == ["m,zone=7", "m,zone=8"]
