"""Retention: which data is expired, which segments can be dropped, and the run-time policy store.

Design (user-level story in ``docs/lifecycle.md``):

* **Cutoffs.** A policy keeps ``duration`` of data: rows with ``t < now - duration`` are expired.
  A policy naming a measurement overrides the ``"*"`` policy for it; if several policies name the
  same measurement (or several are ``"*"``), the longest duration wins, so a policy never deletes
  data another policy asks to keep. :func:`cutoffs` always includes every named measurement's
  cutoff, so a caller can never fall back to a shorter ``"*"`` cutoff by forgetting one.
* **Three places apply it.** Queries raise their start to the cutoff at once
  (:func:`query_start`); the sweeper drops segments whose every row is expired as files
  (:func:`expired_partitions`), which is safe per segment because an expired row is invisible
  whichever segment holds it; compaction drops expired rows of the partitions it rewrites.
* **Segments hold several measurements.** Per-segment measurement time ranges
  (:func:`measurement_ranges`, computed once per immutable segment from its footer) make the
  decisions exact; without them only a ``"*"`` policy can expire a segment.
* **Run-time changes persist** in ``data_dir/retention.json`` as an overlay on the configured
  policies (policies set at run time by name, names removed), so an operator's later edit of
  ``rusts.yml`` still takes effect for the policies nobody changed over the API.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

from rusts.config import RetentionPolicy, parse_duration
from rusts.errors import ConfigError, CorruptionError, QueryError, StorageError

NS = 1_000_000_000
FILE_NAME = "retention.json"
FORMAT = 1


# ------------------------------------------------------------------------------------ cutoffs
def effective_policy(policies: Iterable[RetentionPolicy], measurement: str) -> RetentionPolicy | None:
    """The policy governing ``measurement``: a named one over ``"*"``, the longest among equals."""
    named = [p for p in policies if p.measurement == measurement and measurement != "*"]
    pool = named or [p for p in policies if p.measurement == "*"]
    if not pool:
        return None
    return max(pool, key=lambda p: (p.duration, p.name))


def cutoffs(policies: Iterable[RetentionPolicy], now_ns: int, measurements: Iterable[str] = ()) -> dict[str, int]:
    """Measurement -> cutoff (rows with ``t < cutoff`` are expired), plus ``"*"`` when a wildcard
    policy exists. Every measurement a policy names is present, and every one in
    ``measurements`` that a policy governs."""
    pols = list(policies)
    names = {p.measurement for p in pols} | set(measurements)
    out = {}
    for m in sorted(names):
        p = effective_policy(pols, m)
        if p is not None:
            out[m] = int(now_ns) - p.duration_ns
    return out


def cutoff_for(cuts: Mapping[str, int], measurement: str) -> int | None:
    """The cutoff for ``measurement`` (its own, else ``"*"``), or None (kept forever)."""
    c = cuts.get(measurement)
    return cuts.get("*") if c is None else c


def query_start(start: int, measurement: str, cuts: Mapping[str, int]) -> int:
    """The start a query must use so that expired rows are never returned."""
    c = cutoff_for(cuts, measurement)
    return start if c is None else max(start, c)


def cold_after_ns(policies: Iterable[RetentionPolicy], configured_ns: int | None = None) -> int | None:
    """Age after which partitions go cold: the shortest of ``storage.cold_after_hours`` and every
    policy's ``tier_after`` (tiering is per partition, which holds every measurement)."""
    vals = [p.tier_after_ns for p in policies if p.tier_after is not None]
    if configured_ns is not None:
        vals.append(int(configured_ns))
    return min(vals) if vals else None


def measurement_ranges(reader, measurement_of: Callable[[int], str]) -> dict[str, tuple[int, int]]:
    """Measurement -> (min, max timestamp) of its rows in one segment (footer only, no decoding).

    ``measurement_of`` maps a series id to its measurement (the series index). Segments are
    immutable: callers cache the answer per file.
    """
    out: dict[str, tuple[int, int]] = {}
    for sid in reader.series_ids.tolist():
        bt = reader.blocks(sid)
        if not len(bt):
            continue
        lo, hi = int(bt.min_time.min()), int(bt.max_time.max())
        m = measurement_of(sid)
        if m in out:
            a, b = out[m]
            out[m] = (min(a, lo), max(b, hi))
        else:
            out[m] = (lo, hi)
    return out


def segment_expired(meta, cuts: Mapping[str, int],
                    contents: Callable[[object], Mapping[str, tuple[int, int]]] | None = None) -> bool:
    """Every row of the segment is older than the retention cutoff of its measurement."""
    if not cuts:
        return False
    if contents is None:
        return "*" in cuts and meta.max_time < min(cuts.values())
    ranges = contents(meta)
    if not ranges:
        return False
    for m, (_lo, hi) in ranges.items():
        c = cutoff_for(cuts, m)
        if c is None or hi >= c:
            return False
    return True


def expired_partitions(metas: Sequence, cuts: Mapping[str, int], partition_ns: int | None = None, *,
                       contents: Callable[[object], Mapping[str, tuple[int, int]]] | None = None) -> list:
    """Segments whose every row is expired: drop them as files (no rewrite).

    With ``contents`` (:func:`measurement_ranges` per segment) a segment is expired when each of
    its measurements has a cutoff above its newest row; without it, only when a ``"*"`` policy
    exists and the newest row is older than every cutoff. Whole partitions are the usual result;
    a lone expired segment of a partially expired partition is dropped too (its rows are
    invisible either way). ``partition_ns`` is accepted for symmetry and not needed.
    """
    return [m for m in metas if segment_expired(m, cuts, contents)]


# ------------------------------------------------------------------------------- policy store
def _bad(msg: str) -> QueryError:
    return QueryError(msg, sqlstate="22023")


def make_policy(name: object, measurement: object = "*", duration: object = None,
                tier_after: object = None) -> RetentionPolicy:
    """Validate API input into a :class:`RetentionPolicy` (durations: seconds or "30d", "12h"...).

    Raises:
        QueryError: a bad name, measurement or duration, or ``tier_after >= duration``.
    """
    if not isinstance(name, str) or not name.strip():
        raise _bad("retention policy name must be a non-empty string")
    if not isinstance(measurement, str) or not measurement:
        raise _bad("retention policy measurement must be a non-empty string (or \"*\")")
    if duration is None:
        raise _bad("retention policy duration is required")
    try:
        d = parse_duration(duration, "duration")
        t = None if tier_after is None else parse_duration(tier_after, "tier_after")
    except ConfigError as e:
        raise _bad(f"retention policy {name!r}: {e}") from None
    if t is not None and t >= d:
        raise _bad(f"retention policy {name!r}: tier_after ({t}s) must be shorter than duration ({d}s)")
    return RetentionPolicy(name=name, measurement=measurement, duration=d, tier_after=t)


def _policy_json(p: RetentionPolicy) -> dict:
    return {"name": p.name, "measurement": p.measurement, "duration": p.duration, "tier_after": p.tier_after}


class PolicyStore:
    """The retention policies in force, changeable at run time and persisted.

    The configured policies are the base; ``retention.json`` holds the run-time overlay
    (``set``: full policies by name, ``removed``: names). All methods are thread-safe and write
    the file atomically before returning.
    """

    def __init__(self, path: str | os.PathLike, initial: Iterable[RetentionPolicy] = ()) -> None:
        self.path = Path(path)
        self._base = {p.name: p for p in initial}
        self._set: dict[str, RetentionPolicy] = {}
        self._removed: set[str] = set()
        self._lock = threading.Lock()
        self.version = 0
        if self.path.exists():
            self._load()

    @classmethod
    def open(cls, data_dir: str | os.PathLike, initial: Iterable[RetentionPolicy] = ()) -> "PolicyStore":
        return cls(Path(data_dir) / FILE_NAME, initial)

    def _load(self) -> None:
        try:
            body = json.loads(self.path.read_text(encoding="utf-8"))
            if body.get("format") != FORMAT:
                raise ValueError(f"unknown format {body.get('format')!r}")
            self._set = {}
            for d in body.get("set", []):
                p = make_policy(d["name"], d.get("measurement", "*"), d["duration"], d.get("tier_after"))
                self._set[p.name] = p
            self._removed = {str(n) for n in body.get("removed", [])}
        except (OSError, ValueError, KeyError, TypeError, AttributeError, QueryError) as e:
            raise CorruptionError(f"retention policy file {self.path} is unreadable: {e}",
                                  path=str(self.path)) from e

    def _save(self) -> None:
        body = {"format": FORMAT, "set": [_policy_json(p) for p in sorted(self._set.values(), key=lambda p: p.name)],
                "removed": sorted(self._removed)}
        data = json.dumps(body, indent=1).encode()
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
            fd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as e:
            raise StorageError(f"cannot write {self.path}: {e}") from e
        self.version += 1

    def _current(self) -> dict[str, RetentionPolicy]:
        cur = {n: p for n, p in self._base.items() if n not in self._removed}
        cur.update(self._set)
        return cur

    def list(self) -> list[RetentionPolicy]:
        """Policies in force, sorted by name."""
        with self._lock:
            return sorted(self._current().values(), key=lambda p: p.name)

    def get(self, name: str) -> RetentionPolicy:
        with self._lock:
            p = self._current().get(name)
        if p is None:
            raise QueryError(f"retention policy {name!r} does not exist", sqlstate="42704")
        return p

    def add(self, policy: RetentionPolicy) -> RetentionPolicy:
        """Create a policy. Raises QueryError if the name is taken."""
        policy = make_policy(policy.name, policy.measurement, policy.duration, policy.tier_after)
        with self._lock:
            if policy.name in self._current():
                raise QueryError(f"retention policy {policy.name!r} already exists", sqlstate="42710")
            self._set[policy.name] = policy
            self._removed.discard(policy.name)
            self._save()
        return policy

    def update(self, name: str, /, **changes) -> RetentionPolicy:
        """Change ``measurement``, ``duration`` and/or ``tier_after`` of an existing policy
        (a ``name`` among the changes must be its own: a policy is not renamed)."""
        if "name" in changes and changes.pop("name") != name:
            raise _bad(f"retention policy {name!r}: the name cannot be changed (remove the policy and add it anew)")
        unknown = set(changes) - {"measurement", "duration", "tier_after"}
        if unknown:
            raise _bad(f"unknown retention policy key(s): {', '.join(sorted(unknown))}")
        with self._lock:
            cur = self._current().get(name)
            if cur is None:
                raise QueryError(f"retention policy {name!r} does not exist", sqlstate="42704")
            merged = {**_policy_json(cur), **changes}
            p = make_policy(name, merged["measurement"], merged["duration"], merged["tier_after"])
            self._set[name] = p
            self._save()
        return p

    def remove(self, name: str) -> None:
        with self._lock:
            if name not in self._current():
                raise QueryError(f"retention policy {name!r} does not exist", sqlstate="42704")
            self._set.pop(name, None)
            if name in self._base:
                self._removed.add(name)
            self._save()

    def to_json(self) -> list[dict]:
        """Policies for ``GET /retention`` / ``SHOW RETENTION POLICIES``."""
        return [{**_policy_json(p), "source": "api" if p.name in self._set else "config"} for p in self.list()]


def policy_from_json(d: Mapping) -> RetentionPolicy:
    """Validate a JSON body (``{"name", "measurement", "duration", "tier_after"}``)."""
    if not isinstance(d, Mapping):
        raise _bad("retention policy must be a JSON object")
    unknown = set(d) - {"name", "measurement", "duration", "tier_after"}
    if unknown:
        raise _bad(f"unknown retention policy key(s): {', '.join(sorted(unknown))}")
    return make_policy(d.get("name"), d.get("measurement", "*"), d.get("duration"), d.get("tier_after"))


__all__ = ["PolicyStore", "cold_after_ns", "cutoff_for", "cutoffs", "effective_policy", "expired_partitions",
           "make_policy", "measurement_ranges", "policy_from_json", "query_start", "segment_expired"]
