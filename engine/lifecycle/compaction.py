"""Compaction: planning (pure) and the worker that rewrites segments (sync, run in a thread).

Design (user-level story in ``docs/lifecycle.md``):

* **Unit of work = one partition.** A :class:`CompactionTask` rewrites segments of one time
  partition into one (or a few, when very large) new segments: merged per series, sorted,
  deduplicated (last write wins), tombstones and retention applied, re-encoded for its tier.
* **Two kinds of tasks.** A *whole* task takes every live segment of the partition; it may apply
  tombstones physically, re-encode to the cold tier and drop expired rows. A *run* task merges a
  contiguous run (in data-age order) of same-level segments into one segment of the next level
  (size-tiered, fan-in ``max_segments``): it applies retention but never tombstones, because a
  field predicate must be evaluated on every older source of the partition. Inputs of a run are
  contiguous in age so the output can take their place in the last-write-wins order.
* **Triggers** (one task per partition per plan, checked in this order): a tombstone applies to a
  segment and meets its time range -> whole "tombstone"; some measurement of a segment is wholly
  expired in the partition but the segment is not (it holds other measurements) -> whole
  "retention"; the partition is older than ``cold_after`` and not one cold segment -> whole
  "tier" (output cold); more than ``3 * max_segments`` segments, or the partition ended more than
  ``settle_ns`` ago with several segments -> whole "merge"; otherwise a run of ``max_segments``
  same-level segments -> run "merge".
* **Bound.** A partition being written holds at most ``3 * max_segments`` segments after a
  compaction pass (12 by default); a partition no longer written is merged to one segment.
* **Memory bounded.** :func:`run_compaction` streams series by series into
  :func:`rusts.storage.segment.write_segment`: one series of all inputs is in memory at a time.
* **Crash safety** comes from the order: write new files (atomic rename), one manifest commit that
  adds the new and removes the old, then unlink the old. A crash before the commit leaves orphan
  new files that ``Manifest.load`` deletes; after it, orphan old files that it deletes.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence

import attrs
import numpy as np

from rusts.errors import StorageError
from rusts.storage.manifest import Manifest, SegmentMeta
from rusts.model import parse_series_key
from rusts.lifecycle.policies import cutoff_for, segment_expired
from rusts.query.rowset import RowSet
from rusts.storage.segment import SegmentInfo, SegmentReader, SeriesData, write_segment
from rusts.lifecycle.tombstones import LifecycleState, Tombstone, TombstoneSet, merge_with_tombstones

MAX_TIME = 2**63 - 1
COLD_COMPRESSION = "best"
COLD_BLOCK_ROWS = 16384
COLD_STATS_INTERVAL_NS = 3_600_000_000_000  # sub-block statistics of cold blocks, without block_time_ns
REASONS = ("tombstone", "retention", "tier", "merge")

Contents = Callable[[SegmentMeta], Mapping[str, tuple[int, int]]]


@attrs.frozen
class CompactionTask:
    """Rewrite ``inputs`` (segments of ``partition``, oldest data first) into tier ``tier``.

    ``whole`` is True when the inputs are every live segment of the partition (tombstones may then
    be applied physically); ``level`` is the level of the output.
    """

    partition: int
    inputs: tuple[SegmentMeta, ...]
    tier: str
    reason: str
    level: int = 1
    whole: bool = True


# ------------------------------------------------------------------------------------ planning
def _touched_by_tombstone(meta: SegmentMeta, seq: int, stones: Sequence[Tombstone],
                          contents: Contents | None) -> bool:
    for t in stones:
        if not (t.applies_to_seq(seq) and t.overlaps(meta.min_time, meta.max_time)):
            continue
        if contents is None:
            return True
        rng = contents(meta).get(t.measurement)
        if rng is not None and t.overlaps(rng[0], rng[1]):
            return True
    return False


def _partly_expired(meta: SegmentMeta, part_end: int, cutoffs: Mapping[str, int],
                    contents: Contents | None) -> bool:
    """Some measurement in the segment is wholly expired (cutoff past the partition end)."""
    if not cutoffs or contents is None:
        return False
    for m in contents(meta):
        c = cutoff_for(cutoffs, m)
        if c is not None and c >= part_end:
            return True
    return False


def plan(metas: Sequence[SegmentMeta], *, now_ns: int, partition_ns: int, max_segments: int = 4,
         cold_after_ns: int | None = None, tombstones: Sequence[Tombstone] = (),
         retention_cutoffs: Mapping[str, int] | None = None, seq_of: Callable[[SegmentMeta], int] | None = None,
         contents: Contents | None = None, settle_ns: int | None = None,
         cold_idle_secs: float = 0.0, now_wall: float | None = None) -> list[CompactionTask]:
    """Decide which partitions to rewrite. Pure: same input, same tasks.

    Args:
        metas: live segments (manifest order).
        now_ns: current time (ns).
        partition_ns: partition duration.
        max_segments: fan-in of run merges; a written partition keeps at most ``3 *
            max_segments`` segments.
        cold_after_ns: partitions that ended longer ago than this go to the cold tier (None: never).
        tombstones: live tombstones.
        retention_cutoffs: measurement (or "*") -> cutoff ns (:func:`rusts.lifecycle.policies.cutoffs`).
        seq_of: data sequence of a segment (required with tombstones); also the age order.
        contents: measurement -> (min, max time) of a segment, for exact tombstone/retention
            decisions (:func:`rusts.lifecycle.policies.measurement_ranges`); None is conservative.
        settle_ns: a partition that ended longer ago than this is merged to one segment
            (default: ``partition_ns // 24``).
        cold_idle_secs: a partition old enough for the cold tier goes there only once its newest
            flushed (level 0) segment is this old (wall clock, ``SegmentMeta.created``): cold for
            writes. Until then it is not merged either (one rewrite, into the cold tier, later).
        now_wall: the wall clock in seconds (default: ``time.time()``).

    Returns:
        At most one task per partition, tombstone/retention tasks first, then merges, then tiering.
    """
    if tombstones and seq_of is None:
        raise StorageError("plan: seq_of is required when tombstones are given")
    if max_segments < 2:
        raise StorageError(f"max_segments must be >= 2, got {max_segments}")
    seq = seq_of or (lambda m: 0)
    cutoffs = retention_cutoffs or {}
    settle = partition_ns // 24 if settle_ns is None else settle_ns
    if now_wall is None:
        import time

        now_wall = time.time()
    by_part: dict[int, list[tuple[int, int, SegmentMeta]]] = {}
    for i, m in enumerate(metas):
        by_part.setdefault(m.partition, []).append((seq(m), i, m))
    tasks: list[CompactionTask] = []
    for part in sorted(by_part):
        segs = [m for _, _, m in sorted(by_part[part], key=lambda x: (x[0], x[1]))]
        # wholly expired segments belong to the retention sweeper (dropped as files)
        segs = [m for m in segs if not segment_expired(m, cutoffs, contents)]
        if not segs:
            continue
        part_end = (part + 1) * partition_ns
        old = cold_after_ns is not None and part_end <= now_ns - cold_after_ns
        written = cold_idle_secs > 0 and any(m.level == 0 and m.created > now_wall - cold_idle_secs for m in segs)
        cold = old and not written
        tier = "cold" if cold else "hot"
        top = max(m.level for m in segs)
        whole_level = top + 1 if len(segs) > 1 else top
        reason = None
        if tombstones and any(_touched_by_tombstone(m, seq(m), tombstones, contents) for m in segs):
            reason = "tombstone"
        elif any(_partly_expired(m, part_end, cutoffs, contents) for m in segs):
            reason = "retention"
        elif cold and (len(segs) > 1 or segs[0].tier != "cold"):
            reason = "tier"
        elif len(segs) > 3 * max_segments or (len(segs) > 1 and part_end <= now_ns - settle and not old):
            reason = "merge"
        if reason is not None:
            if not cold and reason in ("tombstone", "retention") and all(m.tier == "cold" for m in segs):
                tier = "cold"  # keep a cold partition cold when rewriting it for other reasons
            tasks.append(CompactionTask(part, tuple(segs), tier, reason, whole_level, True))
            continue
        run = _run_to_merge(segs, max_segments)
        if run is not None:
            lvl = run[0].level + 1
            tasks.append(CompactionTask(part, tuple(run), "hot", "merge", lvl, False))
    order = {r: i for i, r in enumerate(("tombstone", "retention", "merge", "tier"))}
    tasks.sort(key=lambda t: order[t.reason])
    return tasks


def _run_to_merge(segs: Sequence[SegmentMeta], fan_in: int) -> list[SegmentMeta] | None:
    """The lowest-level contiguous run of >= ``fan_in`` same-level segments (first such run)."""
    best: list[SegmentMeta] | None = None
    i = 0
    while i < len(segs):
        j = i
        while j < len(segs) and segs[j].level == segs[i].level:
            j += 1
        if j - i >= fan_in and (best is None or segs[i].level < best[0].level):
            best = list(segs[i:j])
        i = j
    return best


# ------------------------------------------------------------------------------------ executing
@attrs.frozen
class CompactionResult:
    """What :func:`run_compaction` wrote and removed."""

    outputs: tuple[tuple[str, SegmentInfo], ...]  # (name relative to segments/, info)
    output_seq: int
    points_in: int
    points_out: int
    values_out: int
    rows_tombstoned: int
    rows_expired: int
    seconds: float

    @property
    def segments(self) -> list[SegmentInfo]:
        return [info for _, info in self.outputs]


def _measurement_of_key(key: str) -> str:
    return parse_series_key(key)[0]


def run_compaction(readers: Sequence[SegmentReader], out_paths: Callable[[], tuple[str, str]], *,
                   tier: str = "hot", compression: str = "default", block_rows: int = 4096,
                   index_measurement_of: Callable[[int], str] | None = None,
                   tombstones: Sequence[Tombstone] = (), retention_cutoffs: Mapping[str, int] | None = None,
                   reader_seqs: Sequence[int] | None = None, max_output_points: int | None = None,
                   cold_compression: str = COLD_COMPRESSION, block_time_ns: int | None = None) -> CompactionResult:
    """Merge ``readers`` (oldest data first) into new segment file(s).

    Args:
        readers: open inputs, oldest data first (later ones win for equal timestamps).
        out_paths: called once per output file: ``(name relative to segments/, absolute path)``.
        tier: "hot" or "cold" (cold: ``cold_compression`` and blocks of >= 16384 rows).
        compression, block_rows: hot settings (storage config).
        block_time_ns: hot blocks never cross a multiple of it (time-aligned blocks, as flushes
            write them); the cold tier favours size and instead keeps per-interval statistics of
            each block (sub-block statistics, ``docs/format/segment.md``) at this interval (one
            hour when None), so bucketed aggregates still need no decoding.
        index_measurement_of: series id -> measurement (the series index); None parses the key.
        tombstones: applied physically (pass them only for whole-partition tasks).
        retention_cutoffs: rows older than the cutoff of their measurement are dropped.
        reader_seqs: data sequence per reader (default all 0 = older than every tombstone).
        max_output_points: start a new output file beyond this many points (None: one file).

    Returns:
        :class:`CompactionResult`; ``output_seq`` is the data sequence of the outputs. No file is
        written when nothing survives. On error every output written so far is deleted.
    """
    t0 = time.perf_counter()
    stats_interval_ns = None
    if tier == "cold":
        compression, block_rows = cold_compression, max(block_rows, COLD_BLOCK_ROWS)
        stats_interval_ns = block_time_ns or COLD_STATS_INTERVAL_NS
        block_time_ns = None
    seqs = [0] * len(readers) if reader_seqs is None else [int(s) for s in reader_seqs]
    if len(seqs) != len(readers):
        raise StorageError("run_compaction: one sequence per reader is required")
    stones = TombstoneSet(tombstones)
    cutoffs = retention_cutoffs or {}
    output_seq = max([*seqs, *(t.created_seq for t in stones.stones)], default=0)
    counters = {"in": 0, "tomb": 0, "exp": 0}

    ids = [np.asarray(r.series_ids, dtype=np.uint64) for r in readers]
    all_sids = np.unique(np.concatenate(ids)) if ids else np.zeros(0, dtype=np.uint64)
    present = [np.isin(all_sids, a, assume_unique=True) for a in ids]

    def measurement(sid: int, key: str) -> str:
        if index_measurement_of is not None:
            try:
                m = index_measurement_of(sid)
                if m:
                    return m
            except (KeyError, LookupError):
                pass
        return _measurement_of_key(key)

    def series() -> Iterator[SeriesData]:
        for k, sid in enumerate(all_sids.tolist()):
            parts: list[tuple[RowSet, int]] = []
            key = None
            for r, pres, s in zip(readers, present, seqs):
                if not pres[k]:
                    continue
                ts, cols = r.read(sid)
                if len(ts):
                    parts.append((RowSet(ts, cols, True), s))
                    counters["in"] += len(ts)
                key = key or r.series_key(sid)
            if not parts:
                continue
            need_m = bool(stones) or bool(cutoffs)
            m = measurement(sid, key) if need_m else ""
            cand = stones.for_series(m, sid) if stones else ()
            rs, dead = merge_with_tombstones(sid, parts, cand)
            counters["tomb"] += dead
            if cutoffs and len(rs):
                c = cutoff_for(cutoffs, m)
                if c is not None and int(rs.timestamps[0]) < c:
                    n0 = len(rs)
                    rs = rs.slice_time(c, MAX_TIME) if c <= MAX_TIME else RowSet(rs.timestamps[:0], {}, True)
                    counters["exp"] += n0 - len(rs)
            if len(rs):
                yield SeriesData(sid, key, rs.timestamps, dict(rs.columns))

    outputs: list[tuple[str, SegmentInfo]] = []
    stream = series()
    try:
        pending = next(stream, None)
        while pending is not None:
            first = pending

            def chunk() -> Iterator[SeriesData]:
                nonlocal pending
                n = 0
                yield first
                n += len(first)
                for s in stream:
                    if max_output_points is not None and n >= max_output_points:
                        pending = s
                        return
                    yield s
                    n += len(s)
                pending = None

            name, path = out_paths()
            info = write_segment(path, chunk(), compression=compression, tier=tier, block_rows=block_rows,
                                 block_time_ns=block_time_ns, stats_interval_ns=stats_interval_ns)
            outputs.append((name, info))
    except BaseException:
        for _, info in outputs:
            try:
                os.unlink(info.path)
            except OSError:
                pass
        raise
    return CompactionResult(
        outputs=tuple(outputs), output_seq=output_seq, points_in=counters["in"],
        points_out=sum(i.point_count for _, i in outputs), values_out=sum(i.value_count for _, i in outputs),
        rows_tombstoned=counters["tomb"], rows_expired=counters["exp"], seconds=time.perf_counter() - t0)


# ------------------------------------------------------------------- reference task execution
@attrs.frozen
class Outcome:
    """A committed compaction: metas added and removed, the counters."""

    added: tuple[SegmentMeta, ...]
    removed: tuple[SegmentMeta, ...]
    result: CompactionResult


def metas_for(task: CompactionTask, result: CompactionResult, *, created: float | None = None) -> tuple[SegmentMeta, ...]:
    """Manifest entries for the outputs of ``task``."""
    now = time.time() if created is None else created
    return tuple(SegmentMeta(file=name, partition=task.partition, min_time=info.min_time, max_time=info.max_time,
                             size=info.size, series_count=info.series_count, point_count=info.point_count,
                             level=task.level, tier=task.tier, created=now)
                 for name, info in result.outputs)


def compact_and_commit(manifest: Manifest, task: CompactionTask, *, readers: Mapping[str, SegmentReader] | None = None,
                       index_measurement_of: Callable[[int], str] | None = None,
                       retention_cutoffs: Mapping[str, int] | None = None, compression: str = "default",
                       block_rows: int = 4096, max_output_points: int | None = None,
                       block_time_ns: int | None = None) -> Outcome:
    """Run ``task`` against ``manifest`` up to and including the commit (blocking; call in a thread).

    Steps: open the inputs (or use ``readers``), write the outputs, commit once (add the new,
    remove the old, update the lifecycle state in ``extra``). Unlinking the old files is left to
    the caller (:func:`delete_segment_files`), once no query holds their readers. The caller must
    serialise manifest commits (the segment keeper does): the ``extra`` is derived from the
    state read here.

    Raises:
        StorageError: an input is no longer live (the outputs are deleted, nothing committed).
    """
    live = {m.file for m in manifest.state.segments}
    gone = [m.file for m in task.inputs if m.file not in live]
    if gone:
        raise StorageError(f"compaction inputs are no longer live: {gone}")
    ls = LifecycleState.from_extra(manifest.state.extra)
    opened: list[SegmentReader] = []
    rs: list[SegmentReader] = []
    try:
        for m in task.inputs:
            r = readers.get(m.file) if readers is not None else None
            if r is None:
                r = SegmentReader.open(manifest.path_of(m))
                opened.append(r)
            rs.append(r)
        result = run_compaction(
            rs, lambda: manifest.new_segment_path(task.partition), tier=task.tier, compression=compression,
            block_rows=block_rows, index_measurement_of=index_measurement_of,
            tombstones=ls.tombstones if task.whole else (), retention_cutoffs=retention_cutoffs,
            reader_seqs=[ls.seq_of(m) for m in task.inputs], max_output_points=max_output_points,
            block_time_ns=block_time_ns)
    finally:
        for r in opened:
            r.close()
    return commit_compaction(manifest, task, result)


def compact_files(paths: Sequence[str], out: tuple[str, str], **kwargs) -> CompactionResult:
    """:func:`run_compaction` over segment files given by path, into the one output ``out``
    (``(name, absolute path)``). Pure file work (no manifest, no index): the compactor runs it in
    the worker process (:mod:`rusts.storage.flushproc`) so that merging and encoding thousands of series
    never holds the server's GIL. Measurements come from the series keys."""
    readers = [SegmentReader.open(p) for p in paths]
    given = []

    def out_paths():
        if given:
            raise StorageError("compact_files writes one output")
        given.append(out)
        return out

    try:
        return run_compaction(readers, out_paths, index_measurement_of=None, **kwargs)
    finally:
        for r in readers:
            r.close()


def commit_compaction(manifest: Manifest, task: CompactionTask, result: CompactionResult) -> Outcome:
    """Commit the outputs of ``task`` (blocking; run by the segment keeper): replace its
    inputs with them in one manifest commit. If an input is no longer live (a retention sweep or
    a drop ran meanwhile), the outputs are deleted and :class:`StorageError` raised."""
    live = {m.file for m in manifest.state.segments}
    gone = [m.file for m in task.inputs if m.file not in live]
    if gone:
        remove_outputs(result)
        raise StorageError(f"compaction inputs are no longer live: {gone}")
    added = metas_for(task, result)
    try:
        cur = manifest.state
        ls = LifecycleState.from_extra(cur.extra)
        names = {m.file for m in task.inputs}
        live_after = [m for m in cur.segments if m.file not in names] + list(added)
        ls = ls.with_replaced([m.file for m in task.inputs], [m.file for m in added], result.output_seq,
                              live=live_after)
        # two generations: a fallback from a damaged newest one must not name the unlinked inputs
        manifest.commit(add=added, remove=task.inputs, extra=ls.to_extra(cur.extra), survive_fallback=True)
    except BaseException:
        remove_outputs(result)
        raise
    return Outcome(added, tuple(task.inputs), result)


def remove_outputs(result: CompactionResult) -> None:
    """Delete the files of an uncommitted compaction."""
    for _, info in result.outputs:
        try:
            os.unlink(info.path)
        except OSError:
            pass


def delete_segment_files(manifest: Manifest, metas: Sequence[SegmentMeta]) -> list[str]:
    """Unlink replaced segment files (already out of the manifest). Returns the files deleted.

    On POSIX an open reader keeps its mapping valid after the unlink, so a query still holding
    an old reader finishes normally; the disk space is freed when the last reader is dropped.
    """
    live = {m.file for m in manifest.state.segments}
    done = []
    for m in metas:
        if m.file in live:
            raise StorageError(f"refusing to delete live segment {m.file}")
        try:
            os.unlink(manifest.path_of(m))
            done.append(m.file)
        except FileNotFoundError:
            pass
    return done
