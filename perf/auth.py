"""The cost of authentication and authorisation per request (issue 13).

``python perf/auth.py [--requests N]`` starts two ``rusts-server`` processes on loopback ports,
one with ``auth.enabled: false`` and one with auth on, writes the same row into each and times a
one-row ``POST /sql`` query (``SELECT v FROM cpu WHERE host = 'a' ORDER BY time DESC LIMIT 1``)
against both, interleaved in the same run so both see the same machine noise. Three variants:
no auth; auth with an unrestricted token (``read``); auth with a measurement-limited token
(``read`` on ``cpu*``). Prints one JSON object per variant (``p50_ms``, ``p90_ms``, ``p99_ms``) and
one with the in-process cost of the checks alone (``authorize_http`` + ``authorize_sql``, µs).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import httpx
import jwt
import yaml

SECRET = "perf-secret-0123456789abcdef0123456789abcdef"
QUERY = "SELECT v FROM cpu WHERE host = 'a' ORDER BY time DESC LIMIT 1"


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(root: pathlib.Path, auth: bool) -> tuple[subprocess.Popen, str]:
    port = _port()
    cfg = {"server": {"host": "127.0.0.1", "port": port}, "logging": {"level": "warn"},
           "storage": {"data_dir": str(root / "data")},
           "auth": {"enabled": auth, "jwt_secret": SECRET}}
    root.mkdir(parents=True)
    (root / "rusts.yml").write_text(yaml.safe_dump(cfg))
    exe = pathlib.Path(sys.executable).parent / "rusts-server"
    proc = subprocess.Popen([str(exe), "-c", str(root / "rusts.yml")], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if httpx.get(url + "/ready", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError("server did not start")


def _token(scope: str, measurements=None) -> str:
    now = int(time.time())
    claims = {"sub": "perf", "scope": scope, "iat": now, "exp": now + 3600}
    if measurements:
        claims["measurements"] = measurements
    return jwt.encode(claims, SECRET, algorithm="HS256")


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def _in_process(n: int) -> dict:
    import trio

    import rusts.db
    from rusts.config import config_from_dict
    from rusts.security.authorize import authorize_http, authorize_sql
    from rusts.security.scopes import acting_as

    cfg = config_from_dict({"auth": {"enabled": True, "jwt_secret": SECRET},
                            "storage": {"data_dir": tempfile.mkdtemp()}})
    out = {}
    for name, tok in (("token", _token("read")), ("limited_token", _token("read", ["cpu*"]))):
        headers = {"authorization": f"Bearer {tok}"}

        async def run():
            async with rusts.db.open(config=cfg) as db:
                await db.write(b"cpu,host=a v=1 1")
                for _ in range(100):  # warm-up: parse caches, the sandbox's function list
                    with acting_as(authorize_http(cfg.auth, "POST", "/sql", headers, {}, b"")):
                        authorize_sql(db, QUERY)
                t0 = time.perf_counter()
                for _ in range(n):
                    p = authorize_http(cfg.auth, "POST", "/sql", headers, {}, QUERY.encode())
                    with acting_as(p):
                        authorize_sql(db, QUERY)
                return (time.perf_counter() - t0) / n * 1e6

        out[f"{name}_us"] = round(trio.run(run), 1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--requests", type=int, default=2000)
    args = ap.parse_args()
    tmp = pathlib.Path(tempfile.mkdtemp())
    procs = []
    try:
        p_off, url_off = _start(tmp / "off", False)
        procs.append(p_off)
        p_on, url_on = _start(tmp / "on", True)
        procs.append(p_on)
        variants = {
            "no_auth": (url_off, {}),
            "auth_token": (url_on, {"Authorization": f"Bearer {_token('read write')}"}),
            "auth_limited_token": (url_on, {"Authorization": f"Bearer {_token('read write', ['cpu*'])}"}),
        }
        clients = {k: httpx.Client(base_url=u, headers=h, timeout=30) for k, (u, h) in variants.items()}
        row = f"cpu,host=a v=1 {time.time_ns()}"
        for k, c in clients.items():
            if k != "auth_limited_token":
                assert c.post("/write", content=row).status_code == 204
        times: dict[str, list[float]] = {k: [] for k in clients}
        for i in range(args.requests + 100):
            for k, c in clients.items():
                t0 = time.perf_counter()
                r = c.post("/sql", content=QUERY)
                dt = (time.perf_counter() - t0) * 1000
                assert r.status_code == 200 and len(r.json()["results"]) == 1, r.text
                if i >= 100:  # warm-up
                    times[k].append(dt)
        for k, xs in times.items():
            print(json.dumps({"bench": "auth_one_row_sql", "variant": k, "requests": len(xs),
                              "p50_ms": round(statistics.median(xs), 3), "p90_ms": round(_pct(xs, 0.9), 3),
                              "p99_ms": round(_pct(xs, 0.99), 3)}))
        print(json.dumps({"bench": "auth_checks_in_process", **_in_process(args.requests)}))
    finally:
        for p in procs:
            p.terminate()
            p.wait(30)


if __name__ == "__main__":
    main()
