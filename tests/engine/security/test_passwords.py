"""Stored passwords: plain, SCRAM verifier, bcrypt, argon2; malformed hashes refused at load."""

import bcrypt
import pytest
from argon2 import PasswordHasher

from rusts.config import config_from_dict
from rusts.errors import ConfigError
from rusts.security.passwords import kind, parse_scram, scram_verifier, verify


@pytest.mark.parametrize("stored, k", [
    ("s3cret", "plain"),
    (scram_verifier("s3cret", iterations=1024), "scram"),
    (bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=4)).decode(), "bcrypt"),
    (PasswordHasher(time_cost=1, memory_cost=1024).hash("s3cret"), "argon2"),
])
def test_each_format_checks_the_password(stored, k):
    assert kind(stored) == k
    assert verify(stored, "s3cret")
    assert not verify(stored, "s3cret ") and not verify(stored, "") and not verify(stored, None)


def test_scram_verifier_is_postgres_format():
    v = scram_verifier("pw", iterations=4096, salt=b"0123456789abcdef")
    assert v.startswith("SCRAM-SHA-256$4096:MDEyMzQ1Njc4OWFiY2RlZg==$")
    c = parse_scram(v)
    assert c.iterations == 4096 and len(c.stored_key) == 32


@pytest.mark.parametrize("bad, why", [
    ("SCRAM-SHA-256$4096:abc", "malformed SCRAM"),
    ("$2b$12$tooshort", "malformed bcrypt"),
    ("$argon2id$v=19$nonsense", "malformed argon2"),
])
def test_malformed_hashes_refused_in_config(bad, why):
    with pytest.raises(ConfigError, match=rf"auth.users\[0\].password: {why}"):
        config_from_dict({"auth": {"users": [{"username": "a", "password": bad}]}})


def test_user_scopes_and_measurements_validated():
    c = config_from_dict({"auth": {"users": [{"username": "a", "password": "p", "scopes": ["write", "read"],
                                              "measurements": ["cpu", "mem*"]}]}})
    assert c.auth.users[0].scopes == ("read", "write") and c.auth.users[0].measurements == ("cpu", "mem*")
    with pytest.raises(ConfigError, match=r"auth.users\[0\].scopes: unknown scope 'root'"):
        config_from_dict({"auth": {"users": [{"username": "a", "password": "p", "scopes": ["root"]}]}})
    with pytest.raises(ConfigError, match=r"auth.users\[0\].measurements: expected a measurement name"):
        config_from_dict({"auth": {"users": [{"username": "a", "password": "p", "measurements": ["c*u"]}]}})
