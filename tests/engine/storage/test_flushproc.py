"""The worker-process pipe protocol (rusts.storage.flushproc): pickles with numpy buffers out of band."""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest

from rusts.storage.flushproc import _recv, _send


def test_messages_round_trip_with_out_of_band_buffers():
    r, w = os.pipe()
    rf, wf = os.fdopen(r, "rb"), os.fdopen(w, "wb")
    big = np.arange(3_000_000, dtype=np.int64)  # larger than the pipe buffer: reader runs alongside
    msg = {"groups": [("cpu", None, big, big[::3], {"s": (4, np.array(["a", "b", None], dtype=object), None)},
                       np.zeros(0, np.uint64))],
           "keys": {1: "cpu,host=a"}, "f": np.linspace(0, 1, 1001).reshape(7, 143)[:, ::2], "none": None}
    got = {}
    t = threading.Thread(target=lambda: got.update(v=_recv(rf)))
    t.start()
    _send(wf, msg)
    _send(wf, ("ok", 5))
    t.join()
    out = got["v"]
    g = out["groups"][0]
    assert g[0] == "cpu" and g[1] is None and np.array_equal(g[2], big) and np.array_equal(g[3], big[::3])
    assert g[4]["s"][1].tolist() == ["a", "b", None] and g[5].dtype == np.uint64 and len(g[5]) == 0
    assert np.array_equal(out["f"], msg["f"]) and out["keys"] == {1: "cpu,host=a"} and out["none"] is None
    assert _recv(rf) == ("ok", 5)
    wf.close()
    with pytest.raises(EOFError):
        _recv(rf)
    rf.close()


def test_string_columns_round_trip_as_codes_or_values():
    """String columns of few distinct values travel as codes and come back equal, their equal
    values sharing one str; others (many distinct values, non-str, short) come back equal too."""
    rng = np.random.default_rng(2)
    flags = np.where(rng.random(10_000) < 0.05, "Y", "N").astype(object)
    names = np.array([f"host-{i}" for i in rng.integers(0, 200, 10_000)], dtype=object)
    many = np.array([f"id-{i}" for i in range(10_000)], dtype=object)
    mixed = np.array(["a", None] * 5_000, dtype=object)
    short = np.array(["x", "y"], dtype=object)
    msg = {"cols": [flags, names, many, mixed, short[::-1], flags[::2]]}
    r, w = os.pipe()
    rf, wf = os.fdopen(r, "rb"), os.fdopen(w, "wb")
    got = {}
    t = threading.Thread(target=lambda: got.update(v=_recv(rf)))
    t.start()
    _send(wf, msg)
    t.join()
    wf.close()
    rf.close()
    out = got["v"]["cols"]
    for a, b in zip(msg["cols"], out):
        assert b.dtype == object and b.tolist() == a.tolist()
    assert len({id(x) for x in out[0]}) == 2  # "Y" and "N", one object each
    import io

    sent = io.BytesIO()
    _send(sent, flags)
    assert len(sent.getvalue()) < 10_000 + 500  # one byte a value (a pickled reference takes two)


def test_worker_whose_server_died_exits_without_a_traceback(tmp_path):
    """A SIGKILLed server leaves its flush worker mid-request: the reply hits a closed pipe. The
    worker must end quietly (its stderr is the server's log), not print a BrokenPipeError."""
    import subprocess
    import sys

    p = subprocess.Popen([sys.executable, "-m", "rusts.storage.flushproc", str(os.getpid())],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdout.close()  # the server is gone: nobody reads the reply
    _send(p.stdin, ("call", "compact", ([str(tmp_path / "missing.seg")], str(tmp_path / "out.seg"), {})))
    p.stdin.close()
    err = p.stderr.read().decode()
    assert p.wait(timeout=60) == 0
    assert "Traceback" not in err and "BrokenPipe" not in err, err


def test_worker_ignores_ctrl_c_and_ends_when_its_server_closes_the_pipe():
    """Ctrl-C reaches the server's whole process group; the worker leaves shutting down to its
    server (which closes the pipe) instead of printing a KeyboardInterrupt traceback."""
    import signal
    import subprocess
    import sys

    p = subprocess.Popen([sys.executable, "-m", "rusts.storage.flushproc", str(os.getpid())],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _send(p.stdin, ("call", "compact", ([], "/nonexistent/out.seg", {})))
    assert _recv(p.stdout)[0] in ("ok", "err")  # it is up and serving
    p.send_signal(signal.SIGINT)
    _send(p.stdin, ("call", "compact", ([], "/nonexistent/out.seg", {})))
    assert _recv(p.stdout)[0] in ("ok", "err")  # still serving after the signal
    p.stdin.close()
    err = p.stderr.read().decode()
    p.stdout.close()
    assert p.wait(timeout=60) == 0
    assert "Traceback" not in err, err


def _payload(ts, sid):
    n = len(ts)
    cols = {"a": (0, np.arange(n, dtype=np.float64), None), "s": (3, np.array(["x"] * n, dtype=object), None)}
    return {"groups": [(["m"], None, np.asarray(sid, np.uint64), np.asarray(ts, np.int64), cols,
                        np.zeros(n, np.int64))], "keys": {1: "m,h=1", 2: "m,h=2"}}


def test_a_flush_is_split_by_partition_into_balanced_shares_that_cover_every_row():
    from rusts.storage.flushproc import split_partitions

    day = 100
    ts = np.concatenate([np.arange(0, 100, 2), np.arange(100, 400, 3)])  # partitions 0..3, 50 + 100 rows
    sid = np.where(np.arange(len(ts)) % 2 == 0, 1, 2)
    pl = _payload(ts, sid)
    assert split_partitions(pl, day, [0], 2) is None  # one partition: nothing to split
    shares = split_partitions(pl, day, [0, 1, 2, 3], 2)
    assert [parts for _, parts in shares] == [[0, 1], [2, 3]]  # contiguous runs, 84 and 66 rows
    got = np.concatenate([sh["groups"][0][3] for sh, _ in shares])
    assert np.array_equal(got, ts)  # every row once, with its own values
    a = np.concatenate([sh["groups"][0][4]["a"][1] for sh, _ in shares])
    assert np.array_equal(a, np.arange(len(ts), dtype=np.float64))
    for sh, parts in shares:
        g = sh["groups"][0]
        assert set((g[3] // day).tolist()) <= set(parts) and len(g[2]) == len(g[3]) == len(g[4]["s"][1])
    assert len(split_partitions(pl, day, [0, 1, 2, 3], 8)) == 4  # at most one share per partition


async def test_two_worker_processes_encode_the_partitions_of_a_flush(tmp_path):
    import rusts
    from rusts.storage import flushproc

    t0, day = 1_700_006_400 * 10**9, 86_400 * 10**9
    body = "\n".join(f"m,h=h{i % 5} a={i},s=\"v{i}\" {t0 + (i % 4) * day + i}" for i in range(2000))
    q = {"measurement": "m", "time_range": {"start": 0, "end": 2**63 - 1}}
    prev = flushproc.configure(mode="always", workers=2)
    try:
        async with rusts.open(tmp_path / "d") as db:
            await db.write(body)
            before = (await db.query(q)).to_rows()
            await db.flush()
            assert db.statistics()["segments"]["count"] == 4
            pids = {w.proc.pid for w in flushproc._extra if w.proc is not None}
            assert len(pids) == 1 and flushproc.running()  # both workers took a share
        async with rusts.open(tmp_path / "d") as db:
            assert (await db.query(q)).to_rows() == before and len(before) == 2000
    finally:
        flushproc.configure(mode=prev[0], workers=prev[1])
        flushproc.shutdown()
    assert not flushproc._extra
