"""Deletes, DROP and run-time retention policies over HTTP against the real server."""

import time

ALL = {"start": 0, "end": 2**63 - 1}
S = 10**9


def _rows(c, m, **extra):
    r = c.post("/query", json={"measurement": m, "time_range": ALL, **extra})
    assert r.status_code == 200, r.text
    return r.json()["results"]


def test_delete_by_time_tags_and_fields_is_visible_at_once_and_survives_restart(server):
    now = time.time_ns()
    body = "\n".join(f"cpu,host=h{i % 2} v={i},s=\"x{i}\" {now - (100 - i) * S}" for i in range(100))
    with server.client() as c:
        assert c.post("/write", content=body).status_code == 204
        # delete host h0 in the first half of the window
        r = c.post("/delete", json={"measurement": "cpu",
                                    "time_range": {"start": now - 100 * S, "end": now - 50 * S},
                                    "tag_filters": [{"key": "host", "value": "h0", "op": "Eq"}]})
        assert r.status_code == 200, r.text
        assert r.json()["points_deleted"] == 25
        rows = _rows(c, "cpu")
        assert len(rows) == 75
        assert not any(x["tags"]["host"] == "h0" and x["fields"]["v"] < 50 for x in rows)
        # field predicate: every point with v >= 90 (either host)
        r = c.post("/delete", json={"measurement": "cpu", "field_filters": [{"field": "v", "op": ">=", "value": 90}]})
        assert r.status_code == 200, r.text
        assert max(x["fields"]["v"] for x in _rows(c, "cpu")) == 89
        # points written after a delete are not deleted
        c.post("/write", content=f"cpu,host=h1 v=95 {now - 5 * S}")
        assert any(x["fields"]["v"] == 95 for x in _rows(c, "cpu"))
        count = c.post("/query", json={"measurement": "cpu", "time_range": ALL,
                                       "aggregation": {"function": "Count", "field": "v"}}).json()
        n = count["results"][0]["fields"]["count_v"]
        assert n == 75 - 10 + 1
        # bad deletes
        assert c.post("/delete", json={"time_range": ALL}).status_code == 400
        r = c.post("/delete", json={"measurement": "cpu", "field_filters": [{"field": "v", "op": "~", "value": 1}]})
        assert r.status_code == 400 and "operator" in r.json()["error"]
    assert server.stop() == 0
    server.start()
    with server.client() as c:
        assert len(_rows(c, "cpu")) == n


def test_drop_measurement(server):
    with server.client() as c:
        c.post("/write", content="gone,host=a v=1 1\nkept,host=a v=1 1")
        r = c.delete("/measurements/gone")
        assert r.status_code == 200, r.text
        assert _rows(c, "gone") == []
        assert len(_rows(c, "kept")) == 1
        assert c.delete("/measurements/gone").status_code == 400
        # the name can be used again, with a new schema
        assert c.post("/write", content='gone,host=b v="now a string" 2').status_code == 204
        assert _rows(c, "gone")[0]["fields"]["v"] == "now a string"


def test_retention_policies_at_run_time_filter_expired_data_at_once(server):
    now = time.time_ns()
    with server.client() as c:
        old = f"m,host=a v=1 {now - 10 * 24 * 3600 * S}"
        new = f"m,host=a v=2 {now - 60 * S}"
        c.post("/write", content=old + "\n" + new)
        assert len(_rows(c, "m")) == 2
        r = c.post("/retention_policies", json={"name": "week", "measurement": "m", "duration": "7d"})
        assert r.status_code == 201, r.text
        assert [p["name"] for p in c.get("/retention_policies").json()["retention_policies"]] == ["week"]
        assert [x["fields"]["v"] for x in _rows(c, "m")] == [2.0]
        assert c.post("/retention_policies", json={"name": "week", "duration": "1d"}).status_code == 400
        assert c.post("/retention_policies", json={"name": "bad", "duration": "soon"}).status_code == 400
        assert c.delete("/retention_policies/week").status_code == 200
        assert len(_rows(c, "m")) == 2  # not yet swept: the data comes back when the policy goes
        stats = c.get("/stats").json()
        assert "lifecycle" in stats and "compaction" in stats["lifecycle"]
