"""Authentication: who is calling (HTTP and pgwire), as a :class:`~rusts.security.scopes.Principal`.

When ``auth.enabled``, every HTTP route except /health, /ready, /ping and /auth/token needs
``Authorization: Bearer <jwt>`` (see :mod:`rusts.security.tokens`), ``Token <jwt>`` (InfluxDB 2
clients), ``Basic <user:password>`` for a configured user, or ``?u=&p=`` (InfluxDB 1; ``p`` may
also be a token). ``POST /auth/token`` with ``{"username", "password"}`` issues a token valid for
``auth.token_expiration_secs`` carrying the user's scopes and measurements from the config. What a
principal may then do is :mod:`rusts.security.authorize`'s business.

Configured users (``auth.users``) have ``scopes`` (default: all three, as before scopes existed)
and optional ``measurements``; their passwords may be stored hashed (:mod:`rusts.security.passwords`).
"""

from __future__ import annotations

import base64

from rusts.errors import AuthError
from rusts.security import passwords, tokens
from rusts.security.scopes import SCOPES, Principal, parse_measurements, parse_scopes


def _user(cfg, username: str):
    for u in getattr(cfg, "users", None) or ():
        name = u["username"] if isinstance(u, dict) else u.username
        if name == username:
            return u
    return None


def _get(u, key, default=None):
    return u.get(key, default) if isinstance(u, dict) else getattr(u, key, default)


def user_principal(cfg, username: str) -> Principal | None:
    """The principal of configured user ``username`` (None when unknown)."""
    u = _user(cfg, username)
    if u is None:
        return None
    scopes = _get(u, "scopes")
    ms = _get(u, "measurements")
    return Principal(username, parse_scopes(scopes) if scopes is not None else frozenset(SCOPES),
                     parse_measurements(ms) if ms is not None else None)


def stored_password(cfg, username: str) -> str | None:
    u = _user(cfg, username)
    return None if u is None else _get(u, "password")


def check_password(cfg, username: str | None, password: str | None) -> bool:
    if not username or password is None:
        return False
    stored = stored_password(cfg, username)
    if stored is None:
        passwords.verify("x", str(password))  # same work for unknown users
        return False
    return passwords.verify(stored, password)


def verify_token(cfg, token: str) -> dict:
    """The claims of a valid token (:func:`rusts.security.tokens.verify_token`)."""
    return tokens.verify_token(cfg, token)


def token_principal(cfg, token: str) -> Principal:
    return tokens.principal_of(tokens.verify_token(cfg, token))


def issue_token(cfg, username, password) -> dict:
    """``POST /auth/token``: a token for a configured user with their scopes and measurements."""
    if not cfg.enabled:
        raise AuthError("authentication is disabled: no token needed")
    if not isinstance(username, str) or not isinstance(password, str) or not check_password(cfg, username, password):
        raise AuthError("invalid username or password")
    p = user_principal(cfg, username)
    return tokens.mint(cfg, username, p.scopes, p.measurements)


def authenticate_http(cfg, header: str | None, args) -> Principal:
    """The principal of an HTTP request, or :class:`AuthError` (401)."""
    if header:
        scheme, _, cred = header.partition(" ")
        scheme = scheme.lower()
        cred = cred.strip()
        if scheme in ("bearer", "token"):
            return token_principal(cfg, cred)
        if scheme == "basic":
            try:
                user, _, pw = base64.b64decode(cred, validate=True).decode().partition(":")
            except Exception:
                raise AuthError("malformed basic credentials") from None
            return _login(cfg, user, pw)
        raise AuthError(f"unsupported authorization scheme {scheme!r}")
    u, p = args.get("u"), args.get("p")
    if u is not None or p is not None:
        return _login(cfg, u or "", p or "")
    raise AuthError("authentication required: send Authorization: Bearer <token>")


def _login(cfg, user: str, password: str) -> Principal:
    if check_password(cfg, user, password):
        return user_principal(cfg, user)
    if password.count(".") == 2 and stored_password(cfg, user) is None:
        return token_principal(cfg, password)  # a token as the password (Grafana, InfluxDB 1 clients)
    raise AuthError("invalid username or password")


def verify_http(cfg, header: str | None, args) -> str:
    """The subject of an HTTP request's credentials, or :class:`AuthError`."""
    return authenticate_http(cfg, header, args).subject
