"""JWT verification: every way a token can be wrong is a 401 that says why."""

import time

import attrs
import jwt
import pytest

from rusts.config import config_from_dict
from rusts.errors import AuthError, ConfigError
from rusts.security.tokens import mint, principal_of, verify_token

from .conftest import SECRET, pem_public

NOW = int(time.time())


def _claims(**kw):
    return {"sub": "s", "scope": "read", "iat": NOW, "exp": NOW + 600, **kw}


def test_minted_token_round_trips(auth_cfg):
    tok = mint(auth_cfg, "ann", {"read", "write"}, ("cpu", "mem*"))["token"]
    p = principal_of(verify_token(auth_cfg, tok))
    assert p.subject == "ann" and p.scopes == {"read", "write"} and p.measurements == ("cpu", "mem*")
    assert p.allows("read", "mem_free") and not p.allows("read", "disk") and not p.allows("admin")


@pytest.mark.parametrize("make, why", [
    (lambda: jwt.encode(_claims(), None, algorithm="none"), "algorithm 'none' not accepted"),
    (lambda: jwt.encode(_claims(), SECRET * 2, algorithm="HS512"), "algorithm 'HS512' not accepted"),
    (lambda: jwt.encode(_claims(), "another-secret-of-at-least-32-bytes!!", algorithm="HS256"), "bad signature"),
    (lambda: jwt.encode(_claims(exp=NOW - 60), SECRET, algorithm="HS256"), "expired"),
    (lambda: jwt.encode(_claims(nbf=NOW + 600), SECRET, algorithm="HS256"), "not yet valid"),
    (lambda: jwt.encode({"sub": "s", "scope": "read"}, SECRET, algorithm="HS256"), "missing claim 'exp'"),
    (lambda: "garbage", "not a JWT"),
    (lambda: "a.b.c", "malformed"),
])
def test_bad_tokens_are_refused_with_a_reason(auth_cfg, make, why):
    with pytest.raises(AuthError, match=why) as e:
        verify_token(auth_cfg, make())
    assert e.value.http_status == 401


def test_audience_and_issuer(auth_cfg):
    cfg = attrs.evolve(auth_cfg, jwt_audience="rusts", jwt_issuer="https://idp")
    good = jwt.encode(_claims(aud="rusts", iss="https://idp"), SECRET, algorithm="HS256")
    assert verify_token(cfg, good)["sub"] == "s"
    for claims, why in ((_claims(aud="other", iss="https://idp"), "wrong audience"),
                        (_claims(aud="rusts", iss="https://evil"), "wrong issuer"),
                        (_claims(iss="https://idp"), "missing claim 'aud'")):
        with pytest.raises(AuthError, match=why):
            verify_token(cfg, jwt.encode(claims, SECRET, algorithm="HS256"))
    assert verify_token(cfg, mint(cfg, "m", {"read"})["token"])["aud"] == "rusts"


@pytest.mark.parametrize("which, alg", [("rsa", "RS256"), ("ed", "EdDSA")])
def test_public_key_tokens(tmp_path, auth_cfg, rsa_key, ed_key, which, alg):
    key = rsa_key if which == "rsa" else ed_key
    path = tmp_path / "pub.pem"
    path.write_bytes(pem_public(key))
    cfg = attrs.evolve(auth_cfg, jwt_public_key=str(path))
    assert verify_token(cfg, jwt.encode(_claims(), key, algorithm=alg))["sub"] == "s"
    # HS256 keyed with the public key (algorithm confusion) is a bad signature, not a login
    forged = jwt.api_jws.PyJWS(algorithms=["HS256"])
    forged._algorithms["HS256"].prepare_key = lambda k: k  # allow a PEM as an HMAC key for the forgery
    tok = forged.encode(jwt.utils.force_bytes('{"sub":"s","scope":"admin","exp":%d}' % (NOW + 600)),
                        pem_public(key), algorithm="HS256")
    with pytest.raises(AuthError, match="bad signature"):
        verify_token(cfg, tok)
    with pytest.raises(AuthError, match="not accepted"):  # RS256 without a configured key
        verify_token(auth_cfg, jwt.encode(_claims(), key, algorithm=alg))


@pytest.mark.parametrize("secret, why", [(None, "still the default"), ("short", "too short"),
                                         ("x" * 31, "too short")])
def test_weak_secret_refused_when_enabled(secret, why):
    auth = {"enabled": True} if secret is None else {"enabled": True, "jwt_secret": secret}
    with pytest.raises(ConfigError, match=f"auth.jwt_secret: .*{why}"):
        config_from_dict({"auth": auth})
    config_from_dict({"auth": {"enabled": False, "jwt_secret": "short"}})  # off: nothing to protect


def test_unreadable_public_key_refused(tmp_path):
    with pytest.raises(ConfigError, match="auth.jwt_public_key: cannot read"):
        config_from_dict({"auth": {"enabled": True, "jwt_secret": SECRET,
                                   "jwt_public_key": str(tmp_path / "nope.pem")}})
    (tmp_path / "bad.pem").write_text("not a key")
    with pytest.raises(ConfigError, match="not a PEM public key"):
        config_from_dict({"auth": {"enabled": True, "jwt_secret": SECRET,
                                   "jwt_public_key": str(tmp_path / "bad.pem")}})
