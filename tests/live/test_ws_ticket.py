"""WebSocket tickets (tradesense/ws_auth.py, accounts.services): a bot trades its API
token for a single-use, short-lived ticket and connects with `?ticket=`; a long-lived
token in the URL is no longer accepted; only active users get through, on every path."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from accounts.models import WsTicket
from tests.live.conftest import ticket_for_token

# The consumer reads the database from another thread: committed rows only.
pytestmark = pytest.mark.django_db(transaction=True)


def _ticket(token: str) -> dict:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    response = client.post("/api/v1/auth/ws-ticket")
    assert response.status_code == 201, response.content
    return response.json()


def test_a_ticket_opens_one_socket_once(ws, trader, token_for, settings):
    body = _ticket(token_for(trader))
    expires = timezone.datetime.fromisoformat(body["expires"].replace("Z", "+00:00"))
    assert timedelta(0) < expires - timezone.now() <= settings.WS_TICKET_TTL
    first = ws(ticket=body["ticket"], origin=None)
    assert first.connect()[0]
    ready = first.receive()
    assert ready["type"] == "stream.ready" and ready["user"] == trader.pk
    assert not ws(ticket=body["ticket"], origin=None).connect()[0]  # used
    assert not WsTicket.objects.exists()


def test_an_expired_ticket_is_refused(ws, trader, token_for):
    ticket = _ticket(token_for(trader))["ticket"]
    WsTicket.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    assert not ws(ticket=ticket, origin=None).connect()[0]


def test_an_inactive_user_is_refused_on_every_path(ws, trader, token_for, session_for):
    ticket = _ticket(token_for(trader))["ticket"]
    session = session_for(trader)
    # Deactivated behind the services' back (no revocation ran): the checks themselves refuse.
    type(trader).objects.filter(pk=trader.pk).update(is_active=False)
    assert not ws(ticket=ticket, origin=None).connect()[0]
    assert not ws(session=session).connect()[0]


def test_deactivation_revokes_unused_tickets(ws, trader, token_for):
    ticket = _ticket(token_for(trader))["ticket"]
    trader.is_active = False
    trader.save()
    assert not WsTicket.objects.exists()
    trader.is_active = True
    trader.save()
    assert not ws(ticket=ticket, origin=None).connect()[0]


def test_a_long_lived_token_in_the_url_is_no_longer_accepted(ws, trader, token_for):
    token = token_for(trader)
    assert not ws(path=f"/ws/v1/stream?token={token}", origin=None).connect()[0]
    assert not ws(path=f"/ws/v1/stream?token={token}").connect()[0]  # with our Origin too


def test_a_bad_ticket_never_falls_back_to_the_cookie(ws, trader, session_for):
    assert not ws(ticket="not-a-ticket", session=session_for(trader)).connect()[0]


def test_browsers_keep_the_session_cookie(ws, trader, session_for):
    client = ws(session=session_for(trader))
    assert client.connect()[0]
    assert client.receive()["type"] == "stream.ready"


def test_a_ticket_needs_credentials_and_is_not_a_token(trader, token_for):
    assert APIClient().post("/api/v1/auth/ws-ticket").status_code == 401
    ticket = ticket_for_token(token_for(trader))
    as_token = APIClient()
    as_token.credentials(HTTP_AUTHORIZATION=f"Token {ticket}")
    assert as_token.get("/api/v1/challenges").status_code == 401
    # A session (with CSRF, as the dashboard sends it) may ask for one too.
    browser = APIClient()
    browser.force_authenticate(user=trader)
    assert browser.post("/api/v1/auth/ws-ticket").status_code == 201
