"""The decoded-block cache shared by the executor, the vector path and the DuckDB scans."""

import numpy as np
import pyarrow as pa

from rusts.storage.blockcache import ABSENT, BlockCache, Col, arrow_of, block_columns
from rusts.model import Column, FieldType
from rusts.storage.segment import SegmentReader, SeriesData, write_segment

F, S = FieldType.FLOAT, FieldType.STRING


def _segment(tmp_path):
    n = 300
    ts = np.arange(n, dtype=np.int64) * 10
    rare = np.zeros(n, bool)
    rare[120:130] = True  # only in the middle block of 100 rows
    s = SeriesData(7, "m,host=a", ts, {
        "v": Column(F, np.arange(n, dtype=float) / 4),
        "name": Column(S, np.array([f"n{i % 7}" for i in range(n)], dtype=object)),
        "rare": Column(F, np.where(rare, 1.5, 0.0), rare),
    })
    write_segment(tmp_path / "a.seg", [s], block_rows=100)
    return SegmentReader.open(tmp_path / "a.seg"), s


class _Counting:
    """A reader that counts how many blocks it decodes."""

    def __init__(self, r):
        self.r, self.path, self.decoded = r, r.path, 0

    def read_blocks(self, sid, fields, blocks):
        self.decoded += len(blocks)
        return self.r.read_blocks(sid, fields, blocks)


def test_block_columns_decode_once_then_come_from_the_cache(tmp_path):
    r, s = _segment(tmp_path)
    reader, cache = _Counting(r), BlockCache(1 << 30)
    fields = ["v", "name", "rare", "missing"]
    first = block_columns(reader, 7, fields, [0, 2], cache)
    assert reader.decoded == 2
    again = block_columns(reader, 7, fields, [0, 1, 2], cache)
    assert reader.decoded == 3  # only block 1 was missing
    for (ts, cols), b in zip(again, [0, 1, 2]):
        rows = slice(100 * b, 100 * (b + 1))
        np.testing.assert_array_equal(ts, s.timestamps[rows])
        np.testing.assert_array_equal(cols["v"].values, s.columns["v"].values[rows])
        assert cols["v"].mask is None and list(cols["name"].values) == list(s.columns["name"].values[rows])
        assert "missing" not in cols
        assert ("rare" in cols) == (b == 1)  # a field without a value in a block is left out
    assert again[1][1]["rare"].mask.sum() == 10
    assert first[0][0] is again[0][0]  # the cached arrays themselves, not copies
    assert cache.get((r.path, 7, 0, "rare")) is ABSENT


def test_col_slices_and_arrow_forms(tmp_path):
    r, s = _segment(tmp_path)
    (ts, cols), = block_columns(r, 7, ["name", "rare"], [1], BlockCache(1 << 30))
    name = cols["name"]
    whole = name.arrow()
    assert name.arrow() is whole  # made once per cached block
    part = name.slice(10, 25)
    assert part.arrow().to_pylist() == list(s.columns["name"].values[110:125])
    assert part.slice(5, 10).arrow().to_pylist() == list(s.columns["name"].values[115:120])
    rare = cols["rare"].slice(15, 35)
    assert rare.arrow().to_pylist() == [None] * 5 + [1.5] * 10 + [None] * 5
    c = rare.column()
    assert c.type == F and len(c) == 20 and c.mask.sum() == 10
    assert arrow_of(np.array([1, 2]), np.array([True, False]), FieldType.INTEGER).to_pylist() == [1, None]


def test_cache_is_an_lru_bounded_in_bytes():
    cache = BlockCache(3 * (800 + 64))
    arrays = {k: np.zeros(100) for k in "abcd"}  # 800 bytes each
    cache.put_many([(k, v) for k, v in arrays.items() if k != "d"])
    assert cache.get_many(["a", "b"]) is not None  # a, b now used more recently than c
    cache.put("d", arrays["d"])
    assert cache.get("c") is None and cache.get("d") is arrays["d"]
    assert cache.get_many(["a", "c"]) is None  # any miss: None
    assert cache.stats()["entries"] == 3 and cache.stats()["bytes"] <= cache.max_bytes
    cache.put("huge", np.zeros(10_000))  # larger than the whole cache: not kept
    assert cache.get("huge") is None
    cache.clear()
    assert cache.stats()["entries"] == 0


def test_col_nbytes_counts_strings_and_masks():
    c = Col(S, np.array(["a", "b"], dtype=object), np.array([True, False]))
    assert c.nbytes == 2 * 56 + 2
    assert len(Col(F, np.zeros(4))) == 4 and Col(F, np.zeros(4)).nbytes == 32
    assert isinstance(Col(F, np.zeros(2)).arrow(), pa.Array)
