"""The daily reset: one anchor per active challenge and trading day, computed as at the
reset from the ledger and the price history, caught up after downtime, idempotent."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from challenges.models import Challenge, DailyAnchor, PriceTick
from risk import rules as risk_rules
from risk.services import risk_daily_reset_run
from tests.risk.factories import Group, bulk_open_challenges

pytestmark = pytest.mark.django_db


def _tick(instrument, price: str, at: datetime):
    PriceTick.objects.create(instrument=instrument, price=Decimal(price), at=at, source=PriceTick.Source.STAFF)


def test_catch_up_writes_every_missed_day_as_at_its_reset(plans, instrument, set_price):
    plan = plans["starter"]
    plan.daily_anchor = "equity"
    plan.save()
    now = datetime.now(UTC)
    today = risk_rules.trading_day_for(now, tz="UTC", reset_time=risk_rules.time(0))
    three_days_ago = datetime.combine(today - timedelta(days=3), risk_rules.time(12), tzinfo=UTC)
    ids = bulk_open_challenges(
        plan=plan, instrument=instrument, groups=[Group("x", 1, Decimal("2"))], now=three_days_ago,
        opened_ago=timedelta(hours=1),
    )
    cid = ids["x"][0]
    # The price history the worker was not awake for: the last price before each midnight.
    for back, price in ((2, "995.00"), (1, "990.00"), (0, "985.00")):
        midnight = datetime.combine(today - timedelta(days=back), risk_rules.time(0), tzinfo=UTC)
        _tick(instrument, price, midnight - timedelta(minutes=1))
        _tick(instrument, "1100.00", midnight + timedelta(minutes=1))  # after the reset: ignored
    set_price("RSKTEST", "900.00")  # the price when the worker wakes up: not the anchor

    stats = risk_daily_reset_run(now=now)
    assert stats.anchors == 3 and stats.challenges == 1
    anchors = list(DailyAnchor.objects.filter(challenge_id=cid).order_by("day").values_list("day", "equity", "anchor"))
    assert anchors == [
        (today - timedelta(days=3), Decimal("5000.00"), Decimal("5000.00")),  # written at opening
        (today - timedelta(days=2), Decimal("4990.00"), Decimal("4990.00")),
        (today - timedelta(days=1), Decimal("4980.00"), Decimal("4980.00")),
        (today, Decimal("4970.00"), Decimal("4970.00")),
    ]
    challenge = Challenge.objects.get(pk=cid)
    assert challenge.trading_day == today and challenge.day_anchor == Decimal("4970.00")
    # Idempotent: nothing left to write.
    again = risk_daily_reset_run(now=now)
    assert again.anchors == 0 and again.challenges == 0
    assert DailyAnchor.objects.filter(challenge_id=cid).count() == 4


def test_new_york_17h_resets_across_the_march_change(plans, instrument):
    plan = plans["starter"]
    plan.daily_reset_tz = "America/New_York"
    plan.daily_reset_time = risk_rules.time(17)
    plan.save()
    opened = datetime(2025, 3, 7, 20, 0, tzinfo=UTC)  # 15:00 EST on Friday: trading day 6 March
    ids = bulk_open_challenges(plan=plan, instrument=instrument, groups=[Group("x", 1, Decimal("1"))], now=opened)
    cid = ids["x"][0]
    assert Challenge.objects.get(pk=cid).trading_day == datetime(2025, 3, 6).date()
    risk_daily_reset_run(now=datetime(2025, 3, 10, 21, 30, tzinfo=UTC))  # 17:30 EDT on Monday
    resets = list(DailyAnchor.objects.filter(challenge_id=cid, day__gt="2025-03-06").order_by("day").values_list("day", "reset_at"))
    assert [(d.isoformat(), r) for d, r in resets] == [
        ("2025-03-07", datetime(2025, 3, 7, 22, 0, tzinfo=UTC)),
        ("2025-03-08", datetime(2025, 3, 8, 22, 0, tzinfo=UTC)),
        ("2025-03-09", datetime(2025, 3, 9, 21, 0, tzinfo=UTC)),  # EDT from here
        ("2025-03-10", datetime(2025, 3, 10, 21, 0, tzinfo=UTC)),
    ]
    # 16:59 EDT on Monday is still Sunday's trading day: a run then writes nothing new.
    before = DailyAnchor.objects.count()
    risk_daily_reset_run(now=datetime(2025, 3, 10, 20, 59, tzinfo=UTC))
    assert DailyAnchor.objects.count() == before


def test_reset_leaves_ended_challenges_alone(plans, instrument):
    now = datetime.now(UTC)
    ids = bulk_open_challenges(
        plan=plans["starter"], instrument=instrument, groups=[Group("x", 2, Decimal("1"))],
        now=now - timedelta(days=2), opened_ago=timedelta(hours=1),
    )
    Challenge.objects.filter(pk=ids["x"][0]).update(status="failed")
    stats = risk_daily_reset_run(now=now)
    assert stats.challenges == 1
    assert DailyAnchor.objects.filter(challenge_id=ids["x"][0]).count() == 1
    assert DailyAnchor.objects.filter(challenge_id=ids["x"][1]).count() == 3


def test_reset_with_no_active_challenges_is_cheap_and_empty(db):
    stats = risk_daily_reset_run()
    assert (stats.challenges, stats.anchors, stats.errors) == (0, 0, 0)
