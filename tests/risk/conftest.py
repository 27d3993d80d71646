from decimal import Decimal

import pytest

from challenges.market import market_price_set
from tests.risk.factories import flat_instrument
from tradesense.common import realtime


@pytest.fixture
def instrument(db):
    return flat_instrument("RSKTEST", price=Decimal("1000.00"))


@pytest.fixture
def set_price(staff):
    def _set(symbol: str, price: str | Decimal):
        return market_price_set(symbol=symbol, price=Decimal(price), actor=staff)

    return _set


@pytest.fixture
def live_events(monkeypatch):
    """Frames the code sends after commit, captured instead of going to the channel layer."""
    sent: list[dict] = []

    def fake_send(*, group, type, challenge, version, data):
        sent.append({"group": group, "type": type, "challenge": challenge, "version": version, "data": data})
        return True

    monkeypatch.setattr(realtime, "send_event_now", fake_send)
    return sent
