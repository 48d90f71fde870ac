"""Golden fixtures: committed blocks must keep decoding, and encoding must reproduce them.

A failure here means the byte format changed. If that is intended, document it in
docs/format/codecs.md (new tags, never reused ones) and regenerate with
``RUSTS_REGEN_CODEC_FIXTURES=1 .venv/bin/pytest tests/codecs/test_golden.py``.

The data are made with splitmix64 over a counter (plain integer arithmetic), so they do not
depend on numpy's random generators staying stable.
"""

import os
import pathlib

import numpy as np
import pytest

from rusts.codecs import Tag, decode, encode

FIXTURES = pathlib.Path(__file__).parent / "fixtures"
REGEN = os.environ.get("RUSTS_REGEN_CODEC_FIXTURES") == "1"


def splitmix(n: int, seed: int) -> np.ndarray:
    with np.errstate(over="ignore"):
        z = (np.arange(n, dtype=np.uint64) + np.uint64(seed)) * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def small(n, seed, mod):
    return (splitmix(n, seed) % np.uint64(mod)).astype(np.int64)


def objects(lst):
    a = np.empty(len(lst), dtype=object)
    a[:] = lst
    return a


T0 = 1_700_000_000_000_000_000
N = 1000
walk = np.cumsum(small(N, 5, 201) - 100) + 5000
walk_f = walk / 100.0
walk_f[[10, 500]] = [np.nan, -0.0]
CASES = {
    "ts_regular": (T0 + np.arange(N, dtype=np.int64) * 10_000_000_000, dict(timestamps=True)),
    "ts_jitter": (T0 + np.arange(N, dtype=np.int64) * 10_000_000_000 + small(N, 1, 1_000_000),
                  dict(timestamps=True)),
    "ts_dod": (T0 + np.cumsum(np.arange(N, dtype=np.int64)) * 1000, dict(codec=Tag.DOD_FOR)),
    "int_counter": (np.cumsum(small(N, 2, 100)), {}),
    "int_for": (small(N, 3, 1000) - 500, {}),
    "int_varint": (small(N, 4, 300) ** 2 - 40_000, dict(codec=Tag.ZIGZAG_VARINT)),
    "int_dvarint": (np.cumsum(small(N, 6, 5000)), dict(codec=Tag.DELTA_ZIGZAG_VARINT)),
    "int_zerorun": (np.repeat(small(50, 13, 1000), 20), {}),
    "int_rice": (small(N, 14, 64) - small(N, 15, 64), dict(codec=Tag.ZIGZAG_RICE)),
    "int_radix": (small(N, 16, 10) + 7, {}),
    "uint_raw": (splitmix(100, 7), {}),
    "uint_const": (np.full(N, 2 ** 64 - 1, dtype=np.uint64), {}),
    "float_alp": (walk_f, {}),
    "float_gorilla": (splitmix(N, 8).astype(np.float64) / 3.0, dict(codec=Tag.GORILLA)),
    "float_raw": (splitmix(50, 9).view(np.float64), dict(codec=Tag.RAW)),
    "float_const": (np.full(N, -1.25), {}),
    "bool_bits": ((small(N, 10, 3) == 0), {}),
    "bool_const": (np.ones(N, dtype=bool), {}),
    "str_dict": (objects([f"host_{i}" for i in small(N, 11, 20).tolist()]), {}),
    "str_raw": (objects([f"é{i}\u4e2d" for i in range(200)] + ["", "a\0b", "\ud800"]), {}),
    "str_const": (objects(["us-west-1"] * N), {}),
    "lz4_ints": (np.tile(splitmix(64, 12).view(np.int64), 16), dict(compression="default")),
    "lz4hc_ints": (np.tile(splitmix(64, 12).view(np.int64), 16), dict(compression="best")),
    "zstd_strings": (objects([f"region-{i % 9}/{i}" for i in range(300)]), dict(tier="cold")),
}


def same(a, b):
    if a.dtype != b.dtype or len(a) != len(b):
        return False
    if a.dtype.kind == "f":
        return bool((a.view(np.uint64) == b.view(np.uint64)).all())
    return a.tolist() == b.tolist()


@pytest.mark.parametrize("name", sorted(CASES))
def test_golden_fixture(name):
    values, opts = CASES[name]
    path = FIXTURES / f"{name}.bin"
    block = encode(values, **opts)
    if REGEN:
        FIXTURES.mkdir(exist_ok=True)
        path.write_bytes(block)
    stored = path.read_bytes()
    assert same(decode(stored), values), "a committed block no longer decodes to its values"
    assert block == stored, "encoding no longer reproduces the committed bytes"


def test_fixtures_cover_every_tag_and_wrapper():
    blocks = [(FIXTURES / f"{name}.bin").read_bytes() for name in CASES]
    assert {b[0] for b in blocks} == {int(t) for t in Tag}
    assert {b[1] >> 4 for b in blocks} == {0, 1, 2}
