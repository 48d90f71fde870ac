"""SCRAM-SHA-256 server side, checked against scramp's client (pg8000's implementation)."""

from __future__ import annotations

import base64

import pytest
import scramp

from rusts.errors import AuthError, ProtocolError
from rusts.protocols.pgwire import ScramServer, make_credentials


def exchange(server_password: str | None, client_password: str):
    client = scramp.ScramClient(["SCRAM-SHA-256"], "alice", client_password)
    creds = None if server_password is None else make_credentials(server_password)
    server = ScramServer(creds)
    first = server.process_client_first(client.get_client_first().encode())
    client.set_server_first(first.decode())
    final = server.process_client_final(client.get_client_final().encode())
    client.set_server_final(final.decode())  # raises if the server signature is wrong
    return first


def test_correct_password_authenticates_both_ways():
    first = exchange("s3cret", "s3cret")
    assert b",i=4096" in first


def test_wrong_password_is_rejected():
    with pytest.raises(AuthError) as info:
        exchange("s3cret", "nope")
    assert info.value.sqlstate == "28P01"


def test_unknown_user_fails_like_a_wrong_password():
    with pytest.raises(AuthError):
        exchange(None, "anything")


def test_rfc7677_test_vector():
    # RFC 7677 section 3: user, password "pencil", fixed nonces and salt.
    salt = base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ==")
    server = ScramServer(make_credentials("pencil", salt, 4096),
                         nonce="%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0")
    first = server.process_client_first(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO")
    assert first == (b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
                     b"s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096")
    final = server.process_client_final(
        b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
        b"p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
    assert final == b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="


@pytest.mark.parametrize("first", [b"x,,n=a,r=b", b"n,,r=b", b"n,,n=a", b"\xff", b"n,", b"n,,n=a,r="])
def test_malformed_client_first(first):
    with pytest.raises(ProtocolError):
        ScramServer(make_credentials("pw")).process_client_first(first)


def test_channel_binding_request_is_refused():
    with pytest.raises(ProtocolError) as info:
        ScramServer(make_credentials("pw")).process_client_first(b"p=tls-server-end-point,,n=,r=abc")
    assert info.value.sqlstate == "28000"


@pytest.mark.parametrize("final", [
    b"c=biws,r=WRONGNONCE,p=" + base64.b64encode(b"x" * 32),
    b"c=eSws,r={nonce},p=" + base64.b64encode(b"x" * 32),  # claims 'y,,' binding
    b"c=biws,r={nonce},p=!!notbase64",
    b"c=biws,r={nonce},p=" + base64.b64encode(b"short"),
    b"r={nonce},p=" + base64.b64encode(b"x" * 32),
])
def test_malformed_client_final(final):
    server = ScramServer(make_credentials("pw"))
    first = server.process_client_first(b"n,,n=,r=abc").decode()
    nonce = first.split(",")[0][2:]
    with pytest.raises(ProtocolError):
        server.process_client_final(final.replace(b"{nonce}", nonce.encode()))


def test_messages_out_of_order():
    server = ScramServer(make_credentials("pw"))
    with pytest.raises(ProtocolError):
        server.process_client_final(b"c=biws,r=a,p=b")
