"""Stored passwords: plain text, SCRAM-SHA-256 verifiers, bcrypt or argon2 hashes.

The ``password`` of a user in ``auth.users`` may be:

* plain text (``s3cret``): fine for tests, readable by whoever reads the file;
* a PostgreSQL SCRAM verifier ``SCRAM-SHA-256$<iterations>:<salt b64>$<StoredKey b64>:<ServerKey b64>``
  (what ``SELECT rolpassword FROM pg_authid`` shows; make one with ``rusts-server password
  --scram``): pgwire clients log in with SCRAM without the server knowing the password;
* a bcrypt hash (``$2b$12$...``) or an argon2 hash (``$argon2id$...``): checked with the ``bcrypt``
  and ``argon2-cffi`` packages. pgwire cannot do SCRAM for these users (SCRAM needs the password
  or its verifier), so they log in with a cleartext password: require TLS (``postgres.require_tls``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

SCRAM_PREFIX = "SCRAM-SHA-256$"


def kind(stored: str) -> str:
    """``plain``, ``scram``, ``bcrypt`` or ``argon2``."""
    if stored.startswith(SCRAM_PREFIX):
        return "scram"
    if stored.startswith(("$2a$", "$2b$", "$2y$")):
        return "bcrypt"
    if stored.startswith("$argon2"):
        return "argon2"
    return "plain"


def parse_scram(stored: str):
    """A SCRAM verifier as :class:`rusts.protocols.pgwire._scram.ScramCredentials`; ValueError
    when malformed."""
    from rusts.protocols.pgwire._scram import ScramCredentials

    try:
        head, keys = stored[len(SCRAM_PREFIX):].split("$", 1)
        iters, salt = head.split(":", 1)
        stored_key, server_key = keys.split(":", 1)
        creds = ScramCredentials(base64.b64decode(salt, validate=True), int(iters),
                                 base64.b64decode(stored_key, validate=True),
                                 base64.b64decode(server_key, validate=True))
    except (ValueError, binascii.Error):
        raise ValueError("malformed SCRAM-SHA-256 verifier (expected "
                         "SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>)") from None
    if creds.iterations <= 0 or len(creds.stored_key) != 32 or len(creds.server_key) != 32:
        raise ValueError("malformed SCRAM-SHA-256 verifier (bad iterations or key length)")
    return creds


def scram_verifier(password: str, iterations: int = 4096, salt: bytes | None = None) -> str:
    """The SCRAM-SHA-256 verifier string of ``password`` (for the config file)."""
    from rusts.protocols.pgwire._scram import make_credentials

    c = make_credentials(password, salt, iterations)
    b = base64.b64encode
    return (f"{SCRAM_PREFIX}{c.iterations}:{b(c.salt).decode()}$"
            f"{b(c.stored_key).decode()}:{b(c.server_key).decode()}")


def validate(stored: str) -> None:
    """Raise ValueError if ``stored`` looks like a hash but cannot be one (config check)."""
    k = kind(stored)
    if k == "scram":
        parse_scram(stored)
    elif k == "argon2":
        from argon2 import extract_parameters
        from argon2.exceptions import InvalidHashError

        try:
            extract_parameters(stored)
        except (InvalidHashError, ValueError):
            raise ValueError("malformed argon2 hash") from None
    elif k == "bcrypt" and len(stored) != 60:
        raise ValueError("malformed bcrypt hash (expected 60 characters)")


def verify(stored: str, password: str) -> bool:
    """Whether ``password`` matches the stored password (constant time where it matters)."""
    if not isinstance(password, str):
        return False
    k = kind(stored)
    if k == "plain":
        return hmac.compare_digest(stored.encode(), password.encode())
    if k == "scram":
        from rusts.protocols.pgwire._scram import make_credentials

        try:
            c = parse_scram(stored)
        except ValueError:
            return False
        mine = make_credentials(password, c.salt, c.iterations)
        return hmac.compare_digest(hashlib.sha256(mine.stored_key).digest(),
                                   hashlib.sha256(c.stored_key).digest())
    if k == "bcrypt":
        import bcrypt

        try:
            return bcrypt.checkpw(password.encode()[:72], stored.encode())
        except ValueError:
            return False
    from argon2 import PasswordHasher
    from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

    try:
        return PasswordHasher().verify(stored, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError, ValueError):
        return False
