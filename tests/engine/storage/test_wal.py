"""The segmented WAL: framing, recovery from named corruptions, rotation, checkpoints, faults."""

from __future__ import annotations

import errno
import os
import pathlib
import shutil
import struct
import zlib

import pytest

from rusts.errors import ClosedError, StorageError
from rusts.storage.wal import (MAGIC, RECORD_HEADER_SIZE, SEGMENT_HEADER_SIZE, FileOps, Wal, frame,
                       segment_name)


def payload(seq: int) -> bytes:
    return f"record-{seq}-".encode() * (1 + seq % 3)


def build(d: pathlib.Path, segments=((1, 5), (6, 10), (11, 15))) -> None:
    """Write a WAL whose segments hold the given inclusive seq ranges."""
    wal, _ = Wal.open(d)
    for i, (a, b) in enumerate(segments):
        if i:
            wal.rotate()
        for seq in range(a, b + 1):
            assert wal.append([payload(seq)]) == seq
    wal.sync()
    wal.close()


def seg(d: pathlib.Path, first: int) -> pathlib.Path:
    return d / segment_name(first)


def offset_of(first: int, seq: int) -> int:
    """Byte offset of record ``seq`` in the segment starting at ``first``."""
    return SEGMENT_HEADER_SIZE + sum(RECORD_HEADER_SIZE + len(payload(s))
                                     for s in range(first, seq))


def patch(path: pathlib.Path, off: int, data: bytes) -> None:
    b = bytearray(path.read_bytes())
    b[off:off + len(data)] = data
    path.write_bytes(bytes(b))


def flip(path: pathlib.Path, off: int) -> None:
    b = bytearray(path.read_bytes())
    b[off] ^= 0x40
    path.write_bytes(bytes(b))


def truncate(path: pathlib.Path, size: int) -> None:
    with open(path, "r+b") as f:
        f.truncate(size)


def reopen(d: pathlib.Path):
    wal, report = Wal.open(d)
    got = list(wal.replay())
    return wal, report, got


def bad_checksum(d):  # payload CRC field wrong, header CRC recomputed: only the payload check fails
    p = seg(d, 6)
    off = offset_of(6, 8)
    b = bytearray(p.read_bytes())
    plen, pcrc, seq = struct.unpack_from("<IIQ", b, off)
    struct.pack_into("<IIQ", b, off, plen, pcrc ^ 1, seq)
    struct.pack_into("<I", b, off + 16, zlib.crc32(bytes(b[off:off + 16])))
    p.write_bytes(bytes(b))


def bad_length(d):
    p = seg(d, 6)
    off = offset_of(6, 8)
    b = bytearray(p.read_bytes())
    struct.pack_into("<I", b, off, 5)
    p.write_bytes(bytes(b))


def rewrite_header(d, first: int, rec: int, **fields) -> None:
    """Change header fields of record ``rec`` and recompute the header CRC (so it passes)."""
    p = seg(d, first)
    off = offset_of(first, rec)
    b = bytearray(p.read_bytes())
    plen, pcrc, s = struct.unpack_from("<IIQ", b, off)
    vals = {"plen": plen, "pcrc": pcrc, "seq": s, **fields}
    struct.pack_into("<IIQ", b, off, vals["plen"], vals["pcrc"], vals["seq"])
    struct.pack_into("<I", b, off + 16, zlib.crc32(bytes(b[off:off + 16])))
    p.write_bytes(bytes(b))


def overlapping_segment(d):
    """A stray segment named 3 holding records 3 and 4 (self-consistent, but 1..5 exist)."""
    other = d.parent / "other"
    wal, _ = Wal.open(other)
    wal.advance(3)
    wal.append([b"stray-3", b"stray-4"])
    wal.close()
    shutil.copy(seg(other, 3), seg(d, 3))


def zero_tail(d):
    p = seg(d, 11)
    off = offset_of(11, 14)
    patch(p, off, bytes(p.stat().st_size - off))


ALL = list(range(1, 16))
MID_LOST = [*range(1, 8), *range(11, 16)]  # seg 6..10 truncated at record 8, later kept

# name: (damage, surviving seqs, torn reports, corrupt reports, quarantined copies)
CASES = {
    "clean": (lambda d: None, ALL, 0, 0, 0),
    "bad header (seq byte)": (lambda d: flip(seg(d, 6), offset_of(6, 8) + 8), MID_LOST, 0, 1, 1),
    "bad header (header crc)": (lambda d: flip(seg(d, 6), offset_of(6, 8) + 16), MID_LOST, 0, 1, 1),
    "bad length": (bad_length, MID_LOST, 0, 1, 1),
    "huge length": (lambda d: patch(seg(d, 6), offset_of(6, 8), b"\xff\xff\xff\x7f"),
                    MID_LOST, 0, 1, 1),
    "bad checksum": (bad_checksum, MID_LOST, 0, 1, 1),
    "length beyond limit, header crc valid": (
        lambda d: rewrite_header(d, 6, 8, plen=(1 << 30) + 1), MID_LOST, 0, 1, 1),
    "length past end of sealed segment, header crc valid": (
        lambda d: rewrite_header(d, 6, 8, plen=10_000), MID_LOST, 0, 1, 1),
    "length past end of last segment, header crc valid": (
        lambda d: rewrite_header(d, 11, 14, plen=10_000), [*range(1, 14)], 1, 0, 0),
    "bad sequence, header crc valid": (
        lambda d: rewrite_header(d, 6, 8, seq=9), MID_LOST, 0, 1, 1),
    "segment name not matching its first record": (
        lambda d: seg(d, 6).rename(seg(d, 3)), [*range(1, 6), *range(11, 16)], 0, 1, 1),
    "segment overlapping the previous segment": (overlapping_segment, ALL, 0, 1, 1),
    "bad content": (lambda d: flip(seg(d, 6), offset_of(6, 8) + RECORD_HEADER_SIZE + 3),
                    MID_LOST, 0, 1, 1),
    "bad content in last segment": (
        lambda d: flip(seg(d, 11), offset_of(11, 12) + RECORD_HEADER_SIZE), [*range(1, 12)],
        0, 1, 1),
    "zeroed tail": (zero_tail, [*range(1, 14)], 1, 0, 0),
    "zeroed record mid last segment": (
        lambda d: patch(seg(d, 11), offset_of(11, 12), bytes(RECORD_HEADER_SIZE + 4)),
        [*range(1, 12)], 0, 1, 1),
    "truncated mid-log segment": (
        lambda d: truncate(seg(d, 6), offset_of(6, 8) + 7), MID_LOST, 0, 1, 1),
    "garbage appended to last segment": (
        lambda d: seg(d, 11).open("ab").write(b"\x13garbage-garbage-garbage"), ALL, 0, 1, 1),
    "garbage appended to sealed segment": (
        lambda d: seg(d, 1).open("ab").write(b"\x13garbage-garbage-garbage"), ALL, 0, 1, 1),
    "bad segment magic": (lambda d: patch(seg(d, 6), 0, b"XXXX"), ALL, 0, 1, 1),
    "empty last segment file": (lambda d: truncate(seg(d, 11), 0), [*range(1, 11)], 1, 0, 0),
    "partial magic in last segment": (
        lambda d: truncate(seg(d, 11), 3), [*range(1, 11)], 1, 0, 0),
    "missing mid-log segment": (lambda d: seg(d, 6).unlink(), [*range(1, 6), *range(11, 16)],
                                0, 0, 0),
    "truncated sealed segment header": (
        lambda d: truncate(seg(d, 6), 3), [*range(1, 6), *range(11, 16)], 0, 1, 1),
}


# the reason reported for the (first) damage, where it identifies the check that fired
REASONS = {
    "bad header (seq byte)": "header checksum",
    "bad checksum": "payload checksum",
    "bad content": "payload checksum",
    "length beyond limit, header crc valid": "bad record length",
    "length past end of sealed segment, header crc valid": "sealed segment",
    "bad sequence, header crc valid": "bad sequence",
    "segment overlapping the previous segment": "overlaps",
    "bad segment magic": "segment header",
    "truncated mid-log segment": "sealed segment",
}


@pytest.mark.parametrize("name", list(CASES))
def test_named_corruptions(tmp_path: pathlib.Path, name: str) -> None:
    damage, expect, n_torn, n_corrupt, n_quarantined = CASES[name]
    d = tmp_path / "wal"
    build(d)
    damage(d)
    damaged = {p.name: p.read_bytes() for p in d.glob("*.wal")}
    wal, report, got = reopen(d)
    assert [s for s, _ in got] == expect
    assert all(p == payload(s) for s, p in got)
    assert report.records == len(expect)
    assert len(report.torn_tail_truncated) == n_torn
    assert len(report.corrupt) == n_corrupt
    assert len(report.quarantined) == n_quarantined
    if name in REASONS:
        assert REASONS[name] in report.corrupt[0][2]
    for q in report.quarantined:  # the quarantine copy is the damaged file, byte for byte
        orig = pathlib.Path(q).name.split(".")[0] + ".wal"
        assert pathlib.Path(q).read_bytes() == damaged[orig]
    # appends continue after the highest seq ever seen; a reopen finds nothing more to repair
    last = report.last_seq
    assert last == max(expect)
    assert wal.append([b"after"]) == last + 1
    wal.sync()
    wal.close()
    wal2, report2, got2 = reopen(d)
    assert (report2.torn_tail_truncated, report2.corrupt, report2.quarantined) == ([], [], [])
    assert [s for s, _ in got2] == expect + [last + 1]
    assert got2[-1][1] == b"after"
    wal2.close()


def test_torn_last_record_at_every_offset(tmp_path: pathlib.Path) -> None:
    d = tmp_path / "wal"
    build(d)
    pristine = tmp_path / "pristine"
    shutil.copytree(d, pristine)
    start = offset_of(11, 15)
    end = seg(d, 11).stat().st_size
    assert end - start == RECORD_HEADER_SIZE + len(payload(15))
    for cut in range(start, end):
        shutil.rmtree(d)
        shutil.copytree(pristine, d)
        truncate(seg(d, 11), cut)
        wal, report, got = reopen(d)
        assert [s for s, _ in got] == list(range(1, 15)), cut
        if cut == start:  # exactly at a record boundary: nothing torn
            assert report.torn_tail_truncated == []
        else:
            assert report.torn_tail_truncated == [(str(seg(d, 11)), start)], cut
        assert report.corrupt == [] and report.quarantined == []
        assert seg(d, 11).stat().st_size == start
        assert wal.append([b"x"]) == 15
        wal.close()


def test_single_bit_flip_at_every_byte_never_returns_a_wrong_record(tmp_path) -> None:
    d = tmp_path / "wal"
    build(d, segments=((1, 3), (4, 6)))
    pristine = tmp_path / "pristine"
    shutil.copytree(d, pristine)
    files = sorted(p.name for p in pristine.glob("*.wal"))
    for name in files:
        size = (pristine / name).stat().st_size
        for off in range(size):
            shutil.rmtree(d)
            shutil.copytree(pristine, d)
            flip(d / name, off)
            wal, report, got = reopen(d)
            assert all(p == payload(s) for s, p in got), (name, off)
            assert [s for s, _ in got] == sorted({s for s, _ in got})
            assert report.corrupt, (name, off)  # every flip is detected
            wal.close()


def test_rotation_and_segment_names(tmp_path: pathlib.Path) -> None:
    wal, _ = Wal.open(tmp_path, segment_max_bytes=200)
    rec = bytes(50)  # 70 bytes framed: two records fit in a 200-byte segment with the magic
    for _ in range(7):
        wal.append([rec])
    names = sorted(p.name for p in tmp_path.glob("*.wal"))
    assert names == [segment_name(1), segment_name(3), segment_name(5), segment_name(7)]
    assert all((tmp_path / n).stat().st_size <= 200 for n in names)
    big = wal.append([bytes(500)])  # a group bigger than the limit gets its own segment
    assert big == 8 and (tmp_path / segment_name(8)).stat().st_size > 200
    wal.append([rec, rec])  # a group never spans segments
    assert (tmp_path / segment_name(9)).exists()
    wal.rotate()
    wal.rotate()  # no records in the active segment: no-op
    assert sorted(p.name for p in tmp_path.glob("*.wal"))[-1] == segment_name(11)
    assert wal.statistics()["segments"] == 7
    wal.sync()
    wal.close()
    wal, report = Wal.open(tmp_path, segment_max_bytes=200)
    assert report.last_seq == 10 and report.records == 10
    assert wal.append([rec]) == 11
    assert [s for s, _ in wal.replay(after_seq=8)] == [9, 10, 11]
    wal.close()


def test_group_append_is_one_write_with_consecutive_seqs(tmp_path: pathlib.Path) -> None:
    class Counting(FileOps):
        writes = 0

        def write(self, fd, data):
            Counting.writes += 1
            return super().write(fd, data)

    wal, _ = Wal.open(tmp_path, ops=Counting())
    Counting.writes = 0
    assert wal.append([payload(i) for i in range(1, 51)]) == 50
    assert Counting.writes == 1
    assert wal.append([]) == 50 and Counting.writes == 1
    assert [s for s, _ in wal.replay(after_seq=47)] == [48, 49, 50]
    assert list(wal.replay(after_seq=50)) == []
    wal.close()


def test_reopen_continues_sequence_even_after_all_sealed_segments_removed(tmp_path) -> None:
    build(tmp_path, segments=((1, 5), (6, 10)))
    wal, report = Wal.open(tmp_path)
    wal.rotate()  # active segment is now empty, named 11
    assert wal.checkpoint(10, retention_secs=0, now=0.0) == [str(seg(tmp_path, 1)),
                                                            str(seg(tmp_path, 6))]
    wal.close()
    wal, report = Wal.open(tmp_path)
    assert report.last_seq == 10 and report.records == 0
    assert wal.append([b"a"]) == 11
    wal.close()


def test_checkpoint_retention(tmp_path: pathlib.Path) -> None:
    build(tmp_path)  # segments 1..5, 6..10 sealed; 11..15 active
    wal, _ = Wal.open(tmp_path)
    now = os.stat(seg(tmp_path, 1)).st_mtime
    assert wal.checkpoint(15, retention_secs=None, now=now + 1e6) == []  # keep forever
    assert wal.checkpoint(7, retention_secs=0, now=now) == [str(seg(tmp_path, 1))]  # 6..10 not covered
    assert wal.checkpoint(10, retention_secs=60, now=now + 30) == []  # too young
    assert wal.checkpoint(10, retention_secs=60, now=now + 61) == [str(seg(tmp_path, 6))]
    assert wal.checkpoint(100, retention_secs=0, now=now + 61) == []  # active segment stays
    assert sorted(p.name for p in tmp_path.glob("*.wal")) == [segment_name(11)]
    assert [s for s, _ in wal.replay()] == [11, 12, 13, 14, 15]
    assert wal.statistics()["segments_removed"] == 2
    wal.close()


class FaultyOps(FileOps):
    """Fails chosen calls with an errno."""

    def __init__(self):
        self.fail_fdatasync = False
        self.fail_write: list[int] = []  # errnos for the next write calls
        self.short_write = False
        self.fail_ftruncate = False
        self.fdatasyncs = 0
        self.writes = 0

    def fdatasync(self, fd):
        self.fdatasyncs += 1
        if self.fail_fdatasync:
            raise OSError(errno.EIO, "injected EIO")
        super().fdatasync(fd)

    def write(self, fd, data):
        self.writes += 1
        if self.fail_write:
            raise OSError(self.fail_write.pop(0), "injected")
        if self.short_write and len(data) > 10:
            return super().write(fd, data[:len(data) // 2])
        return super().write(fd, data)

    def ftruncate(self, fd, length):
        if self.fail_ftruncate:
            raise OSError(errno.EIO, "injected")
        super().ftruncate(fd, length)


def test_first_fsync_failure_fails_the_wal_for_good(tmp_path: pathlib.Path) -> None:
    ops = FaultyOps()
    wal, _ = Wal.open(tmp_path, ops=ops)
    wal.append([b"a"])
    ops.fail_fdatasync = True
    with pytest.raises(StorageError):
        wal.sync()
    ops.fail_fdatasync = False  # the disk "recovers": no retry-and-believe
    calls = ops.fdatasyncs
    with pytest.raises(StorageError):
        wal.sync()
    with pytest.raises(StorageError):
        wal.append([b"b"])
    with pytest.raises(StorageError):
        wal.rotate()
    assert ops.fdatasyncs == calls  # never called again
    assert wal.failed and wal.statistics()["failed"]
    wal.close()


def test_fsync_failure_during_rotation_fails_the_wal(tmp_path: pathlib.Path) -> None:
    ops = FaultyOps()
    wal, _ = Wal.open(tmp_path, segment_max_bytes=100, ops=ops)
    wal.append([bytes(60)])
    ops.fail_fdatasync = True
    with pytest.raises(StorageError):
        wal.append([bytes(60)])  # must rotate first; sealing fsync fails
    assert wal.failed
    wal.close()


def test_failed_write_is_undone_and_the_wal_stays_usable(tmp_path: pathlib.Path) -> None:
    ops = FaultyOps()
    wal, _ = Wal.open(tmp_path, ops=ops)
    wal.append([b"one"])
    size = seg(tmp_path, 1).stat().st_size
    ops.fail_write = [errno.ENOSPC]
    with pytest.raises(StorageError):
        wal.append([b"two", b"three"])
    assert not wal.failed
    assert seg(tmp_path, 1).stat().st_size == size
    assert wal.last_seq == 1
    assert wal.append([b"two"]) == 2  # space came back: no seq was burnt
    ops.short_write = True  # short writes are completed
    assert wal.append([b"three" * 10, b"four" * 10]) == 4
    wal.sync()
    wal.close()
    wal, report = Wal.open(tmp_path)
    assert report.corrupt == [] and report.torn_tail_truncated == []
    assert [p for _, p in wal.replay()] == [b"one", b"two", b"three" * 10, b"four" * 10]
    wal.close()


def test_failed_write_that_cannot_be_undone_fails_the_wal(tmp_path: pathlib.Path) -> None:
    ops = FaultyOps()
    wal, _ = Wal.open(tmp_path, ops=ops)
    ops.fail_write = [errno.EIO]
    ops.fail_ftruncate = True
    with pytest.raises(StorageError):
        wal.append([b"x"])
    assert wal.failed
    with pytest.raises(StorageError):
        wal.append([b"y"])
    wal.close()


def test_closed_wal_refuses_appends(tmp_path: pathlib.Path) -> None:
    wal, _ = Wal.open(tmp_path)
    wal.close()
    wal.close()
    with pytest.raises(ClosedError):
        wal.append([b"x"])


def test_quarantine_failure_leaves_segment_untouched(tmp_path: pathlib.Path) -> None:
    d = tmp_path / "wal"
    build(d, segments=((1, 5),))
    flip(seg(d, 1), offset_of(1, 4) + RECORD_HEADER_SIZE)
    damaged = seg(d, 1).read_bytes()
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    wal, report = Wal.open(d, quarantine_dir=blocker / "q")
    assert report.quarantined == []
    assert any("quarantine failed" in c[2] for c in report.corrupt)
    assert seg(d, 1).read_bytes() == damaged  # evidence kept as is
    assert [s for s, _ in wal.replay()] == [1, 2, 3]
    assert wal.append([b"new"]) == 4  # into a new segment after the damaged one
    assert seg(d, 4).exists()
    wal.sync()
    assert wal.checkpoint(100, retention_secs=0, now=1e12) == []  # never deletes it
    wal.close()
    wal, report = Wal.open(d)  # quarantine works now: copied, then repaired
    assert len(report.quarantined) == 1
    assert [s for s, _ in wal.replay()] == [1, 2, 3, 4]
    assert [p for _, p in wal.replay(after_seq=3)] == [b"new"]
    wal.close()


def test_advance_skips_sequence_numbers(tmp_path: pathlib.Path) -> None:
    wal, _ = Wal.open(tmp_path)
    wal.advance(100)  # empty active segment is replaced
    assert wal.append([b"a"]) == 100
    wal.advance(50)  # never goes back
    wal.advance(200)
    assert wal.append([b"b"]) == 200
    wal.sync()
    wal.close()
    wal, report = Wal.open(tmp_path)
    assert [s for s, _ in wal.replay()] == [100, 200]
    assert sorted(p.name for p in tmp_path.glob("*.wal")) == [segment_name(100), segment_name(200)]
    wal.close()


def test_frame_layout_matches_the_documented_format() -> None:
    f = frame(7, b"hello")
    plen, pcrc, seq = struct.unpack_from("<IIQ", f)
    assert (plen, seq) == (5, 7)
    assert pcrc == zlib.crc32(struct.pack("<Q", 7) + b"hello")
    assert struct.unpack_from("<I", f, 16)[0] == zlib.crc32(f[:16])
    assert f[20:] == b"hello"
    assert MAGIC == b"RSWAL\x00\x00\x01"


def test_golden_segment_v1(tmp_path: pathlib.Path) -> None:
    """A segment written by format version 1 keeps replaying (and is still what we write)."""
    golden = bytes.fromhex(
        "525357414c000001"  # magic + version
        "03000000" "fcf66c60" "0100000000000000" "d99490be" "616263"  # seq 1, b"abc"
        "00000000" "14d80727" "0200000000000000" "46675010")  # seq 2, b""
    wal, _ = Wal.open(tmp_path)
    wal.append([b"abc", b""])
    wal.close()
    assert seg(tmp_path, 1).read_bytes() == golden
    wal, report = Wal.open(tmp_path)
    assert list(wal.replay()) == [(1, b"abc"), (2, b"")]
    wal.close()
