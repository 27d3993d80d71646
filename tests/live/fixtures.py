"""Fixtures shared by the live, failure and browser tests of the dashboard."""

from __future__ import annotations

import importlib
from decimal import Decimal

import pytest
from django.apps import apps as django_apps


@pytest.fixture
def catalogue(db):
    """The instrument catalogue (a transactional test's flush removes the migration's
    rows), at fresh prices."""
    migration = importlib.import_module("challenges.migrations.0003_instrument_catalogue")
    migration.add_catalogue(django_apps, None)
    from challenges.market import market_price_set

    def _price(symbol: str, price: str, staff=None):
        return market_price_set(symbol=symbol, price=Decimal(price), actor=staff)

    _price("EURUSD", "1.10000")
    return _price
