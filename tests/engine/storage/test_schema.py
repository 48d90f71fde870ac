import json

import numpy as np
import pytest

from rusts.model import Column, FieldType, LineError, SeriesRows, WriteBatch
from rusts.storage.schema import SCHEMA_NAME, SchemaRegistry

F, I, S, B = FieldType.FLOAT, FieldType.INTEGER, FieldType.STRING, FieldType.BOOLEAN


def rows(m, tags, lines, **cols):
    """cols: name=(type, values[, mask])"""
    n = len(lines)
    columns = {}
    for name, spec in cols.items():
        t, vals = spec[0], np.asarray(spec[1], dtype=spec[0].dtype)
        mask = None if len(spec) < 3 else np.asarray(spec[2], dtype=bool)
        columns[name] = Column(t, vals, mask)
    return SeriesRows(m, tuple(tags), np.arange(n, dtype=np.int64) * 10, columns,
                      np.asarray(lines, dtype=np.int64))


def lines_of(batch):
    return sorted(int(x) for s in batch.series for x in s.line_numbers)


def test_registers_new_fields_and_persists(tmp_path):
    reg = SchemaRegistry.open(tmp_path)
    assert reg.needs_rebuild
    b = WriteBatch((rows("cpu", [("host", "a")], [1, 2], usage=(F, [1.0, 2.0]),
                         n=(I, [1, 0], [True, False])),
                    rows("mem", [], [3], free=(I, [5]), ok=(B, [True]))))
    out = reg.check(b)
    assert out.errors == () and lines_of(out) == [1, 2, 3]
    assert reg.fields("cpu") == {"usage": F, "n": I}
    assert reg.measurements() == ["cpu", "mem"]
    assert reg.dirty
    reg.persist()
    assert not reg.dirty
    again = SchemaRegistry.open(tmp_path)
    assert again.fields("mem") == {"free": I, "ok": B} and not again.needs_rebuild
    doc = json.loads((tmp_path / SCHEMA_NAME).read_text())
    assert doc["measurements"]["cpu"] == {"n": "integer", "usage": "float"}


def test_conflict_drops_whole_lines_only(tmp_path):
    reg = SchemaRegistry.open(tmp_path)
    reg.ensure("cpu", "usage", F)
    text = {1: "cpu,host=a usage=1i,idle=3", 2: "cpu,host=a idle=4", 3: "cpu,host=b usage=2i"}
    b = WriteBatch((
        rows("cpu", [("host", "a")], [1, 2], usage=(I, [1, 0], [True, False]),
             idle=(F, [3.0, 4.0])),
        rows("cpu", [("host", "b")], [3], usage=(I, [2])),
    ), errors=(LineError(5, "bad", "unparseable"),))
    out = reg.check(b, text.__getitem__)
    assert lines_of(out) == [2]
    (kept,) = out.series
    assert kept.tags == (("host", "a"),) and set(kept.columns) == {"idle"}
    msg = ('field type conflict: input field "usage" on measurement "cpu" is type integer, '
           'already exists as type float')
    assert out.errors == (LineError(1, text[1], msg), LineError(3, text[3], msg),
                          LineError(5, "bad", "unparseable"))
    assert reg.fields("cpu") == {"usage": F, "idle": F}


def test_first_line_in_batch_wins_regardless_of_series_order(tmp_path):
    reg = SchemaRegistry.open(tmp_path)
    b = WriteBatch((
        rows("cpu", [("host", "a")], [4, 5], v=(F, [1.0, 2.0])),   # grouped first, lines later
        rows("cpu", [("host", "b")], [2], v=(S, ["x"])),           # earliest line: string wins
        rows("disk", [], [1], v=(F, [1.0])),                      # other measurement unaffected
    ))
    out = reg.check(b)
    assert lines_of(out) == [1, 2]
    assert [e.line_number for e in out.errors] == [4, 5]
    assert "is type float, already exists as type string" in out.errors[0].error_message
    assert out.errors[0].original_line == ""
    assert reg.fields("cpu") == {"v": S} and reg.fields("disk") == {"v": F}


def test_rejected_line_registers_nothing(tmp_path):
    reg = SchemaRegistry.open(tmp_path)
    reg.ensure("cpu", "a", F)
    out = reg.check(WriteBatch((rows("cpu", [], [1], a=(I, [1]), b=(S, ["s"])),)))
    assert out.series == () and len(out.errors) == 1
    assert reg.fields("cpu") == {"a": F}  # "b" came only from the rejected line


def test_no_conflict_returns_same_batch(tmp_path):
    reg = SchemaRegistry.open(tmp_path)
    b = WriteBatch((rows("cpu", [], [1], a=(F, [1.0])),))
    assert reg.check(b) is b
    assert reg.check(b) is b


def test_drop_measurement_and_ensure_conflict(tmp_path):
    reg = SchemaRegistry.open(tmp_path)
    reg.ensure("cpu", "a", F)
    reg.ensure("cpu", "a", I)
    assert reg.fields("cpu") == {"a": F} and "integer" in reg.problems[0]
    reg.ensure("mem", "b", I)
    reg.persist()
    reg.drop_measurement("cpu")
    assert reg.measurements() == ["mem"]
    assert SchemaRegistry.open(tmp_path).measurements() == ["mem"]  # drop persisted itself
    out = reg.check(WriteBatch((rows("cpu", [], [1], a=(I, [1])),)))
    assert out.errors == () and reg.fields("cpu") == {"a": I}


@pytest.mark.parametrize("content", [b"{not json", b'{"version": 9}', b"\xff\xfe",
                                     b'{"version": 1, "measurements": {"m": {"f": "complex"}}}'])
def test_damaged_file_is_moved_aside(tmp_path, content):
    (tmp_path / SCHEMA_NAME).write_bytes(content)
    reg = SchemaRegistry.open(tmp_path)
    assert reg.needs_rebuild and reg.problems and reg.measurements() == []
    assert (tmp_path / (SCHEMA_NAME + ".corrupt")).read_bytes() == content


def test_check_is_columnar_on_large_batches(tmp_path):
    """In a 200k-row batch, only the conflicting series loses rows; the good one is kept as is."""
    reg = SchemaRegistry.open(tmp_path)
    reg.ensure("cpu", "v", F)
    n = 200_000
    good = rows("cpu", [("h", "a")], np.arange(1, n + 1), v=(F, np.ones(n)))
    bad = rows("cpu", [("h", "b")], [n + 1], v=(I, [1]))
    out = reg.check(WriteBatch((good, bad)))
    assert out.series == (good,) and [e.line_number for e in out.errors] == [n + 1]
