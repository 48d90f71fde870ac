"""JSON Web Tokens, done carefully.

Accepted algorithms:

* ``HS256`` signed with ``auth.jwt_secret`` (at least 32 bytes; the server refuses to start with
  the default or a shorter secret, see :func:`check_config`). Tokens minted here use it.
* with ``auth.jwt_public_key`` (a PEM file), the algorithms of that key, for tokens minted
  elsewhere: ``RS256`` for an RSA key, ``ES256`` for a P-256 key, ``EdDSA`` for an Ed25519 key.

The algorithm is chosen from the token header but only among those, and each with its own key: a
token whose header says ``none``, an algorithm not configured, or HS256 keyed with the public key
(the classic confusion) is refused. ``exp`` is required; ``nbf`` and ``iat`` are honoured;
``aud`` / ``iss`` must match ``auth.jwt_audience`` / ``auth.jwt_issuer`` when set. Every refusal is
an :class:`~rusts.errors.AuthError` (HTTP 401 with a JSON error, pgwire 28P01) that says why.

Claims: ``sub`` (subject), ``scope`` (space-separated ``read write admin``; a token without it
may do nothing), ``measurements`` (optional list of names or ``prefix*``), ``exp``, ``iat``,
``nbf``, and ``aud``/``iss`` when configured.
"""

from __future__ import annotations

import functools
import time

import jwt

from rusts.errors import AuthError, ConfigError
from rusts.security.scopes import Principal, parse_measurements, parse_scopes

DEFAULT_SECRET = "change-me-in-production"
MIN_SECRET_BYTES = 32
LEEWAY_SECS = 5


def check_config(cfg) -> None:
    """Refuse to serve with auth enabled and a weak or default secret (a clear ConfigError)."""
    if not cfg.enabled:
        return
    secret = cfg.jwt_secret or ""
    if secret == DEFAULT_SECRET:
        raise ConfigError("auth.jwt_secret: still the default 'change-me-in-production'; with "
                          "auth.enabled set a random secret of at least 32 bytes (e.g. `openssl rand "
                          "-hex 32`)", key="auth.jwt_secret")
    if len(secret.encode()) < MIN_SECRET_BYTES:
        raise ConfigError(f"auth.jwt_secret: {len(secret.encode())} bytes is too short; with "
                          f"auth.enabled it must be at least {MIN_SECRET_BYTES} bytes (e.g. `openssl "
                          f"rand -hex 32`)", key="auth.jwt_secret")
    if getattr(cfg, "jwt_public_key", None):
        public_key(cfg.jwt_public_key)


@functools.lru_cache(maxsize=8)
def public_key(path: str):
    """(key object, algorithms) of a PEM public key file."""
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    try:
        with open(path, "rb") as fh:
            key = load_pem_public_key(fh.read())
    except OSError as e:
        raise ConfigError(f"auth.jwt_public_key: cannot read {path}: {e.strerror or e}",
                          key="auth.jwt_public_key") from None
    except ValueError as e:
        raise ConfigError(f"auth.jwt_public_key: {path} is not a PEM public key: {e}",
                          key="auth.jwt_public_key") from None
    if isinstance(key, rsa.RSAPublicKey):
        return key, ("RS256",)
    if isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp256r1":
        return key, ("ES256",)
    if isinstance(key, ed25519.Ed25519PublicKey):
        return key, ("EdDSA",)
    raise ConfigError(f"auth.jwt_public_key: {path}: unsupported key type (RSA, P-256 or Ed25519)",
                      key="auth.jwt_public_key")


def accepted_algorithms(cfg) -> tuple[str, ...]:
    algs = ("HS256",)
    if getattr(cfg, "jwt_public_key", None):
        algs += public_key(cfg.jwt_public_key)[1]
    return algs


def _key_for(cfg, alg: str):
    if alg == "HS256":
        return cfg.jwt_secret
    return public_key(cfg.jwt_public_key)[0]


_VERIFIED: dict[str, tuple[object, dict]] = {}  # token -> (auth config, claims): signature checked
_VERIFIED_MAX = 4096


def verify_token(cfg, token: str) -> dict:
    """The claims of a valid token, or :class:`AuthError` naming what is wrong.

    A token whose signature was verified under the same configuration is not verified again
    (a dashboard sends the same token with every request); its time claims are re-checked.
    """
    hit = _VERIFIED.get(token) if isinstance(token, str) else None
    if hit is not None and hit[0] is cfg:
        claims = hit[1]
        now = time.time()
        if claims["exp"] + LEEWAY_SECS >= now and claims.get("nbf", 0) - LEEWAY_SECS <= now:
            return claims
    claims = _verify(cfg, token)
    if len(_VERIFIED) >= _VERIFIED_MAX:
        _VERIFIED.clear()
    _VERIFIED[token] = (cfg, claims)
    return claims


def _verify(cfg, token: str) -> dict:
    if not isinstance(token, str) or token.count(".") != 2:
        raise AuthError("invalid token: not a JWT")
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise AuthError("invalid token: malformed header") from None
    alg = header.get("alg")
    algs = accepted_algorithms(cfg)
    if not isinstance(alg, str) or alg not in algs:
        raise AuthError(f"invalid token: algorithm {alg!r} not accepted (accepted: {', '.join(algs)})")
    aud = getattr(cfg, "jwt_audience", None)
    iss = getattr(cfg, "jwt_issuer", None)
    try:
        return jwt.decode(token, _key_for(cfg, alg), algorithms=[alg], audience=aud, issuer=iss,
                          leeway=LEEWAY_SECS,
                          options={"require": ["exp"] + (["aud"] if aud else []) + (["iss"] if iss else []),
                                   "verify_aud": aud is not None})
    except jwt.ExpiredSignatureError:
        raise AuthError("token expired") from None
    except jwt.ImmatureSignatureError:
        raise AuthError("token not yet valid (nbf/iat in the future)") from None
    except jwt.InvalidAudienceError:
        raise AuthError("invalid token: wrong audience") from None
    except jwt.InvalidIssuerError:
        raise AuthError("invalid token: wrong issuer") from None
    except jwt.InvalidSignatureError:
        raise AuthError("invalid token: bad signature") from None
    except jwt.MissingRequiredClaimError as e:
        raise AuthError(f"invalid token: missing claim {e.claim!r}") from None
    except jwt.PyJWTError as e:
        raise AuthError(f"invalid token: {e}") from None


def principal_of(claims: dict) -> Principal:
    """The principal a verified token speaks for."""
    try:
        scopes = parse_scopes(claims.get("scope") or "", "scope")
        ms = parse_measurements(claims.get("measurements"), "measurements")
    except ConfigError as e:
        raise AuthError(f"invalid token: {e}") from None
    return Principal(str(claims.get("sub", "")), scopes, ms)


def mint(cfg, subject: str, scopes, measurements=None, expires_secs: int | None = None,
         now: int | None = None) -> dict:
    """A new HS256 token: ``{"token", "expires_at", "token_type"}``."""
    now = int(time.time()) if now is None else now
    exp = now + int(expires_secs if expires_secs is not None else cfg.token_expiration_secs)
    claims = {"sub": subject, "iat": now, "nbf": now, "exp": exp,
              "scope": " ".join(s for s in ("read", "write", "admin") if s in set(scopes))}
    if measurements is not None:
        claims["measurements"] = list(measurements)
    if getattr(cfg, "jwt_audience", None):
        claims["aud"] = cfg.jwt_audience
    if getattr(cfg, "jwt_issuer", None):
        claims["iss"] = cfg.jwt_issuer
    token = jwt.encode(claims, cfg.jwt_secret, algorithm="HS256")
    return {"token": token, "expires_at": exp, "token_type": "Bearer"}
