from decimal import Decimal

import pytest

from challenges.market import market_price_set
from tests.risk.factories import flat_instrument


@pytest.fixture
def instrument(db):
    return flat_instrument("RSKTEST", price=Decimal("1000.00"))


@pytest.fixture
def set_price(staff):
    def _set(symbol: str, price: str | Decimal):
        return market_price_set(symbol=symbol, price=Decimal(price), actor=staff)

    return _set
