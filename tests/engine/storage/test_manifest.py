"""Manifest: atomic commits, crash simulation, recovery sweeps, quarantine."""

import os
from pathlib import Path

import pytest

from rusts.errors import CorruptionError, StorageError
from rusts.storage.manifest import Manifest, SegmentMeta


def meta(name, partition=0, points=10):
    return SegmentMeta(file=name, partition=partition, min_time=0, max_time=9, size=100,
                       series_count=1, point_count=points, created=1.5)


def make_seg(m: Manifest, partition=0):
    name, path = m.new_segment_path(partition)
    Path(path).write_bytes(b"x" * 100)
    return meta(name, partition)


def test_fresh_dir_commit_and_reload(data_dir):
    m, problems = Manifest.load(data_dir)
    assert problems == []
    assert m.state.version == 0 and m.state.segments == () and m.state.flushed_seq == 0
    a = make_seg(m)
    st = m.commit(add=[a], flushed_seq=42, extra={"retention": {"cpu": 3600}})
    assert st.version == 1 and st.segments == (a,) and m.state is st
    m2, problems = Manifest.load(data_dir)
    assert problems == []
    assert m2.state == st
    b = make_seg(m2)
    assert b.file != a.file
    st = m2.commit(add=[b], remove=[a])
    assert [s.file for s in st.segments] == [b.file]
    assert st.flushed_seq == 42 and st.extra == {"retention": {"cpu": 3600}}
    # only the current and previous generation stay on disk
    assert sorted(p.name for p in data_dir.glob("MANIFEST-*")) == [
        "MANIFEST-000000000001", "MANIFEST-000000000002"]


def test_commit_rejects_bad_edits(data_dir):
    m, _ = Manifest.load(data_dir)
    a = make_seg(m)
    m.commit(add=[a])
    with pytest.raises(StorageError):
        m.commit(add=[a])
    with pytest.raises(StorageError):
        m.commit(remove=["nope.seg"])
    with pytest.raises(StorageError):
        m.commit(extra={"x": object()})
    assert m.state.version == 1


def test_replace_failure_keeps_old_state(data_dir, monkeypatch):
    m, _ = Manifest.load(data_dir)
    a = make_seg(m)
    m.commit(add=[a], flushed_seq=5)
    b = make_seg(m)

    def boom(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(StorageError):
        m.commit(add=[b], flushed_seq=9)
    monkeypatch.undo()
    assert m.state.version == 1 and m.state.flushed_seq == 5
    assert not list(data_dir.glob("*.tmp"))
    m2, problems = Manifest.load(data_dir)
    assert m2.state.flushed_seq == 5 and [s.file for s in m2.state.segments] == [a.file]
    # b was renamed into segments/ but never committed: an orphan, swept at load
    assert not (data_dir / "segments" / b.file).exists()
    assert any(b.file in p for p in problems)


def test_fsync_failure_keeps_old_state(data_dir, monkeypatch):
    m, _ = Manifest.load(data_dir)
    monkeypatch.setattr(os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(5, "EIO")))
    with pytest.raises(StorageError):
        m.commit(flushed_seq=3)
    monkeypatch.undo()
    assert m.state.flushed_seq == 0
    assert Manifest.load(data_dir)[0].state.flushed_seq == 0


def test_crash_before_rename_leaves_old_state(data_dir):
    """Kill after writing the tmp file but before the rename."""
    m, _ = Manifest.load(data_dir)
    a = make_seg(m)
    m.commit(add=[a], flushed_seq=1)
    # simulate the half-done next commit: tmp written, segment file in place
    b = make_seg(m)
    (data_dir / "MANIFEST-000000000002.tmp").write_bytes(b'{"format":1,"vers')
    m2, problems = Manifest.load(data_dir)
    assert m2.state.version == 1 and m2.state.flushed_seq == 1
    assert not list(data_dir.glob("*.tmp"))
    assert not (data_dir / "segments" / b.file).exists()
    assert len(problems) == 2


def test_crash_after_rename_before_cleanup_gives_new_state(data_dir):
    m, _ = Manifest.load(data_dir)
    for i in range(3):
        m.commit(flushed_seq=i + 1)
    # an old generation left behind (crash before the cleanup step) does not matter
    (data_dir / "MANIFEST-000000000000").write_bytes((data_dir / "MANIFEST-000000000003").read_bytes()
                                                     .replace(b'"version":3', b'"version":0'))
    m2, _ = Manifest.load(data_dir)
    assert m2.state.version == 3 and m2.state.flushed_seq == 3


def test_corrupt_newest_generation_falls_back(data_dir):
    m, _ = Manifest.load(data_dir)
    a = make_seg(m)
    m.commit(add=[a], flushed_seq=1)
    b = make_seg(m)
    m.commit(add=[b], flushed_seq=2)
    newest = data_dir / "MANIFEST-000000000002"
    raw = bytearray(newest.read_bytes())
    raw[10] ^= 0x01
    newest.write_bytes(bytes(raw))
    m2, problems = Manifest.load(data_dir)
    assert [s.file for s in m2.state.segments] == [a.file]
    assert m2.state.flushed_seq == 1
    # b is not deleted in fallback mode: moved to quarantine with the bad manifest
    q = data_dir / "quarantine"
    assert (q / b.file).exists() and (q / "MANIFEST-000000000002").exists()
    assert m2.state.version == 4  # two new generations supersede the damaged one
    assert sorted(p.name for p in data_dir.glob("MANIFEST-*")) == ["MANIFEST-000000000003",
                                                                    "MANIFEST-000000000004"]
    assert len(problems) == 2
    assert Manifest.load(data_dir)[0].state == m2.state


def test_no_valid_manifest_raises(data_dir):
    m, _ = Manifest.load(data_dir)
    m.commit(flushed_seq=1)
    for p in data_dir.glob("MANIFEST-*"):
        p.write_bytes(p.read_bytes()[:-3])
    with pytest.raises(CorruptionError):
        Manifest.load(data_dir)


def test_deleted_manifest_with_segments_refuses(data_dir):
    m, _ = Manifest.load(data_dir)
    a = make_seg(m)
    m.commit(add=[a])
    for p in data_dir.glob("MANIFEST-*"):
        p.unlink()
    with pytest.raises(CorruptionError, match="no manifest"):
        Manifest.load(data_dir)
    assert (data_dir / "segments" / a.file).exists()


def test_missing_segment_is_dropped_and_reported(data_dir):
    m, _ = Manifest.load(data_dir)
    a, b = make_seg(m), make_seg(m)
    m.commit(add=[a, b])
    os.unlink(m.path_of(a))
    m2, problems = Manifest.load(data_dir)
    assert [s.file for s in m2.state.segments] == [b.file]
    assert len(problems) == 1 and a.file in problems[0]


def test_quarantine(data_dir):
    m, _ = Manifest.load(data_dir)
    a, b = make_seg(m), make_seg(m)
    m.commit(add=[a, b])
    moved = m.quarantine(a, "footer CRC mismatch")
    assert Path(moved).read_bytes() == b"x" * 100
    assert "footer CRC mismatch" in Path(moved + ".reason").read_text()
    assert [s.file for s in m.state.segments] == [b.file]
    m2, problems = Manifest.load(data_dir)
    assert problems == [] and [s.file for s in m2.state.segments] == [b.file]


def test_new_segment_paths_unique_across_reload(data_dir):
    m, _ = Manifest.load(data_dir)
    names = {m.new_segment_path(-3)[0] for _ in range(5)}
    assert len(names) == 5
    a = make_seg(m, partition=7)
    m.commit(add=[a])
    m2, _ = Manifest.load(data_dir)
    assert m2.new_segment_path(7)[0] not in names | {a.file}


def test_commit_that_must_survive_fallback_is_in_both_kept_generations(data_dir):
    m, _ = Manifest.load(data_dir)
    m.commit(flushed_seq=1)
    st = m.commit(extra={"tombstones": [1]}, survive_fallback=True)
    assert st.version == 3 and not st.copy_pending
    gens = sorted(p.name for p in data_dir.glob("MANIFEST-*"))
    assert gens == ["MANIFEST-000000000002", "MANIFEST-000000000003"]
    # the newest generation damaged: the fallback still holds the change
    newest = data_dir / gens[-1]
    raw = bytearray(newest.read_bytes())
    raw[5] ^= 0x20
    newest.write_bytes(bytes(raw))
    m2, problems = Manifest.load(data_dir)
    assert m2.state.extra == {"tombstones": [1]} and any("falling back" in p for p in problems)
    # ... and the same if the newest is deleted instead
    (data_dir / f"MANIFEST-{m2.state.version:012d}").unlink()
    assert Manifest.load(data_dir)[0].state.extra == {"tombstones": [1]}


def test_crash_between_the_two_writes_is_completed_at_load(data_dir, monkeypatch):
    m, _ = Manifest.load(data_dir)
    m.commit(flushed_seq=1)
    real, calls = Manifest._write, []

    def write_once(self, state):
        calls.append(state.version)
        if len(calls) > 1:
            raise StorageError("disk gone")
        real(self, state)

    monkeypatch.setattr(Manifest, "_write", write_once)
    # the change is committed (the first write is durable): no error, the copy is owed
    st = m.commit(extra={"tombstones": [1]}, survive_fallback=True)
    assert st.version == 2 and st.copy_pending and m.state == st
    monkeypatch.setattr(Manifest, "_write", real)
    assert "copy_pending" in (data_dir / "MANIFEST-000000000002").read_text()
    m2, problems = Manifest.load(data_dir)
    assert m2.state.version == 3 and m2.state.extra == {"tombstones": [1]} and not m2.state.copy_pending
    assert any("wrote its copy" in p for p in problems)
    assert "copy_pending" not in (data_dir / "MANIFEST-000000000003").read_text()
    assert "tombstones" in (data_dir / "MANIFEST-000000000002").read_text()  # the fallback has it
