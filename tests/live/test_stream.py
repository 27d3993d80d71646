"""/ws/v1/stream against the real ASGI application and the real channel layer (Redis):
who may connect, who receives what, and when (only after commit)."""

from __future__ import annotations

import time
from decimal import Decimal

import pytest
from django.db import transaction

from challenges.consumers import CLOSE_UNAUTHENTICATED
from challenges.models import Challenge, Order
from challenges.services import order_place
from tradesense.common.metrics import WEBSOCKET_CONNECTIONS, WEBSOCKET_CONNECTS
from tradesense.common.realtime import send_event_on_commit

pytestmark = pytest.mark.django_db(transaction=True)


def frame_types(frames):
    return [f["type"] for f in frames]


# --- who may connect ---------------------------------------------------------------------------


def test_refused_without_credentials(ws):
    connected, code = ws().connect()
    assert connected is False
    assert code == CLOSE_UNAUTHENTICATED


def test_refused_with_a_wrong_token(ws, trader, token_for):
    token_for(trader)
    connected, _ = ws(token="0" * 40).connect()
    assert connected is False


def test_refused_from_a_foreign_origin_even_with_a_valid_session(ws, trader, session_for):
    # Cross-site WebSocket hijacking: another site's page would carry the victim's cookie.
    connected, _ = ws(session=session_for(trader), origin=b"https://evil.example").connect()
    assert connected is False


def test_token_connects_and_is_auto_joined_to_own_challenges_only(ws, trader, other_trader, make_challenge, token_for):
    mine = [make_challenge(trader), make_challenge(trader)]
    make_challenge(other_trader)
    connects = WEBSOCKET_CONNECTS._value.get()
    open_before = WEBSOCKET_CONNECTIONS._value.get()

    client = ws(token=token_for(trader))
    assert client.connect()[0] is True
    ready = client.receive()
    assert ready == {"type": "stream.ready", "user": trader.pk, "challenges": sorted(c.pk for c in mine)}
    assert WEBSOCKET_CONNECTS._value.get() == connects + 1
    assert WEBSOCKET_CONNECTIONS._value.get() == open_before + 1
    client.close()
    assert WEBSOCKET_CONNECTIONS._value.get() == open_before


def test_session_cookie_connects(ws, trader, session_for):
    client = ws(session=session_for(trader))
    assert client.connect()[0] is True
    assert client.receive() == {"type": "stream.ready", "user": trader.pk, "challenges": []}


# --- who receives what ----------------------------------------------------------------------------


def test_a_fill_reaches_the_owner_only(ws, trader, other_trader, make_challenge, token_for, catalogue):
    challenge = make_challenge(trader)
    alice = ws(token=token_for(trader))
    bob = ws(token=token_for(other_trader))
    assert alice.connect()[0] and bob.connect()[0]
    alice.receive(), bob.receive()  # stream.ready

    result = order_place(challenge_id=challenge.pk, trader=trader, symbol="EURUSD", side="buy", qty=Decimal("0.10"))

    frames = alice.drain()
    # One channel-layer message per order; the socket gets its frames in this order.
    assert frame_types(frames) == ["order.filled", "position.updated", "equity.updated"]
    filled = next(f for f in frames if f["type"] == "order.filled")
    challenge.refresh_from_db()
    assert filled["challenge"] == challenge.pk
    assert filled["version"] == challenge.version  # the version the fill committed
    assert filled["data"]["id"] == result.order.pk
    assert filled["data"]["symbol"] == "EURUSD"
    assert Decimal(filled["data"]["qty"]) == Decimal("0.10")
    assert Decimal(filled["data"]["filled_avg_price"]) == Decimal("1.10000")
    position = next(f for f in frames if f["type"] == "position.updated")
    assert position["data"]["symbol"] == "EURUSD" and Decimal(position["data"]["qty"]) == Decimal("0.10")
    assert bob.nothing(1.0), "another trader received alice's events"


def test_subscribing_to_someone_elses_challenge_is_not_found_and_joins_nothing(
    ws, trader, other_trader, make_challenge, token_for
):
    challenge = make_challenge(trader)
    bob = ws(token=token_for(other_trader))
    assert bob.connect()[0]
    bob.receive()

    bob.send({"action": "subscribe", "challenge": challenge.pk})
    assert bob.receive() == {"type": "stream.error", "code": "not_found", "message": "Not found.", "challenge": challenge.pk}
    bob.send({"action": "subscribe", "challenge": 10**9})
    assert bob.receive()["code"] == "not_found"

    with transaction.atomic():
        send_event_on_commit(type="challenge.status", challenge=challenge.pk, version=2, data={"status": "failed"})
    assert bob.nothing(1.0)


def test_subscribe_to_own_challenge_and_unsubscribe(ws, trader, make_challenge, token_for):
    client = ws(token=token_for(trader))
    assert client.connect()[0]
    client.receive()
    challenge = make_challenge(trader)  # opened after the socket: not auto-joined

    client.send({"action": "subscribe", "challenge": challenge.pk})
    assert client.receive() == {"type": "stream.subscribed", "challenge": challenge.pk}
    with transaction.atomic():
        send_event_on_commit(type="risk.warning", challenge=challenge.pk, version=1, data={"rule": "max_daily_loss", "level": 50})
    frame = client.receive()
    assert frame == {
        "type": "risk.warning",
        "challenge": challenge.pk,
        "version": 1,
        "data": {"rule": "max_daily_loss", "level": 50},
    }

    client.send({"action": "unsubscribe", "challenge": challenge.pk})
    assert client.receive() == {"type": "stream.unsubscribed", "challenge": challenge.pk}
    with transaction.atomic():
        send_event_on_commit(type="risk.warning", challenge=challenge.pk, version=1, data={"rule": "max_daily_loss", "level": 80})
    assert client.nothing(0.8)


def test_purchase_events_reach_the_buyer_and_join_the_new_challenge(ws, trader, other_trader, make_challenge, token_for):
    alice = ws(token=token_for(trader))
    bob = ws(token=token_for(other_trader))
    assert alice.connect()[0] and bob.connect()[0]
    alice.receive(), bob.receive()

    challenge = make_challenge(trader)  # what a succeeded purchase does
    with transaction.atomic():
        send_event_on_commit(
            type="purchase.updated", user=trader.pk, data={"id": 7, "status": "succeeded", "challenge": challenge.pk}
        )
    assert alice.receive() == {
        "type": "purchase.updated",
        "challenge": None,
        "version": None,
        "data": {"id": 7, "status": "succeeded", "challenge": challenge.pk},
    }
    assert bob.nothing(0.8)
    # The socket joined the new challenge's group without a reconnect.
    with transaction.atomic():
        send_event_on_commit(type="challenge.status", challenge=challenge.pk, version=1, data={"status": "active"})
    assert alice.receive()["type"] == "challenge.status"


def test_client_messages_that_make_no_sense_get_an_error_not_a_crash(ws, trader, token_for):
    client = ws(token=token_for(trader))
    assert client.connect()[0]
    client.receive()
    client.send_text("not json")
    assert client.receive()["code"] == "malformed"
    client.send({"action": "launch"})
    assert client.receive()["code"] == "unknown_action"
    for bad in ("abc", -1, True, None, "1" * 30):
        client.send({"action": "subscribe", "challenge": bad})
        assert client.receive()["code"] == "invalid"
    client.send({"action": "ping"})
    assert client.receive() == {"type": "stream.pong"}


# --- when: only after commit ------------------------------------------------------------------------


def test_nothing_is_delivered_before_the_trade_commits(ws, trader, make_challenge, token_for, catalogue):
    challenge = make_challenge(trader)
    client = ws(token=token_for(trader))
    assert client.connect()[0]
    client.receive()

    with transaction.atomic():
        order_place(challenge_id=challenge.pk, trader=trader, symbol="EURUSD", side="buy", qty=Decimal("0.10"))
        # The fill is written but not committed: the socket must hear nothing yet.
        assert client.nothing(1.0), "an event was sent before the transaction committed"
    frames = client.drain()
    assert "order.filled" in frame_types(frames)


def test_nothing_is_ever_delivered_for_a_rolled_back_trade(ws, trader, make_challenge, token_for, catalogue):
    challenge = make_challenge(trader)
    client = ws(token=token_for(trader))
    assert client.connect()[0]
    client.receive()

    class Abort(Exception):
        pass

    with pytest.raises(Abort), transaction.atomic():
        order_place(challenge_id=challenge.pk, trader=trader, symbol="EURUSD", side="buy", qty=Decimal("0.10"))
        raise Abort
    assert client.nothing(1.0)
    assert not Order.objects.filter(challenge=challenge).exists()


# --- equity coalescing -------------------------------------------------------------------------------


def test_equity_updates_are_coalesced_per_challenge_and_keep_order(ws, trader, make_challenge, token_for):
    first, second = make_challenge(trader), make_challenge(trader)
    client = ws(token=token_for(trader))
    assert client.connect()[0]
    client.receive()

    # 40 equity updates on one challenge in a burst, 1 on another, then a status change.
    with transaction.atomic():
        for v in range(2, 42):
            send_event_on_commit(type="equity.updated", challenge=first.pk, version=v, data={"equity": f"{5000 + v}.00"})
        send_event_on_commit(type="equity.updated", challenge=second.pk, version=2, data={"equity": "4990.00"})
        send_event_on_commit(type="challenge.status", challenge=first.pk, version=42, data={"status": "failed"})
    started = time.monotonic()
    frames = client.drain(0.8)
    on_first = [f for f in frames if f["challenge"] == first.pk]
    equity_first = [f for f in on_first if f["type"] == "equity.updated"]

    # A burst arrives as at most a couple of frames (the first at once, the newest held
    # one flushed before the status change), never 40.
    assert 1 <= len(equity_first) <= 3, frame_types(on_first)
    assert equity_first[-1]["version"] == 41 and equity_first[-1]["data"] == {"equity": "5041.00"}
    # The skipped versions are declared, so the client sees no gap.
    if len(equity_first) > 1:
        assert equity_first[-1]["coalesced_from"] == equity_first[-2]["version"] + 1
    # Order per challenge is kept: the last equity frame comes before the status frame.
    assert [f["type"] for f in on_first][-1] == "challenge.status"
    # Another challenge's update is not swallowed by the first one's burst.
    assert [f["data"] for f in frames if f["challenge"] == second.pk] == [{"equity": "4990.00"}]
    assert time.monotonic() - started < 5


def test_a_held_equity_update_is_flushed_after_the_interval(ws, trader, make_challenge, token_for):
    challenge = make_challenge(trader)
    client = ws(token=token_for(trader))
    assert client.connect()[0]
    client.receive()

    with transaction.atomic():
        for v in (2, 3, 4):
            send_event_on_commit(type="equity.updated", challenge=challenge.pk, version=v, data={"equity": f"{v}.00"})
    frames = client.drain(0.8)
    assert [f["version"] for f in frames] == [2, 4]
    assert frames[1]["coalesced_from"] == 3
    assert "coalesced_from" not in frames[0]


def test_status_of_a_challenge_reaches_the_socket_with_its_version(ws, trader, make_challenge, token_for):
    challenge = make_challenge(trader)
    client = ws(token=token_for(trader))
    assert client.connect()[0]
    client.receive()
    Challenge.objects.filter(pk=challenge.pk).update(version=5)
    with transaction.atomic():
        send_event_on_commit(type="challenge.status", challenge=challenge.pk, version=5, data={"status": "passed"})
    assert client.receive() == {"type": "challenge.status", "challenge": challenge.pk, "version": 5, "data": {"status": "passed"}}


def test_a_single_frame_message_from_the_previous_release_is_still_forwarded(ws, trader, make_challenge, token_for):
    # During a rolling deploy, web processes of the previous release send {"frame": ...}.
    from asgiref.sync import async_to_sync
    from channels.layers import get_channel_layer

    challenge = make_challenge(trader)
    client = ws(token=token_for(trader))
    assert client.connect()[0]
    client.receive()
    frame = {"type": "challenge.status", "challenge": challenge.pk, "version": 1, "data": {"status": "active"}}
    async_to_sync(get_channel_layer().group_send)(f"challenge.{challenge.pk}", {"type": "stream.event", "frame": frame})
    assert client.receive() == frame
