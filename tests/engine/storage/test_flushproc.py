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
