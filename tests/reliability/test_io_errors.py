"""The WAL under injected I/O errors, SQLite style: run a scripted workload with the k-th file
operation failing (k = 1, 2, 3 ... until the workload no longer reaches k), transient (only the
k-th call fails) and persistent (every call from the k-th on), with ENOSPC and EIO.

After each run the log is reopened with healthy file operations and checked against what the
workload saw: every acknowledged record (append + fsync returned) is replayed exactly once, no
record is invented, a record whose write was refused is absent, and only a record whose fsync
failed may be present or absent (its outcome is unknown, like a timeout). Every error the
workload saw is a StorageError (the HTTP layer answers 503), and a failed fsync is never retried:
the log refuses everything after it."""

from __future__ import annotations

import errno
import os

import pytest

from rusts.errors import StorageError, StorageUnavailableError, WalFailedError
from rusts.storage.wal import FileOps, Wal

CALLS = ("open", "write", "fdatasync", "ftruncate", "close", "unlink", "fsync_dir")


class Faulty(FileOps):
    """Fails the k-th call (counting every call in CALLS), or every call from the k-th on."""

    def __init__(self, k: int, err: int, persistent: bool) -> None:
        self.k, self.err, self.persistent = k, err, persistent
        self.n = 0
        self.fired = False

    def _tick(self, name: str) -> None:
        self.n += 1
        if self.n == self.k or (self.persistent and self.n > self.k):
            self.fired = True
            raise OSError(self.err, f"injected {errno.errorcode[self.err]} in {name}")


for _name in CALLS:
    def _wrap(self, *a, _name=_name, **kw):
        self._tick(_name)
        return getattr(FileOps, _name)(self, *a, **kw)
    setattr(Faulty, _name, _wrap)


def payload(i: int) -> bytes:
    return f"record-{i:04d}-".encode() * (1 + i % 7)


def workload(wal_dir, ops) -> tuple[set[int], set[int], set[int], list[BaseException]]:
    """Append 40 records one by one with an fsync each (every_write), rotating often."""
    acked, refused, unknown, errors = set(), set(), set(), []
    try:
        wal, _ = Wal.open(wal_dir, segment_max_bytes=400, ops=ops)
    except StorageError:  # startup refuses with a clear error (not a 503: no server yet)
        return acked, refused, unknown, []
    for i in range(40):
        try:
            wal.append([payload(i)])
        except StorageError as e:
            errors.append(e)
            refused.add(i)
            continue
        except OSError as e:  # must not happen: every failure is a StorageError
            errors.append(e)
            unknown.add(i)
            continue
        try:
            wal.sync()
        except StorageError as e:
            errors.append(e)
            unknown.add(i)
            continue
        acked.add(i)
    wal.close()
    return acked, refused, unknown, errors


def check_run(tmp_path, k: int, err: int, persistent: bool) -> bool:
    d = tmp_path / f"k{k}-{err}-{int(persistent)}"
    ops = Faulty(k, err, persistent)
    acked, refused, unknown, errors = workload(d, ops)
    for e in errors:
        assert isinstance(e, StorageError), (k, repr(e))
        assert isinstance(e, StorageUnavailableError), (k, repr(e))  # 503 + Retry-After
    failed_at = next((i for i, e in enumerate(errors) if isinstance(e, WalFailedError)), None)
    if failed_at is not None:  # after a failed fsync the log refuses everything: no retry
        assert all(isinstance(e, WalFailedError) for e in errors[failed_at:]), (k, errors)
    if not os.path.isdir(d):
        assert not acked
        return ops.fired
    wal, report = Wal.open(d)
    got = [(seq, p) for seq, p in wal.replay()]
    wal.close()
    seqs = [s for s, _ in got]
    assert seqs == sorted(set(seqs)), (k, seqs)
    have = [int(p[7:11]) for _, p in got]
    assert len(have) == len(set(have)), (k, have)
    for i, p in zip(have, (p for _, p in got)):
        assert p == payload(i), (k, i)  # never a wrong record
    assert acked <= set(have), (k, sorted(acked - set(have)))
    assert set(have) <= acked | unknown, (k, sorted(set(have) - acked - unknown))
    assert not (set(have) & refused)
    return ops.fired


@pytest.mark.parametrize("err", [errno.ENOSPC, errno.EIO])
@pytest.mark.parametrize("persistent", [False, True], ids=["transient", "persistent"])
def test_kth_file_operation_fails(tmp_path, err: int, persistent: bool) -> None:
    k = 1
    while check_run(tmp_path, k, err, persistent):
        k += 1
    assert k > 100  # the workload made at least this many file operations, each one failed once


def test_full_disk_during_rotation_does_not_fail_the_log(tmp_path) -> None:
    """ENOSPC while creating the next segment (a rotation) refuses that append only; the log
    goes on in a new segment once space is back (it used to fail the log until restart)."""

    class NoSpaceForHeaders(FileOps):
        full = False

        def write(self, fd, data):
            if self.full:
                raise OSError(errno.ENOSPC, "injected ENOSPC")
            return super().write(fd, data)

    ops = NoSpaceForHeaders()
    wal, _ = Wal.open(tmp_path, segment_max_bytes=200, ops=ops)
    wal.append([b"x" * 150])
    wal.sync()
    ops.full = True
    with pytest.raises(StorageUnavailableError):
        wal.append([b"y" * 150])  # would rotate: the new segment's header cannot be written
    assert not wal.failed
    ops.full = False
    assert wal.append([b"z" * 150]) == 2
    wal.sync()
    wal.close()
    wal, _ = Wal.open(tmp_path)
    assert [p[:1] for _, p in wal.replay()] == [b"x", b"z"]
    wal.close()
