"""A real server answers the same JSON bodies (timing aside) right after a load over HTTP, after
POST /flush, and after a restart: /sql and /query, aggregates and raw reads, with out-of-order
rows, overwrites and integers beyond 2^53."""

from __future__ import annotations

import random

T0 = 1_699_990_000_000_000_000
S = 10**9


def _body(seed: int = 5) -> list[bytes]:
    rng = random.Random(seed)
    lines = []
    for k in range(1200):
        host = f"h{rng.randrange(4)}"
        t = T0 + rng.randrange(30 * 3600) * S if k % 5 else T0 + (k % 97) * 60 * S  # repeats: overwrites
        f = rng.randint(-400, 400) / 4
        i = 2**55 + rng.randrange(9) if rng.random() < 0.05 else rng.randint(-50, 200)
        lines.append(f"cpu,host={host},dc=d{rng.randrange(2)} usage={f},n={i}i,up={str(rng.random() < 0.5).lower()}"
                     f" {t}")
    return ["\n".join(lines[k::3]).encode() for k in range(3)]


SQL = [
    "SELECT COUNT(*), SUM(n), MIN(n), MAX(n), AVG(usage), MIN(time), MAX(time) FROM cpu",
    "SELECT host, COUNT(*), SUM(usage), MAX(n), LAST(n) FROM cpu GROUP BY host ORDER BY host",
    "SELECT AVG(usage) FROM cpu GROUP BY host ORDER BY 1",
    "SELECT time_bucket('1 hour', time) AS hour, MAX(usage), MIN(n) FROM cpu WHERE host = 'h1' "
    "GROUP BY hour ORDER BY hour",
    "SELECT time_bucket('10 minutes', time) AS t, host, COUNT(*), MEDIAN(usage) FROM cpu "
    "WHERE time >= '2023-11-15T00:00:00Z' AND time < '2023-11-15T06:00:00Z' GROUP BY t, host ORDER BY t, host",
    "SELECT time, usage, n FROM cpu WHERE host = 'h2' AND usage >= 0 ORDER BY time DESC LIMIT 20",
    "SELECT time, host, usage, n, up FROM cpu WHERE n > 100 ORDER BY time, host",
    "SELECT host, dc, COUNT(*) FROM cpu WHERE up AND usage BETWEEN -10 AND 50 GROUP BY host, dc ORDER BY host, dc",
]
JSON = [
    {"measurement": "cpu", "time_range": {"start": T0, "end": T0 + 40 * 3600 * S},
     "aggregation": {"function": "Count"}},
    {"measurement": "cpu", "time_range": {"start": T0, "end": T0 + 40 * 3600 * S},
     "aggregation": {"function": "Max", "field": "n", "interval_nanos": 3600 * S}, "group_by": ["host"]},
    {"measurement": "cpu", "time_range": {"start": T0, "end": T0 + 40 * 3600 * S},
     "tag_filters": [{"key": "host", "op": "Eq", "value": "h0"}], "fields": ["usage", "n"],
     "order": "Desc", "limit": 25},
    {"measurement": "cpu", "time_range": {"start": T0 + 3600 * S, "end": T0 + 9 * 3600 * S},
     "aggregation": {"function": "Sum", "field": "n"}, "group_by": ["dc"]},
]


def _answers(c) -> list:
    out = []
    for q in SQL:
        r = c.post("/sql", content=q)
        assert r.status_code == 200, (q, r.text)
        body = r.json()
        body.pop("execution_time_ms")
        out.append(body)
    for q in JSON:
        r = c.post("/query", json=q)
        assert r.status_code == 200, (q, r.text)
        body = r.json()
        body.pop("execution_time_ms")
        out.append(body)
    return out


def test_same_json_fresh_flushed_restarted(server_factory):
    srv = server_factory().start()
    with srv.client() as c:
        for b in _body():
            assert c.post("/write", content=b).status_code == 204
        fresh = _answers(c)
        assert c.post("/flush").status_code in (200, 204)
        flushed = _answers(c)
    srv.stop()
    srv.start()
    with srv.client() as c:
        restarted = _answers(c)
        assert c.get("/stats").json()["writes"]["values"] == 0  # counts since the start
    assert fresh[0]["results"][0]["fields"]["count(*)"] > 900
    assert fresh[2]["results"][0]["tags"]  # the group's host
    for k, (a, b, d) in enumerate(zip(fresh, flushed, restarted)):
        assert a == b, (k, "flushed")
        assert a == d, (k, "restarted")
