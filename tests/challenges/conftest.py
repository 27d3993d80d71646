"""Fixtures for the trading tests: fresh, known prices and a helper to place orders."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.utils import timezone

from challenges.catalogue import install_catalogue
from challenges.models import Instrument, PriceTick

# Round prices so expected P&L is easy to check by hand.
TEST_PRICES = {
    "EURUSD": Decimal("1.10000"),
    "GBPUSD": Decimal("1.25000"),
    "XAUUSD": Decimal("2000.00"),
    "BTCUSD": Decimal("50000.00"),
    "ETHUSD": Decimal("3000.00"),
    "US500": Decimal("5000.00"),
    "AAPL": Decimal("100.00"),
    "TSLA": Decimal("200.00"),
}


def set_price(symbol: str, price: Decimal | str, *, at=None) -> Instrument:
    """Make `price` the current price of `symbol` now (a staff-style tick)."""
    at = at or timezone.now()
    instrument = Instrument.objects.get(symbol=symbol)
    instrument.price = Decimal(price)
    instrument.price_at = at
    instrument.save(update_fields=["price", "price_at"])
    PriceTick.objects.create(instrument=instrument, price=Decimal(price), at=at, source=PriceTick.Source.STAFF)
    return instrument


@pytest.fixture(autouse=True)
def fast_password_hashing(settings):
    # Users are created in nearly every test; PBKDF2's deliberate slowness is not under test.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def catalogue(db):
    # A transactional test flushes every table when it ends, data-migrated rows
    # included; reinstall what is missing so test order does not matter.
    install_catalogue(Instrument=Instrument, PriceTick=PriceTick)


@pytest.fixture
def market(catalogue):
    """Every instrument at a known, fresh price."""
    for symbol, price in TEST_PRICES.items():
        set_price(symbol, price)
    return set_price


@pytest.fixture
def challenge(make_challenge, trader, market):
    return make_challenge(trader, "starter")  # 5,000.00, leverage 30, 5 % daily, 10 % total, 10 % target


@pytest.fixture
def place(api):
    """POST an order through the API as `trader` and return the response."""

    def _place(challenge, symbol="EURUSD", side="buy", qty="0.10", client=None, headers=None, **extra):
        body = {"symbol": symbol, "side": side, "qty": qty, **extra}
        return (client or api).post(
            f"/api/v1/challenges/{challenge.pk}/orders", body, format="json", headers=headers or {}
        )

    return _place
