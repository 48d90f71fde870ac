"""``rusts-server token create`` and ``rusts-server password`` (in-process main())."""

import io
import sys

import yaml

from rusts.cli import main
from rusts.config import config_from_dict
from rusts.security.passwords import verify
from rusts.security.tokens import principal_of, verify_token

from .conftest import SECRET


def test_token_create_prints_a_token_the_server_accepts(tmp_path, capsys):
    cfg_path = tmp_path / "rusts.yml"
    cfg_path.write_text(yaml.safe_dump({"auth": {"enabled": True, "jwt_secret": SECRET}}))
    rc = main(["token", "create", "-c", str(cfg_path), "--subject", "grafana", "--scope", "read",
               "--measurements", "cpu,mem*", "--expires", "1h"])
    assert rc == 0
    tok = capsys.readouterr().out.strip()
    claims = verify_token(config_from_dict({"auth": {"enabled": True, "jwt_secret": SECRET}}).auth, tok)
    p = principal_of(claims)
    assert p.subject == "grafana" and p.scopes == {"read"} and p.measurements == ("cpu", "mem*")
    assert 3590 <= claims["exp"] - claims["iat"] <= 3600


def test_token_create_errors(tmp_path, capsys):
    cfg_path = tmp_path / "rusts.yml"
    cfg_path.write_text("auth:\n  enabled: false\n")  # default secret: refuse to mint
    assert main(["token", "create", "-c", str(cfg_path), "--subject", "s", "--scope", "read"]) == 2
    assert "at least 32 bytes" in capsys.readouterr().err
    cfg_path.write_text(yaml.safe_dump({"auth": {"jwt_secret": SECRET}}))
    assert main(["token", "create", "-c", str(cfg_path), "--subject", "s", "--scope", "root"]) == 2
    assert "unknown scope 'root'" in capsys.readouterr().err


def test_password_hashes(monkeypatch, capsys):
    for scheme in ("scram", "bcrypt", "argon2"):
        monkeypatch.setattr(sys, "stdin", io.StringIO("hunter2\n"))
        assert main(["password", "--scheme", scheme]) == 0
        stored = capsys.readouterr().out.strip()
        assert verify(stored, "hunter2") and not verify(stored, "hunter3")
        config_from_dict({"auth": {"users": [{"username": "u", "password": stored}]}})  # loads
