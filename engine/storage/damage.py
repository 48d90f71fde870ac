"""Damaged segment blocks: what a query could not read, and what the operator must know.

A segment block whose chunk fails its checks (CRC, count, length) costs only that block: a
query that runs inside :func:`collect_missing` gets the series' other blocks, and the collector
receives one entry per damaged block it skipped (series key, time range, file, reason), which
the protocol edge puts in the answer (HTTP: a ``missing`` key; see docs/RELIABILITY.md). Outside
a collector (compaction, tiering, exports) a damaged block still raises
:class:`~rusts.errors.CorruptionError`, so no background job rewrites a file without the block and
silently forgets the hole: the damaged file stays in place (and keeps being reported) until an
operator acts.

The first time a block is found damaged it is logged (ERROR) and recorded on its reader
(``SegmentReader.damaged``, which ``/stats`` ``problems`` lists), and the first time per file the
whole segment is copied byte-for-byte to the data directory's ``quarantine/`` folder (the live
file keeps serving its good blocks).
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import shutil
import threading
import time
from collections.abc import Iterator

from rusts.query.control import inherit

log = logging.getLogger("rusts.storage.damage")

_COLLECTOR: contextvars.ContextVar[list | None] = contextvars.ContextVar("rusts_missing", default=None)
inherit(_COLLECTOR)  # a query run by a query worker reports to the collector of the task that asked
_LOCK = threading.Lock()
MAX_REPORTED = 100  # entries kept in a query answer (the count is always exact)


@contextlib.contextmanager
def collect_missing() -> Iterator[list[dict]]:
    """Within this block (and worker threads started from it), reads skip damaged blocks and
    the yielded list receives one entry per damaged block skipped, without duplicates."""
    found: list[dict] = []
    token = _COLLECTOR.set(found)
    try:
        yield found
    finally:
        _COLLECTOR.reset(token)


def tolerant() -> bool:
    """Whether the current read may skip a damaged block (a query inside a collector)."""
    return _COLLECTOR.get() is not None


def note(reader, sid: int, block: int, key: str | None, start: int, end: int, reason: str,
         first: bool) -> None:
    """Record a damaged block of ``reader`` (a SegmentReader): in the current query's collector,
    and the first time (``first``) in the log and the quarantine folder (once per file)."""
    entry = {"series": key, "start": int(start), "end": int(end),
             "segment": os.path.basename(reader.path), "block": int(block), "error": reason}
    found = _COLLECTOR.get()
    if found is not None and entry not in found:
        found.append(entry)
    if not first:
        return
    log.error("damaged segment block skipped by queries: %s series %s [%d, %d]: %s",
              entry["segment"], key, start, end, reason)
    with _LOCK:
        copy_needed = not reader.damage_copy
        reader.damage_copy = reader.damage_copy or "(copying)"
    if copy_needed:
        reader.damage_copy = _quarantine_copy(reader.path) or "(copy failed)"


def _quarantine_copy(path: str) -> str | None:
    qdir = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(path))), "quarantine")
    dest = os.path.join(qdir, f"{os.path.basename(path)}.{time.time_ns()}.damaged")
    try:
        os.makedirs(qdir, exist_ok=True)
        shutil.copyfile(path, dest)
    except OSError as e:
        log.error("could not copy damaged segment %s to quarantine: %s", path, e)
        return None
    return dest


def problems(readers) -> list[str]:
    """One line per damaged block the given segment readers met (for ``/stats`` problems)."""
    out = []
    for r in list(readers):
        damaged = getattr(r, "damaged", None)
        if not damaged:
            continue
        copy = os.path.basename(r.damage_copy or "")
        for (sid, blk), reason in sorted(damaged.items()):
            out.append(f"segment {os.path.basename(r.path)} block {blk} of series {r.series_key(sid)} is damaged "
                       f"and skipped by queries (copy in quarantine: {copy}): {reason}")
    return out


def report_missing(entry: dict) -> bool:
    """Add ``entry`` (e.g. a cluster shard with no live owner: ``{"shard": k, "error": ...}``)
    to the current query's collector; False when the query runs outside one."""
    found = _COLLECTOR.get()
    if found is None:
        return False
    found.append(entry)
    return True


def answer_extra(found: list[dict]) -> dict:
    """The keys a JSON answer gets when blocks (or cluster shards) were skipped (empty when none were)."""
    if not found:
        return {}
    shards = sorted({e["shard"] for e in found if "shard" in e})
    blocks = [e for e in found if "shard" not in e]
    out: dict = {"missing": (blocks + [e for e in found if "shard" in e])[:MAX_REPORTED], "warnings": []}
    if blocks:
        out["warnings"].append(f"{len(blocks)} damaged block(s) could not be read; their time ranges are "
                               f"missing from this answer (see 'missing')")
    if shards:  # cluster mode, partial results allowed (docs/cluster.md)
        out["partial"] = True
        out["missing_shards"] = shards
        out["warnings"].append(f"partial answer: shard(s) {', '.join(map(str, shards))} had no live owner; "
                               f"their data is missing from this answer")
    return out


def missing_notice(found: list[dict], limit: int = 10) -> str:
    """The pgwire notice text for skipped blocks: each series and time range missing (the first
    ``limit``; the count is exact), in RFC 3339 and in nanoseconds."""
    def ts(ns: int) -> str:
        sec, frac = divmod(int(ns), 10**9)
        return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec)) + f".{frac:09d}Z"

    shards = sorted({e["shard"] for e in found if "shard" in e})
    found = [e for e in found if "shard" not in e]  # cluster shards are named apart
    parts = [f"{e['series']} from {ts(e['start'])} to {ts(e['end'])} ({e['start']}..{e['end']} ns, "
             f"segment {e['segment']} block {e['block']})" for e in found[:limit]]
    more = f"; and {len(found) - limit} more" if len(found) > limit else ""
    text = (f"{len(found)} damaged block(s) could not be read; these time ranges are missing from "
            f"this answer (inclusive): {'; '.join(parts)}{more}") if found else ""
    if shards:
        text += ("; " if text else "") + (f"partial answer: shard(s) {', '.join(map(str, shards))} had no "
                                           f"live owner; their data is missing from this answer")
    return text
