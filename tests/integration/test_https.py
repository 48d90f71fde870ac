"""HTTPS: with server.tls_cert and server.tls_key set, the API is served over TLS only."""

from __future__ import annotations

import ssl
import subprocess

import httpx
import pytest

from tests.integration.conftest import Server


def test_https_when_a_certificate_is_configured(tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    root = tmp_path / "srv"
    root.mkdir()
    srv = Server(root, server={"tls_cert": str(cert), "tls_key": str(key)})
    srv.url = srv.url.replace("http://", "https://")
    trust = ssl.create_default_context(cafile=str(cert))
    real_get = httpx.get
    try:
        httpx.get = lambda url, **kw: real_get(url, verify=trust, **kw)  # Server.start polls /ready
        srv.start()
    except BaseException:
        srv.kill()  # a server that never became ready is not left running
        raise
    finally:
        httpx.get = real_get
    try:
        with httpx.Client(base_url=srv.url, verify=trust, timeout=10) as c:
            assert c.post("/write", content="t,h=a v=1 1700000000000000000").status_code == 204
            r = c.post("/sql", content="SELECT v FROM t")
            assert r.status_code == 200 and r.json()["results"][0]["fields"]["v"] == 1.0
        with pytest.raises(httpx.HTTPError):  # plain HTTP is not served
            httpx.get(srv.url.replace("https://", "http://") + "/health", timeout=3)
    finally:
        srv.stop()


def test_half_a_tls_configuration_is_refused(tmp_path):
    root = tmp_path / "srv"
    root.mkdir()
    srv = Server(root, server={"tls_cert": str(tmp_path / "cert.pem")})
    with pytest.raises(RuntimeError, match="tls_cert and tls_key must be set together"):
        srv.start(timeout=20)
