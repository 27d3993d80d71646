"""The plan list and the instrument catalogue are served from the cache, a write is
visible on the very next read, and the look-ups are counted for /metrics.

Transactional tests: the cache is filled when the reading transaction commits, as in
production, where a GET runs in autocommit."""

from decimal import Decimal

import pytest
from django.core.cache import cache
from django.db import transaction
from rest_framework.test import APIClient

from challenges.catalogue import INSTRUMENTS_CACHE, PLANS_CACHE
from challenges.models import Instrument, Plan
from challenges.services import plan_save
from risk.services import plan_apply_rule_preset
from tests.foundation.test_health import sample

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def empty_cache():
    keys = [PLANS_CACHE.key, INSTRUMENTS_CACHE.key]
    cache.delete_many(keys)
    yield
    cache.delete_many(keys)  # a flushed database must not leave its plans to the next test


def lookups(cache_name: str) -> tuple[float, float]:
    """(hits, misses) as an operator reads them on /metrics."""
    body = APIClient().get("/metrics").content.decode()
    return (
        sample(body, "tradesense_cache_requests_total", cache=cache_name, result="hit"),
        sample(body, "tradesense_cache_requests_total", cache=cache_name, result="miss"),
    )


def plan_prices() -> dict[str, str]:
    return {p["slug"]: p["price"] for p in APIClient().get("/api/v1/plans").json()["results"]}


def test_plans_come_from_the_cache_and_every_write_shows_on_the_next_read(plans, staff):
    hits, misses = lookups("plans")
    assert plan_prices() == {"starter": "200.00", "pro": "500.00", "elite": "1000.00"}
    assert lookups("plans") == (hits, misses + 1)
    for _ in range(3):
        assert plan_prices()["starter"] == "200.00"
    assert lookups("plans") == (hits + 3, misses + 1)

    # The operator's edit (admin -> plan_save) is on the next page view.
    starter = Plan.objects.get(slug="starter")
    starter.price = Decimal("250.00")
    plan_save(plan=starter, actor=staff)
    assert plan_prices()["starter"] == "250.00"
    assert lookups("plans") == (hits + 3, misses + 2)

    # So is any other writer's: a rule preset (risk app), a plan created directly.
    plan_apply_rule_preset(plan=Plan.objects.get(slug="pro"), preset="ftmo_like", actor=staff)
    pro = next(p for p in APIClient().get("/api/v1/plans").json()["results"] if p["slug"] == "pro")
    assert (pro["daily_reset_tz"], pro["ruleset_version"]) == ("Europe/Prague", 2)
    Plan.objects.create(slug="mini", name="Mini", price=Decimal("99.00"), currency="MAD",
                        starting_balance=Decimal("2500.00"), account_currency="USD", sort_order=0)
    elite = Plan.objects.get(slug="elite")
    elite.is_active = False  # retired
    elite.save()
    assert plan_prices() == {"mini": "99.00", "starter": "250.00", "pro": "500.00"}


def test_a_rolled_back_write_is_never_cached(plans):
    with pytest.raises(RuntimeError), transaction.atomic():
        starter = Plan.objects.get(slug="starter")
        starter.price = Decimal("1.00")
        starter.save()
        # Read inside the failing transaction: it sees its own write...
        assert plan_prices()["starter"] == "1.00"
        raise RuntimeError("the write is abandoned")
    # ...which must not outlive it in the cache.
    assert plan_prices()["starter"] == "200.00"


def market() -> dict[str, dict]:
    return {row["symbol"]: row for row in APIClient().get("/api/v1/market/prices").json()["results"]}


def test_instrument_terms_are_cached_but_prices_and_listing_are_always_fresh(catalogue, staff):
    from challenges.market import market_price_set

    hits, misses = lookups("instruments")
    first = market()
    assert first["EURUSD"]["contract_size"] == "100000" and first["XAUUSD"]["qty_step"] == "0.01"
    market()
    assert lookups("instruments") == (hits + 1, misses + 1)

    # A price move every second is not a catalogue change: still a hit, new price shown.
    market_price_set(symbol="XAUUSD", price=Decimal("2412.50"), actor=staff)
    assert Decimal(market()["XAUUSD"]["price"]) == Decimal("2412.50")
    assert lookups("instruments") == (hits + 2, misses + 1)

    # A change of terms is on the next read.
    gold = Instrument.objects.get(symbol="XAUUSD")
    gold.contract_size = Decimal("50")
    gold.save()
    assert market()["XAUUSD"]["contract_size"] == "50"

    # Listing and delisting come from the database, whatever wrote them.
    Instrument.objects.filter(symbol="TSLA").update(is_active=False)
    assert "TSLA" not in market()
    Instrument.objects.bulk_create(
        [Instrument(symbol="NEWUSD", name="New", asset_class="forex", contract_size=Decimal("1000"),
                    initial_price=Decimal("1.5"), volatility=Decimal("0.0001"), price=Decimal("1.5"),
                    price_at=gold.price_at)]
    )
    listed = market()
    assert listed["NEWUSD"]["contract_size"] == "1000" and Decimal(listed["NEWUSD"]["price"]) == Decimal("1.5")
    assert "TSLA" not in listed
