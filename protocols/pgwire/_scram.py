"""SCRAM-SHA-256 server side (RFC 5802, RFC 7677), sans-I/O.

Exchange, as PostgreSQL runs it inside AuthenticationSASL* / SASL*Response messages::

    client-first   gs2-header "n,," (or "y,,") + "n=<user>,r=<client nonce>"
    server-first   "r=<client nonce + server nonce>,s=<base64 salt>,i=<iterations>"
    client-final   "c=<base64 gs2-header>,r=<nonce>,p=<base64 ClientProof>"
    server-final   "v=<base64 ServerSignature>"

Keys: SaltedPassword = PBKDF2-HMAC-SHA256(password, salt, i); ClientKey = HMAC(SaltedPassword,
"Client Key"); StoredKey = SHA256(ClientKey); ServerKey = HMAC(SaltedPassword, "Server Key").
The server keeps only (salt, i, StoredKey, ServerKey) and checks that
SHA256(ClientProof XOR HMAC(StoredKey, AuthMessage)) == StoredKey.

Channel binding (SCRAM-SHA-256-PLUS) is not offered; a client asking for it ("p=") is refused.
The user name inside the SCRAM message is ignored (PostgreSQL uses the startup packet's user).
An unknown user runs the whole exchange against random credentials so that it fails the same way
as a wrong password and does not reveal which users exist.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import unicodedata

import attrs

from rusts.errors import AuthError

from ._reader import PgProtocolError

DEFAULT_ITERATIONS = 4096


@attrs.frozen
class ScramCredentials:
    """What the server stores for one user."""

    salt: bytes
    iterations: int
    stored_key: bytes
    server_key: bytes


def _hmac(key: bytes, msg: bytes) -> bytes:
    return hmac.new(key, msg, hashlib.sha256).digest()


def _saslprep(password: str) -> bytes:
    """Approximate SASLprep: NFKC-normalise non-ASCII passwords (as libpq does)."""
    if password.isascii():
        return password.encode()
    return unicodedata.normalize("NFKC", password).encode("utf-8")


def make_credentials(password: str, salt: bytes | None = None,
                     iterations: int = DEFAULT_ITERATIONS) -> ScramCredentials:
    """Derive stored credentials from a cleartext password."""
    salt = secrets.token_bytes(16) if salt is None else salt
    salted = hashlib.pbkdf2_hmac("sha256", _saslprep(password), salt, iterations)
    client_key = _hmac(salted, b"Client Key")
    return ScramCredentials(salt, iterations, hashlib.sha256(client_key).digest(),
                            _hmac(salted, b"Server Key"))


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode("ascii")


def _malformed(what: str) -> PgProtocolError:
    return PgProtocolError(f"malformed SCRAM message ({what})")


def _attrs(text: str, what: str) -> list[tuple[str, str]]:
    out = []
    for part in text.split(","):
        if len(part) < 2 or part[1] != "=":
            raise _malformed(what)
        out.append((part[0], part[2:]))
    return out


class ScramServer:
    """One SCRAM-SHA-256 exchange.

    Args:
        credentials: the user's stored credentials, or None for an unknown user (the exchange
            then fails at the proof check).
        nonce: server nonce override (tests); random by default.
    """

    def __init__(self, credentials: ScramCredentials | None, nonce: str | None = None) -> None:
        self._known = credentials is not None
        self._creds = credentials or make_credentials(secrets.token_hex(16))
        self._server_nonce = nonce or _b64(secrets.token_bytes(18))
        self._client_first_bare = ""
        self._server_first = ""
        self._nonce = ""
        self._gs2 = ""
        self._step = 0

    def process_client_first(self, data: bytes) -> bytes:
        """Take client-first-message, return server-first-message."""
        if self._step != 0:
            raise _malformed("unexpected client-first-message")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise _malformed("not UTF-8") from None
        if text.startswith("p="):
            raise PgProtocolError("SCRAM channel binding is not supported", sqlstate="28000")
        if not (text.startswith("n,") or text.startswith("y,")):
            raise _malformed("bad GS2 header")
        comma = text.find(",", 2)
        if comma < 0:
            raise _malformed("bad GS2 header")
        self._gs2 = text[:comma + 1]
        self._client_first_bare = text[comma + 1:]
        fields = _attrs(self._client_first_bare, "client-first-message")
        if len(fields) < 2 or fields[0][0] != "n" or fields[1][0] != "r" or not fields[1][1]:
            raise _malformed("client-first-message needs n= and r=")
        client_nonce = fields[1][1]
        if not client_nonce.isprintable() or "," in client_nonce:
            raise _malformed("bad nonce")
        self._nonce = client_nonce + self._server_nonce
        self._server_first = f"r={self._nonce},s={_b64(self._creds.salt)},i={self._creds.iterations}"
        self._step = 1
        return self._server_first.encode()

    def process_client_final(self, data: bytes) -> bytes:
        """Check client-final-message, return server-final-message.

        Raises:
            AuthError: the proof is wrong (wrong password or unknown user).
            PgProtocolError: the message is malformed.
        """
        if self._step != 1:
            raise _malformed("unexpected client-final-message")
        self._step = 2
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise _malformed("not UTF-8") from None
        fields = _attrs(text, "client-final-message")
        if len(fields) < 3 or fields[0][0] != "c" or fields[1][0] != "r" or fields[-1][0] != "p":
            raise _malformed("client-final-message needs c=, r= and p=")
        if fields[0][1] != _b64(self._gs2.encode()):
            raise _malformed("unexpected channel binding data")
        if fields[1][1] != self._nonce:
            raise _malformed("nonce does not match")
        try:
            proof = base64.b64decode(fields[-1][1], validate=True)
        except ValueError:
            raise _malformed("bad proof encoding") from None
        if len(proof) != 32:
            raise _malformed("bad proof length")
        without_proof = text[:text.rfind(",p=")]
        auth_message = ",".join((self._client_first_bare, self._server_first, without_proof)).encode()
        signature = _hmac(self._creds.stored_key, auth_message)
        client_key = bytes(a ^ b for a, b in zip(proof, signature))
        ok = hmac.compare_digest(hashlib.sha256(client_key).digest(), self._creds.stored_key)
        if not (ok and self._known):
            raise AuthError("password authentication failed")
        return ("v=" + _b64(_hmac(self._creds.server_key, auth_message))).encode()
