"""rusts-import as a user runs it: a subprocess against a real rusts-server (or a data directory)."""

from __future__ import annotations

import http.server
import json
import pathlib
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest

BIN = pathlib.Path(sys.executable).parent / "rusts-import"
BASE_MS = 1_700_000_000_000


def sample_table(n: int = 2000, seed: int = 5) -> pa.Table:
    """Unique timestamps, two tags (one with nulls), every field type with nulls, row 3 empty."""
    rng = np.random.default_rng(seed)
    k = np.arange(n)

    def nulls(p):
        m = rng.random(n) < p
        m[3] = True
        return m

    host = np.where(rng.random(n) < 0.05, None, rng.choice(["h1", "h2", "h,3"], n))
    return pa.table({
        "timestamp": pa.array(BASE_MS + k, pa.timestamp("ms")),
        "host": pa.array(host.tolist(), pa.string()),
        "dc": pa.array(rng.choice(["eu", "us"], n)),
        "f": pa.array(np.round(rng.normal(size=n) * 100, 3), mask=nulls(0.1)),
        "i": pa.array(rng.integers(-1000, 1000, n), mask=nulls(0.1)),
        "u": pa.array((k * 7).astype(np.uint32), mask=nulls(0.0)),
        "b": pa.array(rng.random(n) < 0.5, mask=nulls(0.2)),
        "s": pa.array([f's"{j % 17}' for j in k], mask=nulls(0.3)),
        "id": pa.array(k + 1_000_000, mask=nulls(0.0)),
    })


def expected_rows(table: pa.Table, tags=("host", "dc")) -> dict:
    cols = {name: table.column(name).to_pylist() for name in table.column_names}
    ts = table.column("timestamp").cast(pa.int64()).to_pylist()
    out = {}
    for r in range(table.num_rows):
        t = tuple(sorted((k, cols[k][r]) for k in tags if cols[k][r] is not None))
        fields = {k: v[r] for k, v in cols.items() if k not in tags and k != "timestamp" and v[r] is not None}
        if fields:
            out[(ts[r] * 1_000_000, t)] = fields
    return out


def stored_rows(server, measurement: str) -> dict:
    with server.client() as c:
        r = c.post("/sql", json={"query": f'SELECT * FROM "{measurement}"'})
    assert r.status_code == 200, r.text
    return {(x["timestamp"], tuple(sorted(x["tags"].items()))): x["fields"] for x in r.json()["results"]}


def count(server, measurement: str) -> int | None:
    with server.client() as c:
        r = c.post("/sql", json={"query": f'SELECT count(*) FROM "{measurement}"'})
    if r.status_code == 400 and "does not exist" in r.text:
        return None
    return r.json()["results"][0]["fields"]["count(*)"]


def run(*args, cwd=None, timeout=60) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN), *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=timeout)


def summary(proc) -> dict:
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def server(module_server_factory):
    return module_server_factory().start()


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    d = tmp_path_factory.mktemp("in")
    table = sample_table()
    pq.write_table(table, d / "sample.parquet", row_group_size=300)
    return d / "sample.parquet", table


@pytest.mark.parametrize("wire", ["arrow", "lp"])
def test_rest_import_stores_every_value(server, sample, wire):
    path, table = sample
    s = summary(run("parquet", path, "-s", server.url, "-m", f"rest_{wire}", "--tags", "host,dc",
                    "-b", "700", "--format", wire, "--json"))
    expected = expected_rows(table)
    assert s["points_written"] == len(expected) == 1999
    assert s["rejected_reasons"] == {"every field null": 1}
    assert s["values_written"] == sum(len(v) for v in expected.values())
    assert stored_rows(server, f"rest_{wire}") == expected


@pytest.mark.parametrize("wire", ["arrow", "lp"])
def test_rest_import_of_string_dictionaries_stores_every_value(server, sample, wire):
    """Row groups of at least a batch (300 rows, -b 150): string columns are read as Parquet
    dictionaries and sent as Arrow dictionary arrays (or printed from them); every value lands."""
    path, table = sample
    s = summary(run("parquet", path, "-s", server.url, "-m", f"dict_{wire}", "--tags", "host,dc",
                    "-b", "150", "--format", wire, "--json", "-q"))
    expected = expected_rows(table)
    assert s["points_written"] == len(expected) == 1999 and s["batches"] >= 2000 // 150
    assert stored_rows(server, f"dict_{wire}") == expected


def test_schema_only_and_dry_run_write_nothing(server, sample):
    path, _ = sample
    p = run("parquet", path, "--schema-only", "--tags", "host")
    assert p.returncode == 0, p.stderr
    lines = {ln.split()[0]: ln.split()[-2:] for ln in p.stdout.splitlines() if ln.split()[:1] and
             ln.split()[0] in ("timestamp", "host", "dc", "u", "s")}
    assert lines["timestamp"][-1] == "timestamp" and lines["host"][-1] == "tag"
    assert lines["dc"] == ["string", "field"] and lines["u"] == ["unsigned", "field"]
    p = run("parquet", path, "-s", server.url, "-m", "dry", "--tags", "host,dc", "--dry-run", "--json")
    s = summary(p)
    assert s["rows_read"] == 2000 and s["points_written"] == 1999 and s["dry_run"] is True
    assert count(server, "dry") is None


def test_bad_input_gets_a_message_and_exit_1(server, sample, tmp_path):
    """(Column errors are checked in-process: tests/engine/importer/test_direct.py.)"""
    path, table = sample
    (tmp_path / "bad.parquet").write_bytes(b"PAR1 but not really")
    cases = [
        (("parquet", tmp_path / "none.parquet", "-s", server.url), "file not found"),
        (("parquet", tmp_path / "bad.parquet", "-s", server.url), "not a readable Parquet file"),
        (("parquet", path, "-s", "http://127.0.0.1:9"), "cannot reach a server at http://127.0.0.1:9"),
        (("parquet", path, "--direct", "--data-dir", server.data_dir), "in use by another rusts process"),
    ]
    for args, message in cases:
        p = run(*args, "-q")
        assert p.returncode == 1, (args, p.stdout, p.stderr)
        assert message in p.stderr and "Traceback" not in p.stderr, (args, p.stderr)


class _Fake(http.server.BaseHTTPRequestHandler):
    """A server that sheds load (503) twice, then answers ``script``'s next status."""

    script: list = []
    seen: list = []

    def log_message(self, *a):
        pass

    def do_GET(self):
        self._send(200, {"status": "healthy"})

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.seen.append(self.path)
        status, body = self.script.pop(0) if self.script else (500, {"error": "script exhausted"})
        self._send(status, body)

    def _send(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def fake():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Fake)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv, f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()


def test_503_is_retried_and_a_rejected_batch_stops_with_its_error(fake, sample):
    srv, url = fake
    path, _ = sample
    _Fake.seen = []
    _Fake.script = [(503, {"error": "busy"}), (503, {"error": "busy"}),
                    (200, {"points_written": 1999, "values_written": 1, "rows_rejected": 0})]
    s = summary(run("parquet", path, "-s", url, "--tags", "host,dc", "--json", "-q"))
    assert s["points_written"] == 1999 and len(_Fake.seen) == 3
    assert _Fake.seen[0].startswith("/api/v1/write/arrow?measurement=imported")
    _Fake.script = [(400, {"error": "measurement name is forbidden here"})]
    p = run("parquet", path, "-s", url, "-q")
    assert p.returncode == 1 and "HTTP 400: measurement name is forbidden here" in p.stderr
    assert "Traceback" not in p.stderr
    _Fake.script = [(503, {"error": "flushing"})] * 20
    p = run("parquet", path, "-s", url, "-q", "--max-wait", "0.5")
    assert p.returncode == 1 and "still overloaded" in p.stderr and "flushing" in p.stderr


def test_dedup_by_field_and_by_tag_over_rest(server, sample, tmp_path):
    path, table = sample
    pq.write_table(table.slice(0, 500), tmp_path / "head.parquet")
    args = ("-s", server.url, "-m", "dd", "--tags", "host,dc", "--json", "-q")
    s1 = summary(run("parquet", tmp_path / "head.parquet", *args, "--dedup-column", "id"))
    assert s1["points_written"] == 499
    s2 = summary(run("parquet", path, *args, "--dedup-column", "id"))
    assert s2["rows_skipped_duplicates"] == 499 and s2["points_written"] == 1500
    s3 = summary(run("parquet", path, *args, "--dedup-column", "dc"))
    assert s3["points_written"] == 0 and s3["rows_skipped_duplicates"] == 1999
    assert stored_rows(server, "dd") == expected_rows(table)


def test_arrow_route_decodes_any_arrow_batch(server):
    rb = pa.record_batch({"t": pa.array([1, 2, 3], pa.timestamp("ms")), "host": ["a", "b", "a"],
                          "v": pa.array([1.5, None, 2.5])})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, rb.schema) as w:
        w.write_batch(rb)
    with server.client() as c:
        r = c.post("/api/v1/write/arrow", params={"measurement": "route", "tags": "host", "timestamp_column": "t"},
                   content=sink.getvalue().to_pybytes())
        assert r.status_code == 200 and r.json()["points_written"] == 2
        assert r.json()["rejected_reasons"] == {"every field null": 1}
        bad = c.post("/api/v1/write/arrow", params={"measurement": "route"}, content=b"nope")
        assert bad.status_code == 400 and "not an Arrow IPC stream" in bad.json()["error"]
        none = c.post("/api/v1/write/arrow", content=sink.getvalue().to_pybytes())
        assert none.status_code == 400 and "measurement" in none.json()["error"]
    assert stored_rows(server, "route") == {(1_000_000, (("host", "a"),)): {"v": 1.5},
                                            (3_000_000, (("host", "a"),)): {"v": 2.5}}


def test_csv_globs_and_line_protocol_files(server, tmp_path):
    for i in range(2):
        t = pa.table({"time": pa.array([f"2024-01-0{i + 1}T00:00:0{j}Z" for j in range(5)]),
                      "host": [f"h{j % 2}" for j in range(5)], "v": [float(j) for j in range(5)]})
        pcsv.write_csv(t, tmp_path / f"part{i}.csv")
    s = summary(run("csv", tmp_path / "part*.csv", "-s", server.url, "-m", "csvm", "--tags", "host", "--json", "-q"))
    assert s["points_written"] == 10 and count(server, "csvm") == 10
    (tmp_path / "a.lp").write_text("lpm,host=a v=1 1\nlpm,host=b v=2i 2\n\nbroken line\nlpm,host=a v=3 3\n")
    p = run("lp", tmp_path / "a.lp", "-s", server.url, "--json", "-q")
    s = summary(p)
    assert s["points_written"] == 2 and s["rows_rejected"] == 2
    assert count(server, "lpm") == 2


def _wait_for_progress(state: pathlib.Path, proc, timeout=30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if state.exists() and json.loads(state.read_text())["position"] > 0:
            return
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        time.sleep(0.02)
    raise AssertionError("no progress recorded")


def _read_direct(data, measurement: str) -> dict:
    import trio

    import rusts
    from rusts.sql.runner import run_sql_http

    async def read():
        async with rusts.open(data) as db:
            return await run_sql_http(db, f'SELECT * FROM "{measurement}"', 0.0)

    res = trio.run(read)
    return {(x["timestamp"], tuple(sorted(x["tags"].items()))): x["fields"] for x in res["results"]}


@pytest.mark.parametrize("mode", ["rest", "direct"])
def test_resume_after_a_kill_gives_the_exact_result(server, tmp_path, mode):
    n, batch = 10_000, 100
    table = sample_table(n, seed=9)
    pq.write_table(table, tmp_path / "big.parquet", row_group_size=1200)
    state = tmp_path / "state.json"
    data = tmp_path / "data"
    target = ("-s", server.url) if mode == "rest" else ("--direct", "--data-dir", data, "--checkpoint-rows", "1000")
    args = ["parquet", tmp_path / "big.parquet", *target, "-m", f"resume_{mode}", "--tags", "host,dc",
            "-b", batch, "--resume", "--state-file", state, "--concurrency", "1", "-q", "--json"]
    proc = subprocess.Popen([str(BIN), *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        _wait_for_progress(state, proc)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    done = json.loads(state.read_text())
    assert 0 < done["position"] < n and not done["complete"]
    if mode == "direct":  # the killed import left whole batches (row 4 of the first has no field)
        stored = len(_read_direct(data, "resume_direct"))
        assert stored >= done["position"] - 1 and (stored + 1) % batch == 0
    s = summary(run(*args))
    assert s["rows_read"] == n - done["position"]
    if mode == "rest":
        again = summary(run(*args))  # complete: nothing to do
        assert again["rows_read"] == 0
    got = _read_direct(data, "resume_direct") if mode == "direct" else stored_rows(server, "resume_rest")
    assert got == expected_rows(table)


@pytest.mark.parametrize("mode", ["rest", "direct"])
def test_ctrl_c_commits_whole_batches_and_exits_130(server, tmp_path, mode):
    n = 10_000
    pq.write_table(sample_table(n, seed=4), tmp_path / "in.parquet", row_group_size=1000)
    state, data = tmp_path / "state.json", tmp_path / "data"
    target = ("-s", server.url) if mode == "rest" else ("--direct", "--data-dir", data, "--checkpoint-rows", "500")
    args = ["parquet", tmp_path / "in.parquet", *target, "-m", f"ctrl_c_{mode}", "--tags", "host,dc",
            "-b", "100", "--resume", "--state-file", state, "--concurrency", "2", "-q", "--json"]
    proc = subprocess.Popen([str(BIN), *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    _wait_for_progress(state, proc)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    s = json.loads(out.strip().splitlines()[-1])
    pos = json.loads(state.read_text())["position"]
    assert 0 < pos < n and s["rows_read"] == pos  # every row read was committed, and recorded
    stored = len(_read_direct(data, "ctrl_c_direct")) if mode == "direct" else count(server, "ctrl_c_rest")
    assert stored == pos - 1  # row 4 has no field value
