"""The manifest: which segment files make up the database, and how far the WAL is flushed.

Format and recovery rules are in ``docs/format/manifest.md``. In short: every commit writes a new
generation ``MANIFEST-<version>`` (tmp, fsync, rename, fsync dir) and keeps the previous one as a
fallback, so a crash at any point leaves the old or the new state on disk, never neither.

``Manifest.load`` also cleans up after crashes: segment files that no manifest references (a
crash between a segment's rename and the commit that adds it) are deleted, because their data is
still in the WAL (``flushed_seq`` advances in that same commit) or still in the compaction inputs
the manifest references; ``*.tmp`` files are deleted too. That sweep runs only at load, before
any writer starts, because a running flush has renamed-but-uncommitted files.

All methods do blocking I/O: callers in the event loop run them in a thread
(worker threads). Commits are serialised by a lock.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
import zlib
from collections.abc import Iterable, Mapping
from pathlib import Path

import attrs

from rusts.errors import CorruptionError, StorageError
from rusts.storage.fsutil import fsync_dir as _fsync_dir

FORMAT = 1
_NAME_RE = re.compile(r"^MANIFEST-(\d{12})$")
_SEG_RE = re.compile(r"^p(-?\d+)-(\d+)\.seg$")


@attrs.frozen
class SegmentMeta:
    """One segment file as the manifest knows it. ``file`` is relative to ``data_dir/segments``."""

    file: str
    partition: int
    min_time: int
    max_time: int
    size: int
    series_count: int
    point_count: int
    level: int = 0
    tier: str = "hot"
    created: float = 0.0

    def to_json(self) -> dict:
        return attrs.asdict(self)

    @classmethod
    def from_json(cls, d: Mapping) -> "SegmentMeta":
        return cls(file=str(d["file"]), partition=int(d["partition"]), min_time=int(d["min_time"]),
                   max_time=int(d["max_time"]), size=int(d["size"]),
                   series_count=int(d["series_count"]), point_count=int(d["point_count"]),
                   level=int(d.get("level", 0)), tier=str(d.get("tier", "hot")),
                   created=float(d.get("created", 0.0)))


@attrs.frozen
class ManifestState:
    """An immutable snapshot of the manifest."""

    version: int
    segments: tuple[SegmentMeta, ...]
    flushed_seq: int
    extra: Mapping = attrs.field(factory=dict)
    #: the first of the two generations of a commit that must survive a fallback; the second
    #: (identical, without the flag) was not written yet when this one was read
    copy_pending: bool = False



def _serialise(state: ManifestState) -> bytes:
    body = {"format": FORMAT, "version": state.version, "flushed_seq": state.flushed_seq,
            "segments": [s.to_json() for s in state.segments], "extra": state.extra}
    if state.copy_pending:
        body["copy_pending"] = True
    try:
        text = json.dumps(body, separators=(",", ":"), allow_nan=False).encode()
    except (TypeError, ValueError) as e:
        raise StorageError(f"manifest state is not JSON-serialisable: {e}") from e
    return text + b"\ncrc32=%08x\n" % zlib.crc32(text)


def _parse(data: bytes, path: Path) -> ManifestState:
    cut = data.rfind(b"\ncrc32=")
    if cut < 0 or not data.endswith(b"\n") or len(data) - cut != 16:
        raise CorruptionError(f"manifest {path} has no checksum line (truncated?)", path=str(path))
    text = data[:cut]
    try:
        want = int(data[cut + 7:cut + 15], 16)
    except ValueError:
        raise CorruptionError(f"manifest {path} has a malformed checksum", path=str(path)) from None
    if zlib.crc32(text) != want:
        raise CorruptionError(f"manifest {path} fails its CRC", path=str(path))
    try:
        body = json.loads(text)
        if body.get("format") != FORMAT:
            raise CorruptionError(f"manifest {path} has unknown format {body.get('format')!r}",
                                  path=str(path))
        return ManifestState(version=int(body["version"]),
                             segments=tuple(SegmentMeta.from_json(s) for s in body["segments"]),
                             flushed_seq=int(body["flushed_seq"]), extra=dict(body.get("extra") or {}),
                             copy_pending=body.get("copy_pending") is True)
    except CorruptionError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise CorruptionError(f"manifest {path} is malformed: {e}", path=str(path)) from e


def _unique_path(directory: Path, name: str) -> Path:
    p = directory / name
    n = 1
    while p.exists():
        p = directory / f"{name}.{n}"
        n += 1
    return p


class Manifest:
    """The manifest of one data directory. Create with :meth:`load`."""

    def __init__(self, data_dir: Path, state: ManifestState) -> None:
        self.data_dir = data_dir
        self.segments_dir = data_dir / "segments"
        self.quarantine_dir = data_dir / "quarantine"
        self.state = state
        self._lock = threading.Lock()
        self._next_file = 1 + max((_file_number(s.file) for s in state.segments), default=0)

    # ------------------------------------------------------------------ load
    @classmethod
    def load(cls, data_dir: str | os.PathLike) -> tuple["Manifest", list[str]]:
        """Open (or create) the manifest of ``data_dir`` and clean up after a crash.

        Returns the manifest and the problems found and fixed (human-readable). Raises
        :class:`CorruptionError` when no valid manifest exists but segment files do.
        """
        data_dir = Path(data_dir)
        segments_dir = data_dir / "segments"
        quarantine_dir = data_dir / "quarantine"
        segments_dir.mkdir(parents=True, exist_ok=True)
        problems: list[str] = []

        for p in [*data_dir.glob("MANIFEST-*.tmp"), *segments_dir.glob("*.tmp")]:
            if p.is_file():
                p.unlink()
                problems.append(f"removed leftover temporary file {p}")

        gens = sorted(((int(m.group(1)), p) for p in data_dir.iterdir()
                       if (m := _NAME_RE.match(p.name))), reverse=True)
        seg_files = sorted(p.name for p in segments_dir.iterdir() if p.name.endswith(".seg"))

        if not gens:
            if seg_files:
                raise CorruptionError(
                    f"no manifest in {data_dir} but {len(seg_files)} segment files exist in "
                    f"{segments_dir}; refusing to start (restore the MANIFEST-* file or move the "
                    "segments away)", path=str(data_dir))
            m = cls(data_dir, ManifestState(0, (), 0, {}))
            m._write(m.state)
            return m, problems

        state = None
        fell_back = False
        for gen, path in gens:
            try:
                state = _parse(path.read_bytes(), path)
                if state.version != gen:
                    raise CorruptionError(f"manifest {path} holds version {state.version}",
                                          path=str(path))
                break
            except CorruptionError as e:
                quarantine_dir.mkdir(exist_ok=True)
                dest = _unique_path(quarantine_dir, path.name)
                os.replace(path, dest)
                problems.append(f"{e}; moved to {dest}, falling back to the previous generation")
                fell_back = True
        if state is None:
            raise CorruptionError(f"no valid manifest generation in {data_dir} (damaged files "
                                  f"moved to {quarantine_dir})", path=str(data_dir))

        m = cls(data_dir, state)
        # the next generation must be above every name seen, including quarantined ones
        top = gens[0][0]
        if state.copy_pending and not fell_back:
            # complete the pair before sweeping: until then the older generation may still name
            # files the newest has replaced (the inputs of a compaction)
            problems.append(f"manifest generation {state.version} was the first of a pair (a crash "
                            "between its two writes); wrote its copy")
            top += 1
            state = attrs.evolve(state, version=top, copy_pending=False)
            m._commit_state(state)
        referenced = {s.file for s in state.segments}
        for name in seg_files:
            if name in referenced:
                continue
            p = segments_dir / name
            if fell_back:
                quarantine_dir.mkdir(exist_ok=True)
                dest = _unique_path(quarantine_dir, name)
                os.replace(p, dest)
                problems.append(f"segment {name} is not in the fallback manifest; moved to {dest}")
            else:
                p.unlink()
                problems.append(f"removed orphan segment {name} (not in the manifest: a flush or "
                                "compaction that did not commit; a compaction's data is still in its "
                                "inputs, a flush's in the WAL, except in WAL mode none, where points "
                                "not yet flushed are lost in a crash)")
            m._next_file = max(m._next_file, _file_number(name) + 1)
        present = set(seg_files)
        missing = [s for s in state.segments if s.file not in present]
        for s in missing:
            problems.append(f"segment {s.file} is in the manifest but missing on disk "
                            f"({s.point_count} points lost); removed from the manifest")
        if missing or fell_back:
            gone = {s.file for s in missing}
            fixed = ManifestState(top + 1, tuple(s for s in state.segments if s.file not in gone),
                                  state.flushed_seq, state.extra)
            if fell_back:  # the damaged generation is gone: two good ones again, as after a commit
                m._commit_state(attrs.evolve(fixed, copy_pending=True))
                fixed = attrs.evolve(fixed, version=top + 2)
            m._commit_state(fixed)
        _fsync_dir(segments_dir)
        return m, problems

    # ------------------------------------------------------------------ commit
    def commit(self, *, add: Iterable[SegmentMeta] = (), remove: Iterable[SegmentMeta | str] = (),
               flushed_seq: int | None = None, extra: Mapping | None = None,
               survive_fallback: bool = False) -> ManifestState:
        """Atomically publish a new state: ``remove`` (metas or file names) out, ``add`` in.

        ``flushed_seq`` / ``extra`` replace the current values when given. Raises
        :class:`StorageError` (state unchanged) if a file to remove is absent, a file to add is
        already present, or the write fails.

        ``survive_fallback`` (a delete's tombstone; a commit after which files are unlinked:
        compaction, retention, quarantine): the state is written as two consecutive
        generations, so that the generation a load falls back to when the newest is damaged
        holds it too (``docs/format/manifest.md``). If only the second write fails, the commit
        has happened (the first is durable, flagged ``copy_pending``) and is returned; the next
        commit, or the next load, restores the pair.
        """
        add = tuple(add)
        remove_names = {r if isinstance(r, str) else r.file for r in remove}
        with self._lock:
            cur = self.state
            have = {s.file for s in cur.segments}
            absent = remove_names - have
            if absent:
                raise StorageError(f"cannot remove segments not in the manifest: {sorted(absent)}")
            kept = [s for s in cur.segments if s.file not in remove_names]
            kept_names = {s.file for s in kept}
            for s in add:
                if s.file in kept_names:
                    raise StorageError(f"segment {s.file} is already in the manifest")
                kept_names.add(s.file)
            new = ManifestState(
                version=cur.version + 1, segments=tuple(kept) + add,
                flushed_seq=cur.flushed_seq if flushed_seq is None else int(flushed_seq),
                extra=cur.extra if extra is None else dict(extra))
            if survive_fallback:
                first = attrs.evolve(new, copy_pending=True)
                self._commit_state(first)
                try:
                    self._commit_state(attrs.evolve(new, version=new.version + 1))
                except StorageError:
                    return first
            else:
                self._commit_state(new)
            return self.state

    def _commit_state(self, new: ManifestState) -> None:
        self._write(new)
        self.state = new
        # keep the generation just replaced as a fallback, drop older ones
        for p in self.data_dir.iterdir():
            m = _NAME_RE.match(p.name)
            if m and int(m.group(1)) < new.version - 1:
                try:
                    p.unlink()
                except FileNotFoundError:
                    pass

    def _write(self, state: ManifestState) -> None:
        data = _serialise(state)
        final = self.data_dir / f"MANIFEST-{state.version:012d}"
        tmp = final.with_name(final.name + ".tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                view = memoryview(data)
                while view:
                    n = os.write(fd, view)
                    view = view[n:]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, final)
            _fsync_dir(self.data_dir)
        except OSError as e:
            try:
                tmp.unlink()
            except OSError:
                pass
            raise StorageError(f"cannot write manifest {final}: {e}") from e

    # ------------------------------------------------------------------ files
    def new_segment_path(self, partition: int) -> tuple[str, str]:
        """A fresh segment file name for ``partition``: (name relative to segments/, absolute path)."""
        with self._lock:
            while True:
                n = self._next_file
                self._next_file += 1
                name = f"p{int(partition)}-{n:08d}.seg"
                path = self.segments_dir / name
                if not path.exists() and not path.with_name(name + ".tmp").exists():
                    return name, str(path)

    def path_of(self, meta: SegmentMeta | str) -> Path:
        """Absolute path of a segment."""
        return self.segments_dir / (meta if isinstance(meta, str) else meta.file)

    def quarantine(self, meta: SegmentMeta, reason: str) -> str:
        """Move a damaged segment to ``data_dir/quarantine/``, drop it from the manifest (commit).

        Returns the new path. The reason is written next to it as ``<name>.reason``.
        """
        self.quarantine_dir.mkdir(exist_ok=True)
        src = self.path_of(meta)
        dest = _unique_path(self.quarantine_dir, Path(meta.file).name)
        try:
            os.replace(src, dest)
        except FileNotFoundError:
            pass
        except OSError as e:
            raise StorageError(f"cannot move {src} to quarantine: {e}") from e
        try:
            with open(str(dest) + ".reason", "w", encoding="utf-8") as f:
                f.write(f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} {reason}\n")
        except OSError:
            pass
        _fsync_dir(self.quarantine_dir)
        if any(s.file == meta.file for s in self.state.segments):
            self.commit(remove=[meta.file], survive_fallback=True)
        return str(dest)


def _file_number(name: str) -> int:
    m = _SEG_RE.match(Path(name).name)
    return int(m.group(2)) if m else 0
