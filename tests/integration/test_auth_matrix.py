"""The authorisation matrix against a real rusts-server: every HTTP route and a set of SQL
statements x 11 credential variants, over HTTP and pgwire; allowed exactly where it should be.

"Allowed" means the request got past authentication and authorisation (any status but 401/403;
a route may still answer 400/404 for its own reasons); "401" a refused credential; "403" a valid
credential without the scope or measurement.
"""

import base64
import datetime
import importlib.util
import pathlib
import subprocess
import sys
import time

import jwt
import psycopg
import pytest
import yaml

SECRET = "matrix-secret-0123456789abcdef0123456789"
NOW = int(time.time())
T = time.time_ns() - 10**9


def _server_class():
    spec = importlib.util.spec_from_file_location("_integration_conftest",
                                                  pathlib.Path(__file__).with_name("conftest.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.Server


def _tok(scope, measurements=None, key=SECRET, alg="HS256", **claims):
    body = {"sub": "svc", "scope": scope, "iat": NOW, "exp": NOW + 6 * 3600, **claims}  # outlives a slow suite
    if measurements is not None:
        body["measurements"] = measurements
    return jwt.encode(body, key, algorithm=alg)


# name -> (token or None, what the principal may do)
VARIANTS = {
    "none": None,
    "garbage": "not-a-token",
    "alg_none": jwt.encode({"sub": "svc", "scope": "admin", "exp": NOW + 6 * 3600}, None, algorithm="none"),
    "wrong_alg": _tok("admin", key=SECRET * 2, alg="HS512"),
    "bad_signature": _tok("admin", key="another-secret-0123456789abcdef-0123456"),
    "expired": _tok("admin", exp=NOW - 120),
    "not_yet_valid": _tok("admin", nbf=NOW + 6 * 3600),
    "wrong_scope": _tok("write"),  # a collector's token: writes (and deletes), reads nothing
    "wrong_measurement": _tok("read write", ["other*"]),
    "read_only": _tok("read"),
    "admin": _tok("admin"),
}
INVALID = {"none", "garbage", "alg_none", "wrong_alg", "bad_signature", "expired", "not_yet_valid"}

# what each valid variant may do: read/write/admin on cpu and on the whole database
CAN = {
    "wrong_scope": {"write"},
    "wrong_measurement": {"read_global", "write_global"},  # scopes, but not on cpu/mem
    "read_only": {"read", "read_global"},
    "admin": {"read", "read_global", "write", "write_global", "admin", "admin_all"},
}

POLICY = {"name": "p1", "measurement": "zz", "duration": "365d"}
# (method, path, body, json, needs) ; needs None = open route
ROUTES = [
    ("GET", "/health", None, None, None),
    ("GET", "/ready", None, None, None),
    ("GET", "/ping", None, None, None),
    ("POST", "/write", f"cpu,host=a v=2 {T}", None, "write"),
    ("POST", "/api/v2/write", f"cpu,host=b v=3 {T}", None, "write"),
    ("POST", "/api/v1/write/arrow?measurement=cpu", b"", None, "write"),  # empty body: 400 once allowed
    ("POST", "/query", None, {"measurement": "cpu", "time_range": {"start": 0, "end": 2**62}}, "read"),
    ("GET", "/query?q=" + '{"measurement":"cpu","time_range":{"start":0,"end":1}}', None, None, "read"),
    ("POST", "/sql", "SELECT * FROM cpu", None, "read"),
    ("GET", "/sql?q=SELECT%20count(*)%20FROM%20cpu", None, None, "read"),
    ("GET", "/stats", None, None, "read_global"),
    ("GET", "/metrics", None, None, "read_global"),
    ("GET", "/cluster", None, None, "read_global"),  # 404 (not a cluster node) once allowed
    ("GET", "/retention_policies", None, None, "read_global"),
    ("POST", "/retention_policies", None, POLICY, "admin_all"),
    ("PATCH", "/retention_policies/p1", None, {"duration": "400d"}, "admin_all"),
    ("PUT", "/retention_policies/p1", None, {"duration": "500d"}, "admin_all"),
    ("DELETE", "/retention_policies/p1", None, None, "admin_all"),
    ("POST", "/delete", None, {"measurement": "cpu", "time_range": {"start": 0, "end": 1}}, "write"),
    ("DELETE", "/measurements/zz_nothing", None, None, "admin"),
    ("POST", "/flush", None, None, "admin_all"),
]

SQL = [  # (statement, needs)
    ("SELECT v FROM cpu", "read"),
    ("SELECT a.v FROM cpu a JOIN mem b ON a.time = b.time", "read"),
    ("SELECT v FROM cpu WHERE v IN (SELECT v FROM mem)", "read"),
    ("WITH x AS (SELECT * FROM mem) SELECT count(*) FROM x", "read"),
    ("SHOW TABLES", "read_global"),
    ("DELETE FROM cpu WHERE v > 1000", "write"),
    ("DROP TABLE IF EXISTS zz_nothing", "admin"),
]


def _expected(variant: str, needs: str | None) -> str:
    if needs is None:
        return "allowed"
    if variant in INVALID:
        return "401"
    return "allowed" if needs in CAN[variant] else "403"


def _outcome(status: int) -> str:
    return {401: "401", 403: "403"}.get(status, "allowed")


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    root = tmp_path_factory.mktemp("authmatrix")
    s = _server_class()(root, postgres={"enabled": True},
                        auth={"enabled": True, "jwt_secret": SECRET, "users": [
                            {"username": "ann", "password": "ann-pw", "scopes": ["read"], "measurements": ["cpu"]},
                            {"username": "root", "password": "root-pw"}]}).start()
    with s.client() as c:
        h = {"Authorization": "Bearer " + VARIANTS["admin"]}
        assert c.post("/write", content=f"cpu,host=a v=1 {T}\nmem,host=a v=1 {T}", headers=h).status_code == 204
    yield s
    s.stop()


def _headers(variant):
    tok = VARIANTS[variant]
    return {} if tok is None else {"Authorization": f"Bearer {tok}"}


def test_http_matrix(srv):
    got, want = {}, {}
    with srv.client() as c:
        for variant in VARIANTS:
            for method, path, content, body, needs in ROUTES:
                r = c.request(method, path, content=content, json=body, headers=_headers(variant))
                key = (variant, method, path)
                got[key], want[key] = _outcome(r.status_code), _expected(variant, needs)
                if r.status_code in (401, 403):
                    assert "error" in r.json(), r.text
                    if r.status_code == 401:
                        assert r.headers.get("www-authenticate") == "Bearer"
                if got[key] == "allowed" and r.status_code >= 500:
                    pytest.fail(f"{key}: {r.status_code} {r.text}")
            for sql, needs in SQL:
                r = c.post("/sql", content=sql, headers=_headers(variant))
                key = (variant, "SQL", sql)
                got[key], want[key] = _outcome(r.status_code), _expected(variant, needs)
    wrong = {k: (got[k], want[k]) for k in want if got[k] != want[k]}
    assert not wrong, wrong


def test_measurement_limited_token_sees_only_its_measurements(srv):
    h = {"Authorization": "Bearer " + _tok("read write", ["cpu"])}
    with srv.client() as c:
        assert [r["fields"]["name"] for r in c.post("/sql", content="SHOW TABLES", headers=h).json()["results"]] == ["cpu"]
        r = c.post("/write", content=f"cpu v=5 {T}\nmem v=5 {T}", headers=h)
        assert r.status_code == 403 and "'mem'" in r.json()["error"]


def test_auth_token_carries_the_users_scopes(srv):
    with srv.client() as c:
        r = c.post("/auth/token", json={"username": "ann", "password": "ann-pw"})
        assert r.status_code == 200
        h = {"Authorization": "Bearer " + r.json()["token"]}
        assert c.post("/sql", content="SELECT v FROM cpu", headers=h).status_code == 200
        assert c.post("/sql", content="SELECT v FROM mem", headers=h).status_code == 403
        assert c.post("/write", content=f"cpu v=1 {T}", headers=h).status_code == 403
        basic = {"Authorization": "Basic " + base64.b64encode(b"ann:ann-pw").decode()}
        assert c.get("/stats", headers=basic).status_code == 200
        assert c.post("/flush", headers=basic).status_code == 403
        assert c.post("/auth/token", json={"username": "ann", "password": "nope"}).status_code == 401


def _pg(srv, user, password):
    pw = "" if password is None else f":{password}"
    return psycopg.connect(f"postgresql://{user}{pw}@127.0.0.1:{srv.pg_port}/rusts", autocommit=True,
                           connect_timeout=10)


def test_pgwire_matrix(srv):
    got, want = {}, {}
    for variant, tok in VARIANTS.items():
        try:
            conn = _pg(srv, "svc", tok)
        except psycopg.OperationalError as e:
            got[(variant, "connect")] = "401"
            assert "password authentication failed" in str(e) or "password" in str(e)
        else:
            got[(variant, "connect")] = "allowed"
            with conn:
                for sql, needs in SQL:
                    try:
                        conn.execute(sql)
                        got[(variant, sql)] = "allowed"
                    except psycopg.Error as e:
                        got[(variant, sql)] = "403" if e.sqlstate == "42501" else f"error {e.sqlstate}: {e}"
                    want[(variant, sql)] = _expected(variant, needs)
        want[(variant, "connect")] = "401" if variant in INVALID else "allowed"
    wrong = {k: (got.get(k), want[k]) for k in want if got.get(k) != want[k]}
    assert not wrong, wrong


def test_pgwire_users_scram_and_no_trust(srv):
    with _pg(srv, "ann", "ann-pw") as conn:  # SCRAM-SHA-256 (psycopg negotiates it)
        assert conn.execute("SELECT count(*) FROM cpu").fetchone()[0] >= 1
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT * FROM mem")
        tables = [r[0] for r in conn.execute(
            "SELECT relname FROM pg_catalog.pg_class WHERE relkind = 'r' AND relnamespace = "
            "(SELECT oid FROM pg_catalog.pg_namespace WHERE nspname = 'public')").fetchall()]
        assert tables == ["cpu"]  # the catalog shows only readable measurements
    with _pg(srv, "root", "root-pw") as conn:
        assert conn.execute("SELECT count(*) FROM mem").fetchone()[0] >= 1
    for user, pw in (("ann", "wrong"), ("ann", None), ("nobody", "x"), ("rusts", None)):
        with pytest.raises(psycopg.OperationalError):
            _pg(srv, user, pw)


def _self_signed(tmp_path):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA256()))
    (tmp_path / "c.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "k.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                       serialization.PrivateFormat.PKCS8,
                                                       serialization.NoEncryption()))
    return str(tmp_path / "c.pem"), str(tmp_path / "k.pem")


def test_pgwire_require_tls(server_factory, tmp_path):
    cert, key = _self_signed(tmp_path)
    srv = server_factory(postgres={"enabled": True, "tls_cert": cert, "tls_key": key, "require_tls": True},
                         auth={"enabled": True, "jwt_secret": SECRET,
                               "users": [{"username": "root", "password": "root-pw"}]}).start()
    base = f"postgresql://root:root-pw@127.0.0.1:{srv.pg_port}/rusts"
    with pytest.raises(psycopg.OperationalError, match="TLS required"):
        psycopg.connect(base + "?sslmode=disable")
    with psycopg.connect(base + "?sslmode=require") as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
        assert conn.pgconn.ssl_in_use


@pytest.mark.parametrize("auth, why", [
    ({"enabled": True}, "still the default"),
    ({"enabled": True, "jwt_secret": "too-short"}, "too short"),
])
def test_server_refuses_to_start_with_a_weak_secret(tmp_path, auth, why):
    cfg = tmp_path / "rusts.yml"
    cfg.write_text(yaml.safe_dump({"auth": auth, "storage": {"data_dir": str(tmp_path / "d")}}))
    bin_ = pathlib.Path(sys.executable).parent / "rusts-server"
    p = subprocess.run([str(bin_), "-c", str(cfg)], capture_output=True, text=True, timeout=60)
    assert p.returncode == 2
    assert "auth.jwt_secret" in p.stderr and why in p.stderr and "Traceback" not in p.stderr


def test_limits_over_http(server_factory):
    srv = server_factory(storage={"max_series_per_measurement": 2}, server={"max_line_bytes": 500}).start()
    with srv.client() as c:
        r = c.post("/write", content="\n".join(f"cpu,host=h{i} v=1 {T}" for i in range(3)))
        assert r.status_code == 400
        body = r.json()
        assert body["points_written"] == 2 and body["lines_rejected"] == 1
        assert "storage.max_series_per_measurement = 2" in body["error"]
        long_line = f"mem v=1,s=\"{'y' * 2000}\" {T}"
        r = c.post("/write", content=f"mem v=1 {T}\n{long_line}")
        assert r.status_code == 400 and "server.max_line_bytes = 500" in r.json()["error"]
        body = r.json()
        assert body["points_written"] == 1 and "y" * 2000 not in r.text
        for text in (body["error"], body["data"][0]["error_message"], body["data"][0]["original_line"]):
            assert 100 < text.count("y") <= 200  # each quotes the line's first 200 bytes only
