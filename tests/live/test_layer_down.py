"""The channel layer (Redis) is unreachable: a trade still commits and answers at once,
the lost events are counted, and the socket is closed cleanly instead of crashing."""

from __future__ import annotations

import time
import uuid
from decimal import Decimal

import pytest
from django.test import override_settings

from challenges.consumers import CLOSE_LAYER_DOWN
from challenges.models import Order
from tradesense.common.metrics import REALTIME_EVENTS_SENT, REALTIME_SEND_FAILURES

pytestmark = pytest.mark.django_db(transaction=True)

# Nothing listens here (the top of this engineer's port range): connection refused.
DEAD_LAYER = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {"hosts": ["redis://127.0.0.1:18397/0"]},
    }
}


def test_a_trade_succeeds_and_its_events_are_counted_as_failed_when_redis_is_down(
    trader, make_challenge, client_for, catalogue
):
    challenge = make_challenge(trader)
    api = client_for(trader)
    failures, sent = REALTIME_SEND_FAILURES._value.get(), REALTIME_EVENTS_SENT._value.get()

    with override_settings(CHANNEL_LAYERS=DEAD_LAYER):
        started = time.monotonic()
        response = api.post(
            f"/api/v1/challenges/{challenge.pk}/orders",
            {"symbol": "EURUSD", "side": "buy", "qty": "0.10", "type": "market", "client_order_id": "live-down-1"},
            format="json",
            headers={"Idempotency-Key": uuid.uuid4().hex},
        )
        elapsed = time.monotonic() - started

    assert response.status_code == 201, response.content
    assert response.json()["status"] == "filled"
    order = Order.objects.get(challenge=challenge, client_order_id="live-down-1")
    assert order.filled_qty == Decimal("0.10")
    challenge.refresh_from_db()
    assert challenge.positions.get().qty == Decimal("0.10")
    # Every event of the fill was attempted, failed, logged and counted; none "sent".
    assert REALTIME_SEND_FAILURES._value.get() - failures >= 2
    assert REALTIME_EVENTS_SENT._value.get() == sent
    assert elapsed < 2.0, f"the trade waited {elapsed:.2f}s on a dead channel layer"


def test_the_socket_is_closed_cleanly_when_the_layer_is_down(ws, trader, token_for):
    token = token_for(trader)
    with override_settings(CHANNEL_LAYERS=DEAD_LAYER):
        connected, code = ws(token=token).connect()
    # Refused with the "layer down" code (the client keeps polling and retries); the
    # consumer did not raise into the server.
    assert connected is False
    assert code == CLOSE_LAYER_DOWN
