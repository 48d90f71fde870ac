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
