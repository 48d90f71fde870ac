"""The write-ahead log: a segmented log of checksummed records, recovery, checkpoints.

Byte layout, recovery rules and their reasons: docs/format/wal.md. This module is synchronous
and file-level; the WAL writer actor (``rusts.actors.wal_writer``) calls it from one worker
thread at a time (a ``CapacityLimiter(1)``). A :class:`Wal` is not thread-safe.

Design notes:

* **Framing.** ``u32 len | u32 crc(seq ++ payload) | u64 seq | u32 crc(header)``. The header CRC
  tells a damaged length field (corruption) from a record that runs past the end of the file
  (torn tail), so neither can make the reader skip or invent records.
* **Group commit.** :meth:`Wal.append` frames a whole group and issues one ``write()``; the
  caller then issues one :meth:`Wal.sync`. Segments are opened ``O_APPEND``.
* **Recovery keeps later segments** after a damaged one (InfluxDB's choice): records are
  idempotent upserts, so replaying later ones is safe while dropping them would lose acked
  data. Damaged files are copied to the quarantine directory before they are changed, and never
  deleted. If the copy itself fails, the segment is left as it is (its valid prefix still
  replays) and appends go to a new segment.
* **fsync failure is final** (fsyncgate): after the first failed fsync/fdatasync the kernel may
  have dropped the dirty pages and a retry could report success for data that is gone. The Wal
  becomes *failed*; every later append/sync raises :class:`StorageError`. A failed ``write()``
  is different: the segment is truncated back to its previous length (nothing partial stays in
  the log) and the Wal stays usable, so ingest can resume once disk space is back.
* **File operations go through** :class:`FileOps` so tests can inject faults (EIO, ENOSPC,
  short writes) at any call site.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import shutil
import struct
import threading
import time
import zlib
from collections.abc import Iterator

import attrs

from rusts.errors import (ClosedError, DiskFullError, StorageError, StorageUnavailableError,
                          WalFailedError)

log = logging.getLogger("rusts.wal")

MAGIC = b"RSWAL\x00\x00\x01"
SEGMENT_HEADER_SIZE = len(MAGIC)
RECORD_HEADER_SIZE = 20
MAX_PAYLOAD = 1 << 30
_REC = struct.Struct("<IIQ")  # payload_len, payload_crc, seq
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_SEGMENT_RE = re.compile(r"^([0-9]{20})\.wal$")
_ZERO8 = bytes(8)


def write_error(e: OSError, what: str) -> StorageUnavailableError:
    """The error a failed (and undone) write answers: :class:`DiskFullError` for ENOSPC/EDQUOT."""
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return DiskFullError(f"{what}: disk full ({e.strerror}); retry once space is freed")
    return StorageUnavailableError(f"{what}: {e}")


def segment_name(first_seq: int) -> str:
    """File name of the segment whose first record has ``first_seq``."""
    return f"{first_seq:020d}.wal"


def frame(seq: int, payload: bytes) -> bytes:
    """One framed record (header + payload), as written to a segment."""
    head = _REC.pack(len(payload), zlib.crc32(payload, zlib.crc32(_U64.pack(seq))), seq)
    return head + _U32.pack(zlib.crc32(head)) + payload


def has_records(wal_dir: str | os.PathLike) -> bool:
    """Whether ``wal_dir`` holds a non-empty WAL segment (a database opened in mode ``none``
    still replays what an earlier run in another mode logged)."""
    try:
        with os.scandir(wal_dir) as it:
            return any(e.name.endswith(".wal") and e.stat().st_size > 0 for e in it)
    except (FileNotFoundError, NotADirectoryError):
        return False


class FileOps:
    """The file system calls the WAL makes; tests subclass this to inject faults."""

    def open(self, path: str, flags: int, mode: int = 0o644) -> int:
        return os.open(path, flags, mode)

    def write(self, fd: int, data: memoryview) -> int:
        return os.write(fd, data)

    def fdatasync(self, fd: int) -> None:
        os.fdatasync(fd)

    def ftruncate(self, fd: int, length: int) -> None:
        os.ftruncate(fd, length)

    def close(self, fd: int) -> None:
        os.close(fd)

    def unlink(self, path: str) -> None:
        os.unlink(path)

    def fsync_dir(self, path: str) -> None:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@attrs.frozen
class RecoveryReport:
    """What :meth:`Wal.open` found and repaired.

    Attributes:
        torn_tail_truncated: (segment path, offset truncated at) for torn tails.
        corrupt: (segment path, offset of the damage, reason) for damaged records/headers.
        quarantined: paths of the quarantine copies made.
        records: valid records in the log after recovery.
        last_seq: the sequence number appends continue after.
    """

    torn_tail_truncated: list[tuple[str, int]]
    corrupt: list[tuple[str, int, str]]
    quarantined: list[str]
    records: int
    last_seq: int


@attrs.define
class _Problem:
    kind: str  # "torn" or "corrupt"
    offset: int
    reason: str


@attrs.define
class _Scan:
    records: list[tuple[int, int, int]]  # (seq, payload start, payload end)
    valid_end: int
    bad_magic: bool
    problem: _Problem | None


def _all_zero(data: memoryview) -> bool:
    return data.tobytes().count(0) == len(data)


def scan_segment(data: bytes, first_seq: int, *, is_last: bool, min_seq: int = 1) -> _Scan:
    """Validate a segment's bytes; pure.

    Args:
        data: the whole file.
        first_seq: the seq the segment's name promises for its first record.
        is_last: whether this is the newest segment (only it may have a torn tail).
        min_seq: the smallest seq acceptable (previous segment's last seq + 1).

    Returns:
        The valid records, where they end, and the first problem (None if the file is clean).
    """
    mv = memoryview(data)
    n = len(data)
    records: list[tuple[int, int, int]] = []
    bad_magic = n < SEGMENT_HEADER_SIZE or bytes(mv[:SEGMENT_HEADER_SIZE]) != MAGIC

    def stop(kind: str, off: int, reason: str) -> _Scan:
        if kind == "torn" and not is_last:
            kind, reason = "corrupt", f"{reason} in a sealed segment"
        return _Scan(records, off, bad_magic, _Problem(kind, off, reason))

    if n < SEGMENT_HEADER_SIZE:
        if is_last and bytes(mv) == MAGIC[:n]:  # crashed while creating the segment
            bad_magic = False
            return stop("torn", 0, "incomplete segment header")
        return stop("corrupt", 0, "incomplete segment header")
    off = SEGMENT_HEADER_SIZE
    expected = first_seq
    while off < n:
        if n - off < RECORD_HEADER_SIZE:
            if _all_zero(mv[off:]):
                return stop("torn", off, "zeroed tail")
            return stop("torn", off, "incomplete record header")
        plen, pcrc, seq = _REC.unpack_from(mv, off)
        (hcrc,) = _U32.unpack_from(mv, off + 16)
        if zlib.crc32(mv[off:off + 16]) != hcrc:
            if _all_zero(mv[off:]):
                return stop("torn", off, "zeroed tail")
            return stop("corrupt", off, "bad record header checksum")
        if plen > MAX_PAYLOAD:
            return stop("corrupt", off, f"bad record length {plen}")
        if seq != expected:
            return stop("corrupt", off, f"bad sequence {seq}, expected {expected}")
        if seq < min_seq:
            return stop("corrupt", off, f"record {seq} overlaps the previous segment")
        start = off + RECORD_HEADER_SIZE
        end = start + plen
        if end > n:
            return stop("torn", off, "incomplete record")
        if zlib.crc32(mv[start:end], zlib.crc32(mv[off + 8:off + 16])) != pcrc:
            if end == n and plen >= 8 and bytes(mv[n - 8:]) == _ZERO8:
                return stop("torn", off, "zeroed tail")
            return stop("corrupt", off, "bad payload checksum")
        records.append((seq, start, end))
        expected += 1
        off = end
    return _Scan(records, off, bad_magic, None)


@attrs.define(eq=False)
class _Segment:
    first_seq: int
    path: str
    size: int
    records: int
    last_seq: int  # first_seq - 1 when empty
    damaged: bool = False  # damage found but not repaired (quarantine failed): never delete


class Wal:
    """A segmented write-ahead log. Create with :meth:`Wal.open`.

    Attributes:
        last_seq: sequence number of the last appended (or recovered) record.
    """

    def __init__(self, wal_dir: str, segment_max_bytes: int, quarantine_dir: str,
                 ops: FileOps) -> None:
        self.dir = wal_dir
        self.segment_max_bytes = segment_max_bytes
        self.quarantine_dir = quarantine_dir
        self.ops = ops
        self.last_seq = 0
        self._segments: list[_Segment] = []
        self._fd: int | None = None
        self._failed: StorageError | None = None
        self._closed = False
        self._fd_lock = threading.Lock()  # fd swaps vs. sync_detached's dup
        self._stats = {"appends": 0, "records_appended": 0, "bytes_appended": 0, "syncs": 0,
                       "rotations": 0, "segments_removed": 0, "unavailable_episodes": 0,
                       "rejected_unavailable": 0}
        self._unavailable: str | None = None

    # ------------------------------------------------------------------ opening / recovery

    @classmethod
    def open(cls, wal_dir, *, segment_max_bytes: int = 64 << 20, quarantine_dir=None,
             ops: FileOps | None = None, expect_from: int | None = None) -> tuple["Wal", RecoveryReport]:
        """Open (creating if needed) the log in ``wal_dir`` and recover it.

        Args:
            wal_dir: directory of the segments.
            segment_max_bytes: size at which appends move to a new segment.
            quarantine_dir: where damaged segments are copied; default ``<wal_dir>/quarantine``.
            ops: file operations (fault injection in tests).
            expect_from: the first seq the caller needs (flushed seq + 1): records from there on
                that no segment holds (a deleted segment file) are reported in ``corrupt``.

        Returns:
            The open log, positioned to append after the last valid record, and the report.

        Raises:
            StorageError: the directory cannot be read or repairs cannot be written.
        """
        wal_dir = os.fspath(wal_dir)
        qdir = os.fspath(quarantine_dir) if quarantine_dir is not None else os.path.join(
            wal_dir, "quarantine")
        wal = cls(wal_dir, segment_max_bytes, qdir, ops or FileOps())
        try:
            report = wal._recover(expect_from)
        except OSError as e:
            wal.close()
            raise StorageError(f"cannot open WAL in {wal_dir}: {e}") from e
        except BaseException:
            wal.close()
            raise
        return wal, report

    def _recover(self, expect_from: int | None = None) -> RecoveryReport:
        if not os.path.isdir(self.dir):
            os.makedirs(self.dir)
            self.ops.fsync_dir(os.path.dirname(os.path.abspath(self.dir)))
        names = sorted(int(m.group(1)) for m in map(_SEGMENT_RE.match, os.listdir(self.dir)) if m)
        torn: list[tuple[str, int]] = []
        corrupt: list[tuple[str, int, str]] = []
        quarantined: list[str] = []
        total = 0
        prev_last = 0
        explained = False  # the previous segment was cut short by reported damage
        need = expect_from or 0

        def gap(a: int, b: int, where: str) -> None:
            a = max(a, need)
            if need and a <= b:
                corrupt.append((self.dir, 0, f"records {a}..{b} are missing {where} (a WAL "
                                             "segment file was deleted?)"))
                log.error("WAL records missing", extra={"first": a, "last": b})

        if need > 1 and not names:
            corrupt.append((self.dir, 0, f"no WAL segment file: any record after {need - 1} "
                                         "is lost (was the WAL deleted?)"))
            log.error("WAL segments missing", extra={"dir": self.dir})
        for i, first in enumerate(names):
            path = os.path.join(self.dir, segment_name(first))
            is_last = i == len(names) - 1
            if first > max(prev_last + 1, 1) and not explained:
                gap(prev_last + 1 if i else need, first - 1,
                    f"before {segment_name(first)}")
            with open(path, "rb") as f:
                data = f.read()
            scan = scan_segment(data, first, is_last=is_last, min_seq=prev_last + 1)
            seg = _Segment(first, path, len(data), len(scan.records),
                           scan.records[-1][0] if scan.records else first - 1)
            p = scan.problem
            damaged = scan.bad_magic or (p is not None and p.kind == "corrupt")
            if scan.bad_magic and (p is None or p.offset > 0):
                corrupt.append((path, 0, "bad segment header"))
                log.error("WAL segment header damaged", extra={"segment": path})
            if p is not None and p.kind == "corrupt":
                corrupt.append((path, p.offset, p.reason))
                log.error("WAL corruption", extra={"segment": path, "offset": p.offset,
                                                   "reason": p.reason})
            repair = True
            if damaged:
                try:
                    quarantined.append(self._quarantine(path))
                except OSError as e:
                    repair = False
                    seg.damaged = True
                    corrupt.append((path, scan.valid_end,
                                    f"quarantine failed ({e}); segment left unrepaired"))
                    log.error("WAL quarantine failed", extra={"segment": path, "error": str(e)})
            if repair and (p is not None or scan.bad_magic):
                self._repair(path, scan)
                seg.size = max(scan.valid_end, SEGMENT_HEADER_SIZE)
                if p is not None and p.kind == "torn":
                    torn.append((path, p.offset))
                    log.warning("WAL torn tail truncated", extra={"segment": path,
                                                                 "offset": p.offset,
                                                                 "reason": p.reason})
            self._segments.append(seg)
            total += seg.records
            prev_last = max(prev_last, seg.last_seq)
            explained = p is not None
        self.last_seq = prev_last
        if self._segments and not self._segments[-1].damaged:
            active = self._segments[-1]
            self._fd = self.ops.open(active.path, os.O_WRONLY | os.O_APPEND)
        else:
            if self._segments:  # damaged, unrepaired: the new segment must sort after it
                self.last_seq = max(self.last_seq, self._segments[-1].first_seq)
            try:
                self._create_segment(self.last_seq + 1)
            except StorageError:
                if self._failed is not None:
                    raise
                # full disk at startup: the log opens without an active segment; the first
                # append creates it (and fails the same way until space is back)
        return RecoveryReport(torn, corrupt, quarantined, total, self.last_seq)

    def _quarantine(self, path: str) -> str:
        os.makedirs(self.quarantine_dir, exist_ok=True)
        dest = os.path.join(self.quarantine_dir,
                            f"{os.path.basename(path)}.{time.time_ns()}.corrupt")
        shutil.copyfile(path, dest)
        fd = os.open(dest, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        self.ops.fsync_dir(self.quarantine_dir)
        log.warning("WAL segment quarantined", extra={"segment": path, "copy": dest})
        return dest

    def _repair(self, path: str, scan: _Scan) -> None:
        """Truncate at the first bad record and restore the magic; durable before returning."""
        fd = self.ops.open(path, os.O_RDWR)
        try:
            end = max(scan.valid_end, SEGMENT_HEADER_SIZE)
            self.ops.ftruncate(fd, end)
            if scan.bad_magic or scan.valid_end < SEGMENT_HEADER_SIZE:
                os.pwrite(fd, MAGIC, 0)
            self.ops.fdatasync(fd)
        finally:
            self.ops.close(fd)

    # ------------------------------------------------------------------ segments

    def _create_segment(self, first_seq: int) -> None:
        """Create, fsync and publish (dir fsync) a new active segment.

        A failed create or header write (full disk) is undone and leaves the log without an
        active segment (``_fd`` None): the next append tries again. A failed fsync fails the Wal.
        """
        path = os.path.join(self.dir, segment_name(first_seq))
        try:
            fd = self.ops.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND)
        except OSError as e:
            raise write_error(e, f"cannot create WAL segment {path}") from e
        self._fd = fd
        self._segments.append(_Segment(first_seq, path, 0, 0, first_seq - 1))
        try:
            self._write_all(MAGIC)
        except StorageError:
            if self._failed is None:
                self._segments.pop()
                with self._fd_lock:
                    self._fd = None
                try:
                    self.ops.close(fd)
                    self.ops.unlink(path)
                except OSError as e2:  # an empty stray file: recovery reads it as a torn header
                    log.warning("WAL segment could not be removed", extra={"segment": path,
                                                                          "error": str(e2)})
            raise
        self._segments[-1].size = SEGMENT_HEADER_SIZE
        self._fsync(self.ops.fdatasync, fd, path)
        self._fsync(self.ops.fsync_dir, self.dir, self.dir)

    def _fsync(self, fn, target, what: str) -> None:
        try:
            fn(target)
        except OSError as e:
            self._failed = WalFailedError(f"WAL fsync of {what} failed: {e}; the WAL is failed "
                                          f"until restart", retry_after=30.0)
            log.error("WAL fsync failed", extra={"path": what, "error": str(e)})
            raise self._failed from e
        self._stats["syncs"] += 1

    def _check(self) -> None:
        if self._failed is not None:
            raise WalFailedError(f"WAL is failed: {self._failed.message}", retry_after=30.0)
        if self._closed:
            raise ClosedError("WAL is closed")

    def _write_all(self, buf: bytes) -> None:
        """Write ``buf`` to the active segment; on failure truncate back (or fail the Wal)."""
        fd = self._fd
        active = self._segments[-1]
        view = memoryview(buf)
        done = 0
        try:
            while done < len(buf):  # one write() unless the kernel writes short
                n = self.ops.write(fd, view[done:])
                if n <= 0:
                    raise OSError(28, "write returned 0 bytes")
                done += n
        except OSError as e:
            try:
                self.ops.ftruncate(fd, active.size)
            except OSError as e2:
                self._failed = WalFailedError(f"WAL write failed ({e}) and the partial write "
                                              f"could not be removed ({e2})", retry_after=30.0)
                raise self._failed from e
            raise write_error(e, "WAL write failed") from e

    def rotate(self) -> None:
        """Seal the active segment (fsync) and start a new one; no-op if it holds no records."""
        self._check()
        if self._fd is None:  # a creation failed earlier (full disk): try again
            self._create_segment(self.last_seq + 1)
            return
        if self._segments[-1].records == 0:
            return
        self._seal()
        self._create_segment(self.last_seq + 1)
        self._stats["rotations"] += 1

    def _seal(self) -> None:
        active = self._segments[-1]
        self._fsync(self.ops.fdatasync, self._fd, active.path)
        with self._fd_lock:
            fd, self._fd = self._fd, None
        self._close_quietly(fd)

    def _close_quietly(self, fd: int) -> None:
        """close() after the data is fsynced (or was never written): an error changes nothing."""
        try:
            self.ops.close(fd)
        except OSError as e:
            log.warning("WAL close failed", extra={"error": str(e)})

    def advance(self, next_seq: int) -> None:
        """Make the next appended record get a seq of at least ``next_seq``.

        Used when the engine knows of sequence numbers the log does not (e.g. an emptied WAL
        directory next to flushed segments): a new segment named ``next_seq`` is started.
        """
        self._check()
        if next_seq <= self.last_seq + 1:
            return
        active = self._segments[-1] if self._fd is not None else None
        if active is None:
            pass
        elif active.records == 0:
            with self._fd_lock:
                fd, self._fd = self._fd, None
            self._close_quietly(fd)
            self._segments.pop()
            try:
                self.ops.unlink(active.path)
            except OSError as e:  # an empty segment below next_seq is valid: keep it
                log.warning("WAL empty segment not removed", extra={"error": str(e)})
        else:
            self._seal()
        self.last_seq = next_seq - 1
        self._create_segment(next_seq)

    # ------------------------------------------------------------------ public operations

    @property
    def failed(self) -> bool:
        """True once an fsync (or an unrepairable write) failed; the Wal then refuses work."""
        return self._failed is not None

    def fits_active(self, nbytes: int) -> bool:
        """Whether ``nbytes`` more of records would go to the active segment (no rotation)."""
        if not self._segments or self._fd is None:
            return False
        active = self._segments[-1]
        return not (active.records and active.size + nbytes + 64 > self.segment_max_bytes)

    def append(self, payloads: list[bytes]) -> int:
        """Append a group of records with one ``write()``; they get consecutive seqs.

        Not durable until :meth:`sync`. Moves to a new segment first when the active one holds
        records and the group would take it over ``segment_max_bytes``.

        Args:
            payloads: record payloads, in order.

        Returns:
            The seq of the last record appended (``last_seq`` unchanged for an empty group).

        Raises:
            StorageError: the write failed (nothing of the group is in the log) or the Wal is
                failed.
        """
        self._check()
        if not payloads:
            return self.last_seq
        if self._fd is None:  # no active segment: its creation failed (full disk); retry
            self._create_segment(self.last_seq + 1)
        seq0 = self.last_seq + 1
        buf = b"".join([frame(seq0 + i, p) for i, p in enumerate(payloads)])
        active = self._segments[-1]
        if active.records and active.size + len(buf) > self.segment_max_bytes:
            self.rotate()
            active = self._segments[-1]
        self._write_all(buf)
        active.size += len(buf)
        active.records += len(payloads)
        self.last_seq = active.last_seq = seq0 + len(payloads) - 1
        st = self._stats
        st["appends"] += 1
        st["records_appended"] += len(payloads)
        st["bytes_appended"] += len(buf)
        return self.last_seq

    def sync(self) -> None:
        """fdatasync the active segment. The first failure fails the Wal for good.

        Safe to call while another thread appends (see :meth:`sync_detached`).

        Raises:
            StorageError: the fsync failed now or earlier.
        """
        self.sync_detached()

    def sync_detached(self) -> None:
        """:meth:`sync` that may run while another thread appends (the periodic fsync).

        fdatasyncs a duplicate of the active segment's descriptor, so appends (and a rotation,
        which fsyncs the segment it seals itself) need not wait for a slow disk. Everything
        written before the call is durable when it returns. The first failure fails the Wal.
        """
        with self._fd_lock:
            self._check()
            if self._fd is None:  # no active segment: everything written was fsynced when sealed
                return
            fd = os.dup(self._fd)
            path = self._segments[-1].path
        try:
            self._fsync(self.ops.fdatasync, fd, path)
        finally:
            os.close(fd)

    def replay(self, after_seq: int = 0) -> Iterator[tuple[int, bytes]]:
        """Yield ``(seq, payload)`` of every valid record with ``seq > after_seq``, in order.

        Each segment is re-read and re-verified; a record that fails verification ends that
        segment's records (nothing corrupt is ever returned).
        """
        segs = list(self._segments)
        for i, seg in enumerate(segs):
            if seg.last_seq <= after_seq or seg.records == 0:
                continue
            try:
                with open(seg.path, "rb") as f:
                    data = f.read()
            except FileNotFoundError:
                log.warning("WAL segment vanished during replay", extra={"segment": seg.path})
                continue
            scan = scan_segment(data, seg.first_seq, is_last=i == len(segs) - 1)
            mv = memoryview(data)
            for seq, start, end in scan.records:
                if seq > after_seq:
                    yield seq, bytes(mv[start:end])

    def checkpoint(self, upto_seq: int, *, retention_secs: float | None,
                   now: float) -> list[str]:
        """Delete sealed segments whose records are all ``<= upto_seq`` and old enough.

        Args:
            upto_seq: every record up to this seq is safely in published segments.
            retention_secs: keep WAL files at least this long after their last write
                (``None``: keep forever; ``0``: delete as soon as covered).
            now: current wall-clock time (``time.time()``), compared with file mtimes.

        Returns:
            Paths of the removed segments.

        Raises:
            StorageError: a deletion or the directory fsync failed (the latter fails the Wal).
        """
        if retention_secs is None or self._closed:
            return []
        removed: list[_Segment] = []
        error: OSError | None = None
        for seg in self._segments[:-1]:  # the active segment is never removed
            if seg.last_seq > upto_seq or seg.damaged:
                continue
            try:
                if retention_secs > 0 and now - os.stat(seg.path).st_mtime < retention_secs:
                    continue
                self.ops.unlink(seg.path)
            except FileNotFoundError:
                pass
            except OSError as e:
                error = e
                break
            removed.append(seg)
        if removed:
            self._segments = [s for s in self._segments if s not in removed]
            self._stats["segments_removed"] += len(removed)
            self._fsync(self.ops.fsync_dir, self.dir, self.dir)
            log.info("WAL checkpoint", extra={"upto_seq": upto_seq, "removed": len(removed)})
        if error is not None:
            raise StorageError(f"WAL checkpoint could not remove a segment: {error}") from error
        return [s.path for s in removed]

    def note_unavailable(self, error: str | None, *, new_episode: bool = False,
                         refused: int = 0) -> None:
        """The writer's account of a full-disk / I/O-error episode, shown by :meth:`statistics`."""
        self._unavailable = error
        self._stats["unavailable_episodes"] += int(new_episode)
        self._stats["rejected_unavailable"] += refused

    def statistics(self) -> dict:
        """Counters and sizes: segments, bytes, first_seq, last_seq, appends, syncs, failed..."""
        segs = self._segments
        return {
            "segments": len(segs),
            "bytes": sum(s.size for s in segs),
            "first_seq": segs[0].first_seq if segs else self.last_seq + 1,
            "last_seq": self.last_seq,
            "active_segment": segs[-1].path if segs else None,
            "active_bytes": segs[-1].size if segs else 0,
            "failed": self.failed,
            "error": None if self._failed is None else self._failed.message,
            "unavailable": self._unavailable,
            **self._stats,
        }

    def close(self) -> None:
        """Close the active segment (no fsync: call :meth:`sync` first). Idempotent."""
        self._closed = True
        with self._fd_lock:
            fd, self._fd = self._fd, None
            if fd is not None:
                try:
                    self.ops.close(fd)
                except OSError as e:  # nothing useful left to do with it
                    log.warning("WAL close failed", extra={"error": str(e)})
