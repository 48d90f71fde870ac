"""Authentication for HTTP (JWT bearer tokens, basic auth) shared with pgwire.

When ``auth.enabled``, every route except /health, /ready, /ping and /auth/token needs
``Authorization: Bearer <jwt>`` (HS256, signed with ``auth.jwt_secret``), ``Token <jwt>``
(InfluxDB 2 clients), ``Basic <user:password>`` for a configured user, or ``?u=&p=`` (InfluxDB 1).
``POST /auth/token`` with ``{"username", "password"}`` issues a token valid for
``auth.token_expiration_secs``.
"""

from __future__ import annotations

import base64
import hmac
import time

import jwt

from rusts.errors import AuthError

ALGORITHMS = ["HS256"]


def _users(cfg) -> dict[str, str]:
    out = {}
    for u in getattr(cfg, "users", None) or ():
        name = u["username"] if isinstance(u, dict) else u.username
        pw = u["password"] if isinstance(u, dict) else u.password
        out[name] = pw
    return out


def check_password(cfg, username: str | None, password: str | None) -> bool:
    if not username or password is None:
        return False
    expected = _users(cfg).get(username)
    if expected is None:
        return False
    return hmac.compare_digest(expected.encode(), password.encode())


def verify_token(cfg, token: str) -> dict:
    try:
        return jwt.decode(token, cfg.jwt_secret, algorithms=ALGORITHMS, options={"require": ["exp"]},
                          leeway=30)
    except jwt.ExpiredSignatureError:
        raise AuthError("token expired") from None
    except jwt.PyJWTError:
        raise AuthError("invalid token") from None


def issue_token(cfg, username, password) -> dict:
    if not cfg.enabled:
        raise AuthError("authentication is disabled: no token needed")
    if not isinstance(username, str) or not isinstance(password, str) or not check_password(cfg, username, password):
        raise AuthError("invalid username or password")
    now = int(time.time())
    exp = now + int(cfg.token_expiration_secs)
    token = jwt.encode({"sub": username, "iat": now, "exp": exp}, cfg.jwt_secret, algorithm="HS256")
    return {"token": token, "expires_at": exp, "token_type": "Bearer"}


def verify_http(cfg, header: str | None, args) -> str:
    """Return the user name, or raise AuthError."""
    if header:
        scheme, _, cred = header.partition(" ")
        scheme = scheme.lower()
        cred = cred.strip()
        if scheme in ("bearer", "token"):
            return str(verify_token(cfg, cred).get("sub", ""))
        if scheme == "basic":
            try:
                user, _, pw = base64.b64decode(cred).decode().partition(":")
            except Exception:
                raise AuthError("malformed basic credentials") from None
            if check_password(cfg, user, pw):
                return user
            raise AuthError("invalid username or password")
        raise AuthError(f"unsupported authorization scheme {scheme!r}")
    u, p = args.get("u"), args.get("p")
    if u is not None:
        if check_password(cfg, u, p):
            return u
        raise AuthError("invalid username or password")
    raise AuthError("authentication required: send Authorization: Bearer <token>")
