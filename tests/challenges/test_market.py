"""The market: reproducible simulation, the tick task, the feed adapter and its
fallback, staff prices, and stale prices never used for a fill."""

from datetime import timedelta
from decimal import Decimal as D

import pytest
from django.contrib.auth.models import Permission
from django.utils import timezone

from challenges import market as mkt
from challenges.models import Instrument, Order, PriceTick
from challenges.tasks import market_tick as market_tick_task
from tradesense.common.models import AuditEvent

from .conftest import set_price


def path(seed, symbol="EURUSD", steps=200, start=D("1.08500"), first=1):
    return mkt.sim_path(
        start_price=start, seed=seed, symbol=symbol, first_step=first, steps=steps, volatility=D("0.0004"),
        price_decimals=5,
    )


def test_same_seed_same_path_other_seed_other_path():
    a, b = path(7), path(7)
    assert a == b
    assert len(set(a)) > 50  # it moves
    assert path(8) != a
    assert path(7, symbol="GBPUSD") != a
    assert all(p > 0 and p == p.quantize(D("0.00001")) for p in a)


def test_a_path_is_pinned_so_it_stays_reproducible_across_releases():
    # If this changes, every stored replay and demo changes: the walk is part of the contract.
    assert path(20261129, steps=5) == [D("1.08483"), D("1.08502"), D("1.08556"), D("1.08557"), D("1.08518")]


def test_shock_has_roughly_unit_variance_and_zero_mean():
    shocks = [mkt.sim_shock(seed=1, symbol="X", step=n) for n in range(4000)]
    mean = sum(shocks) / len(shocks)
    variance = sum((s - mean) ** 2 for s in shocks) / len(shocks)
    assert abs(mean) < D("0.06")
    assert D("0.9") < variance < D("1.1")
    assert all(D("-6") <= s <= D("6") for s in shocks)


def test_a_path_resumes_identically_after_an_interruption():
    whole = path(99, steps=100)
    first = path(99, steps=40)
    rest = path(99, steps=60, start=first[-1], first=41)
    assert first + rest == whole


@pytest.mark.django_db
def test_catalogue_is_installed_by_migration():
    symbols = set(Instrument.objects.values_list("symbol", flat=True))
    assert {"EURUSD", "GBPUSD", "XAUUSD", "BTCUSD", "ETHUSD", "US500", "AAPL", "TSLA"} <= symbols
    assert set(Instrument.objects.values_list("quote_currency", flat=True)) == {"USD"}
    assert all(PriceTick.objects.filter(instrument__symbol=s).exists() for s in symbols)


def test_market_tick_replays_the_seeded_walk_and_records_history(settings, catalogue):
    settings.MARKET_SEED = 4242
    eur = Instrument.objects.get(symbol="EURUSD")
    start, step0 = eur.price, eur.sim_step
    now = timezone.now()
    for i in range(5):
        market_tick_task.run() if i == 0 else mkt.market_tick(now=now + timedelta(seconds=i))
    eur.refresh_from_db()
    expected = mkt.sim_path(
        start_price=start, seed=mkt.instrument_seed(eur), symbol="EURUSD", first_step=step0 + 1, steps=5,
        volatility=eur.volatility, price_decimals=eur.price_decimals,
    )
    ticks = list(PriceTick.objects.filter(instrument=eur, source="sim", step__gt=step0).order_by("step"))
    assert [t.price for t in ticks] == expected
    assert eur.price == expected[-1] == ticks[-1].price
    assert eur.price_at == ticks[-1].at  # the current price is the last tick, same transaction
    assert eur.sim_step == step0 + 5


class FakeFeed(mkt.PriceFeed):
    name = "fake"

    def __init__(self, quotes=None, error=None):
        self.quotes, self.error, self.calls = quotes or {}, error, 0

    def fetch(self, *, symbols, timeout):
        self.calls += 1
        if self.error:
            raise self.error
        return self.quotes


def test_a_fresh_feed_drives_prices_and_the_simulation_fills_the_gaps(catalogue):
    now = timezone.now()
    feed = FakeFeed({"EURUSD": mkt.Quote("EURUSD", D("1.23456"), now - timedelta(seconds=1))})
    before = {i.symbol: i.sim_step for i in Instrument.objects.all()}
    ticks = mkt.market_tick(now=now, feed=feed)
    by_symbol = {t.instrument.symbol: t for t in ticks}
    assert by_symbol["EURUSD"].source == "feed" and by_symbol["EURUSD"].price == D("1.23456")
    assert all(by_symbol[s].source == "sim" for s in by_symbol if s != "EURUSD")
    eur = Instrument.objects.get(symbol="EURUSD")
    assert (eur.price, eur.price_at, eur.sim_step) == (D("1.23456"), now, before["EURUSD"])


@pytest.mark.parametrize(
    "feed",
    [
        FakeFeed(error=mkt.FeedError("connection refused")),
        FakeFeed(error=TimeoutError("read timed out")),
        FakeFeed({"EURUSD": mkt.Quote("EURUSD", D("1.3"), timezone.now() - timedelta(hours=1))}),  # stale
        FakeFeed({"EURUSD": mkt.Quote("EURUSD", D("-1"), timezone.now())}),  # nonsense
        FakeFeed({"EURUSD": "garbage"}),
        FakeFeed({}),  # the feed does not cover the symbol
    ],
    ids=["error", "timeout", "stale", "negative", "garbage", "missing"],
)
def test_when_the_feed_fails_or_is_stale_prices_keep_moving(feed, catalogue):
    eur = Instrument.objects.get(symbol="EURUSD")
    prices = []
    for i in range(3):
        now = timezone.now() + timedelta(seconds=i)
        mkt.market_tick(now=now, feed=feed)
        eur.refresh_from_db()
        prices.append(eur.price)
        assert eur.price_at == now  # fresh: trading goes on
        assert PriceTick.objects.filter(instrument=eur, at=now).get().source == "sim"
    assert len(set(prices)) > 1 or prices[0] != D("1.08500")
    assert feed.calls == 3 or not feed.error


def test_http_json_feed_parses_and_fails_soft(monkeypatch):
    import httpx

    now = timezone.now()
    payload = {"prices": [
        {"symbol": "EURUSD", "price": "1.0851", "at": now.isoformat()},
        {"symbol": "BAD", "price": "NaN", "at": now.isoformat()},
        {"symbol": "NOAT", "price": "1"},
        {"symbol": "NAIVE", "price": "1", "at": "2026-01-01T00:00:00"},
    ]}

    class Resp:
        def raise_for_status(self):
            return None

        def json(self):
            return payload

    monkeypatch.setattr(httpx, "get", lambda *a, **k: Resp())
    quotes = mkt.HttpJsonFeed("http://127.0.0.1:18099/prices").fetch(symbols=["EURUSD"], timeout=0.5)
    assert list(quotes) == ["EURUSD"] and quotes["EURUSD"].price == D("1.0851")

    def boom(*a, **k):
        raise httpx.ConnectError("refused")

    monkeypatch.setattr(httpx, "get", boom)
    with pytest.raises(mkt.FeedError):
        mkt.HttpJsonFeed("http://127.0.0.1:18099/prices").fetch(symbols=["EURUSD"], timeout=0.5)


def test_stale_price_is_refused_with_503(challenge, place, settings):
    settings.MARKET_SIM_CATCHUP_ON_FILL = False
    set_price("EURUSD", D("1.10000"), at=timezone.now() - timedelta(seconds=settings.MARKET_PRICE_MAX_AGE_SECONDS + 1))
    response = place(challenge, "EURUSD", "buy", "0.10")
    assert response.status_code == 503
    assert response["Retry-After"] == "2"
    assert response.json()["error"]["code"] == "stale_price"
    assert not Order.objects.exists()
    challenge.refresh_from_db()
    assert challenge.version == 1


def test_stale_price_of_a_held_position_is_refused_too(challenge, place, settings):
    assert place(challenge, "AAPL", "buy", "1").status_code == 201
    settings.MARKET_SIM_CATCHUP_ON_FILL = False
    set_price("AAPL", D("100.00"), at=timezone.now() - timedelta(minutes=5))
    response = place(challenge, "EURUSD", "buy", "0.10")
    assert response.status_code == 503
    assert Order.objects.count() == 1


def test_a_stale_simulated_price_is_advanced_not_used(challenge, place, settings):
    """With no ticker running (worker down), a fill advances the walk under the row lock."""
    old = timezone.now() - timedelta(minutes=10)
    eur = set_price("EURUSD", D("1.10000"), at=old)
    response = place(challenge, "EURUSD", "buy", "0.10")
    assert response.status_code == 201
    eur.refresh_from_db()
    assert eur.price_at > old
    tick = PriceTick.objects.filter(instrument=eur).order_by("-at").first()
    assert tick.source == "sim" and tick.price == eur.price
    assert D(response.json()["filled_avg_price"]) == eur.price  # filled at the fresh price


def test_staff_sets_a_price_and_others_cannot(api, client_for, staff, db, market):
    # Being staff is not enough: moving a price is the challenges.set_price role.
    assert client_for(staff).put("/api/v1/market/prices/XAUUSD", {"price": "1"}, format="json").status_code == 403
    staff.user_permissions.add(Permission.objects.get(content_type__app_label="challenges", codename="set_price"))
    staff_api = client_for(staff)
    response = staff_api.put("/api/v1/market/prices/XAUUSD", {"price": "2412.50"}, format="json")
    assert response.status_code == 200
    assert response.json()["price"] == "2412.50000000"
    gold = Instrument.objects.get(symbol="XAUUSD")
    assert gold.price == D("2412.50")
    assert PriceTick.objects.filter(instrument=gold).latest("id").source == "staff"
    event = AuditEvent.objects.get(action="market.price_set")
    assert event.after["price"] == "2412.50000000" and event.actor_id == staff.pk

    assert api.put("/api/v1/market/prices/XAUUSD", {"price": "1"}, format="json").status_code == 403
    from rest_framework.test import APIClient

    assert APIClient().put("/api/v1/market/prices/XAUUSD", {"price": "1"}, format="json").status_code == 401
    assert staff_api.put("/api/v1/market/prices/NOPE", {"price": "1"}, format="json").status_code == 404
    for bad in ["0", "-5", "abc", "NaN", 1.5, "1.123456789"]:
        bad_response = staff_api.put("/api/v1/market/prices/XAUUSD", {"price": bad}, format="json")
        assert bad_response.status_code == 400, bad
        assert "price" in bad_response.json()["error"]["fields"]
    assert staff_api.put("/api/v1/market/prices/XAUUSD", {"price": "1", "x": 1}, format="json").status_code == 400
    assert Instrument.objects.get(symbol="XAUUSD").price == D("2412.50")


def test_price_list_and_one_symbol(api, market):
    results = api.get("/api/v1/market/prices").json()["results"]
    assert [r["symbol"] for r in results] == sorted(r["symbol"] for r in results)
    eur = next(r for r in results if r["symbol"] == "EURUSD")
    assert eur["price"] == "1.10000000" and eur["at"].endswith("Z")
    one = api.get("/api/v1/market/prices/EURUSD?limit=2").json()
    assert one["price"] == "1.10000000" and len(one["history"]) <= 2
    assert one["history"][-1]["price"] == "1.10000000"
    assert api.get("/api/v1/market/prices/NOPE").status_code == 404
