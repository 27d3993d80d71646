"""Bots connect with ?token= and no Origin header; browsers must come from our origin;
a request with no Origin can never ride on a session cookie."""

import pytest

pytestmark = pytest.mark.django_db(transaction=True)


def test_bot_with_token_and_no_origin_connects(ws, trader, token_for):
    client = ws(token=token_for(trader), origin=None)
    assert client.connect()[0] is True
    assert client.receive()["type"] == "stream.ready"


def test_no_origin_and_only_a_session_cookie_is_refused(ws, trader, session_for):
    connected, _ = ws(session=session_for(trader), origin=None).connect()
    assert connected is False


def test_no_origin_with_a_bad_token_and_a_good_cookie_is_refused(ws, trader, session_for):
    # The cookie is dropped when Origin is missing, so the bad token alone decides.
    connected, _ = ws(token="0" * 40, session=session_for(trader), origin=None).connect()
    assert connected is False


def test_foreign_origin_with_a_valid_token_is_refused(ws, trader, token_for):
    connected, _ = ws(token=token_for(trader), origin=b"https://evil.example").connect()
    assert connected is False
