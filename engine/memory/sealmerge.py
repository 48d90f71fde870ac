"""Merging two sealed memtable blocks whose rows are already in order (rusts.memory.sealed).

A table seals its writes into sorted blocks and merges neighbours of similar size, so a row is
merged a few times while the table fills. When every series' rows in the newer block are later
than its rows in the older one (writes in time order: an import, a live feed), the merge is
each series' older run followed by its newer run: no sort, no duplicate to drop. ``old`` is the
older :class:`~rusts.memory.sealed.Sealed` block, ``newer`` the newer one.
"""

from __future__ import annotations

import numpy as np


def append_runs(old, newer) -> list[tuple] | None:
    """(block, series, first row, end row) runs of the merge in (series, time) order when,
    for every series in both, all of ``newer``'s times are later; None otherwise."""
    _, i, j = np.intersect1d(old.usid, newer.usid, assume_unique=True, return_indices=True)
    if len(i) and not bool((old.ts[old.starts[i + 1] - 1] < newer.ts[newer.starts[j]]).all()):
        return None
    runs = [(int(sid), 0, blk, k) for blk in (old, newer) for k, sid in enumerate(blk.usid.tolist())]
    runs = [(sid, order, blk, k) for order, (sid, _, blk, k) in enumerate(runs)]
    runs.sort(key=lambda r: (r[0], r[1]))
    return [(blk, sid, int(blk.starts[k]), int(blk.starts[k + 1])) for sid, _, blk, k in runs]


def concat_runs(old, newer, runs: list) -> tuple:
    """The merged block from its runs (:func:`append_runs`): each column one concatenation
    of the runs' slices (rows without the field: zeros, masked out)."""
    sid = np.repeat(np.array([r[1] for r in runs], dtype=old.usid.dtype), [r[3] - r[2] for r in runs])
    ts = np.concatenate([blk.ts[a:b] for blk, _, a, b in runs])
    cols = {}
    for name in dict.fromkeys([*old.cols, *newer.cols]):
        ft = (old.cols.get(name) or newer.cols[name])[0]
        vals, masks, any_mask = [], [], False
        for blk, _, a, b in runs:
            c = blk.cols.get(name)
            if c is None:
                vals.append(ft.zeros(b - a))
                masks.append(np.zeros(b - a, bool))
                any_mask = True
            else:
                vals.append(c[1][a:b])
                masks.append(None if c[2] is None else c[2][a:b])
                any_mask |= c[2] is not None
        mask = None if not any_mask else np.concatenate(
            [np.ones(len(v), bool) if m is None else m for v, m in zip(vals, masks)])
        cols[name] = (ft, np.concatenate(vals), mask)
    return sid, ts, cols


def append_order(old, newer) -> np.ndarray | None:
    """The (series, time) order of ``old``'s rows followed by ``newer``'s when, for every
    series in both, all of ``newer``'s times are later: each series' rows of ``old``, then
    its rows of ``newer`` (no sort, no duplicate to drop); None otherwise."""
    _, i, j = np.intersect1d(old.usid, newer.usid, assume_unique=True, return_indices=True)
    if len(i) and not bool((old.ts[old.starts[i + 1] - 1] < newer.ts[newer.starts[j]]).all()):
        return None
    n1 = len(old.ts)
    usid = np.concatenate([old.usid, newer.usid])
    start = np.concatenate([old.starts[:-1], newer.starts[:-1] + n1])
    length = np.concatenate([np.diff(old.starts), np.diff(newer.starts)])
    runs = np.argsort(usid, kind="stable")  # per series: old's run, then newer's
    start, length = start[runs], length[runs]
    ends = np.cumsum(length)
    total = int(ends[-1]) if len(ends) else 0
    step = np.ones(total, dtype=np.int64)  # concatenated aranges, as one cumsum
    nz = length > 0
    s, e = start[nz], ends[nz]
    if len(s):
        step[0] = s[0]
        step[e[:-1]] = s[1:] - (s[:-1] + length[nz][:-1] - 1)
    return np.cumsum(step)
