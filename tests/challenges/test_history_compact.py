"""Price history stays bounded: ticks older than two days are thinned to one a minute,
and the price "at or before" any instant still resolves."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from challenges.market import market_history_compact
from challenges.models import Instrument, PriceTick

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


def _ticks(instrument, start, seconds, price=Decimal("1.10000")):
    PriceTick.objects.bulk_create(
        PriceTick(instrument=instrument, price=price + Decimal(i) / 100000, at=start + timedelta(seconds=i), source="sim")
        for i in range(seconds)
    )


def test_old_ticks_thin_to_the_last_of_each_minute_and_recent_ones_stay():
    eur, gbp = Instrument.objects.get(symbol="EURUSD"), Instrument.objects.get(symbol="GBPUSD")
    PriceTick.objects.filter(instrument__in=[eur, gbp]).delete()
    old = NOW - timedelta(days=3)
    _ticks(eur, old, 180)  # three full minutes, one tick a second
    _ticks(gbp, old, 60)
    _ticks(eur, NOW - timedelta(hours=1), 120)  # recent: kept whole

    deleted = market_history_compact(now=NOW)

    assert deleted == (180 - 3) + (60 - 1)
    kept_old = list(PriceTick.objects.filter(instrument=eur, at__lt=NOW - timedelta(days=2)).order_by("at"))
    assert [t.at for t in kept_old] == [old + timedelta(seconds=59), old + timedelta(seconds=119), old + timedelta(seconds=179)]
    assert [t.price for t in kept_old] == [Decimal("1.10059"), Decimal("1.10119"), Decimal("1.10179")]
    assert PriceTick.objects.filter(instrument=gbp).count() == 1
    assert PriceTick.objects.filter(instrument=eur, at__gte=NOW - timedelta(days=2)).count() == 120
    assert market_history_compact(now=NOW) == 0  # idempotent
