"""The risk sweep against Postgres: set-based marks, the locked path for verdicts,
idempotent ticks, warnings once, breaches once, resumable slices."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from challenges.models import Breach, Challenge, LedgerEntry, Order, Position
from challenges.netting import unrealized_pl
from challenges.services import order_place
from risk.models import RiskWarning, SweepTick
from risk.selectors import risk_screen_batch
from risk.services import _bulk_mark, _Screened, risk_sweep_run, risk_sweep_tick_for
from tests.risk.factories import Group, bulk_open_challenges, flat_instrument
from tradesense.common.models import AuditEvent

pytestmark = pytest.mark.django_db

INTERVAL = Decimal("3")


class Ticks:
    """Runs one sweep per call with a new tick id; after-commit callbacks (live events)
    are run as a real commit would."""

    def __init__(self, capture):
        self.n = 1000
        self.capture = capture

    def __call__(self, **kwargs):
        self.n += 3000
        with self.capture(execute=True):
            return risk_sweep_run(tick=self.n, interval_seconds=INTERVAL, deadline_seconds=None, **kwargs)


@pytest.fixture
def sweep(django_capture_on_commit_callbacks):
    return Ticks(django_capture_on_commit_callbacks)


@pytest.fixture
def book(plans, instrument):
    """Starter plan (5000, daily 5 % = 250, total 10 % = 500) on a flat 1000.00 instrument."""
    return bulk_open_challenges(
        plan=plans["starter"],
        instrument=instrument,
        groups=[
            Group("doomed", 3, Decimal("2")),  # -250 a unit: -500, below the daily floor 4750
            Group("warned", 2, Decimal("0.8")),  # -200: 80 % of the daily limit
            Group("calm", 4, Decimal("0.1")),  # -25: 10 %
            Group("short", 1, Decimal("-1")),  # gains when the price falls
        ],
    )


def test_sweep_marks_everyone_in_bulk_without_bumping_versions(book, set_price, sweep):
    set_price("RSKTEST", "990.00")
    versions = dict(Challenge.objects.values_list("id", "version"))
    result = sweep()
    assert result.evaluated == 10 and result.marked == 10 and result.locked == 0
    equity = dict(Challenge.objects.values_list("id", "equity"))
    for cid in book["doomed"]:
        assert equity[cid] == Decimal("4980.00")
    for cid in book["calm"]:
        assert equity[cid] == Decimal("4999.00")
    assert equity[book["short"][0]] == Decimal("5010.00")
    assert Challenge.objects.get(pk=book["short"][0]).intraday_high_equity == Decimal("5010.00")
    assert dict(Challenge.objects.values_list("id", "version")) == versions
    assert not Challenge.objects.filter(marked_at__lt=result.started_at).exists()


def test_breach_fails_exactly_the_breached_once_with_one_breach_record(book, set_price, sweep, live_events):
    set_price("RSKTEST", "750.00")
    first = sweep()
    assert first.failed == 3
    failed = set(Challenge.objects.filter(status="failed").values_list("id", flat=True))
    assert failed == set(book["doomed"])
    for cid in book["doomed"]:
        breach = Breach.objects.get(challenge_id=cid)
        assert breach.rule == "max_daily_loss"
        assert breach.threshold == Decimal("4750.00")
        assert breach.observed == Decimal("4500.00")
        assert breach.prices == {"RSKTEST": "750.00000000"}
        assert breach.detected_by == "sweep"
        challenge = Challenge.objects.get(pk=cid)
        assert challenge.balance == Decimal("4500.00") and challenge.equity == Decimal("4500.00")
        assert not Position.objects.filter(challenge_id=cid).exists()
        assert Order.objects.filter(challenge_id=cid, reason="breach").count() == 1
        assert list(LedgerEntry.objects.filter(challenge_id=cid).values_list("amount", flat=True)) == [Decimal("-500.00")]
    # The next ticks find nothing new to do: no second breach, close or warning.
    second = sweep()
    assert second.failed == 0 and second.locked == 0
    assert Breach.objects.count() == 3
    assert Order.objects.filter(reason="breach").count() == 3
    assert AuditEvent.objects.filter(action="challenge.failed").count() == 3
    statuses = [e for e in live_events if e["type"] == "challenge.status"]
    assert sorted(e["challenge"] for e in statuses) == sorted(book["doomed"])


def test_same_tick_twice_is_a_no_op(book, set_price):
    set_price("RSKTEST", "750.00")
    first = risk_sweep_run(tick=42_000, interval_seconds=INTERVAL)
    assert first is not None and first.failed == 3
    assert risk_sweep_run(tick=42_000, interval_seconds=INTERVAL) is None
    assert SweepTick.objects.filter(tick=42_000).count() == 1


def test_warnings_once_per_limit_level_and_day(book, set_price, sweep, live_events):
    set_price("RSKTEST", "750.00")
    sweep()
    sweep()
    warned = set(book["warned"])
    rows = list(RiskWarning.objects.values_list("challenge_id", "rule", "level"))
    assert sorted(rows) == sorted((cid, "max_daily_loss", level) for cid in warned for level in (50, 80))
    w = RiskWarning.objects.filter(level=80).first()
    assert (w.used_pct, w.equity, w.floor) == (Decimal("80.00"), Decimal("4800.00"), Decimal("4750.00"))
    frames = [e for e in live_events if e["type"] == "risk.warning"]
    # One frame per limit crossed: the highest level (80), once.
    assert sorted((f["challenge"], f["data"]["level"]) for f in frames) == sorted((cid, 80) for cid in warned)
    assert frames[0]["data"]["floor"] == "4750.00"
    # Deeper into the limit: only the new level is recorded and sent.
    set_price("RSKTEST", "718.75")  # 0.8 x -281.25 = -225.00: 90 %
    sweep()
    assert RiskWarning.objects.filter(level=90).count() == 2
    assert RiskWarning.objects.count() == 6
    assert sorted(f["data"]["level"] for f in live_events if f["type"] == "risk.warning") == [80, 80, 90, 90]


def test_sweep_writes_a_missing_anchor_before_evaluating(plans, instrument, set_price, sweep):
    ids = bulk_open_challenges(plan=plans["starter"], instrument=instrument, groups=[Group("x", 1, Decimal("1"))])
    cid = ids["x"][0]
    yesterday = Challenge.objects.get(pk=cid).trading_day - timedelta(days=1)
    Challenge.objects.filter(pk=cid).update(trading_day=yesterday, day_anchor=Decimal("5300.00"))
    set_price("RSKTEST", "760.00")  # -240: inside today's 250 from 5000, not yesterday's 5300
    result = sweep()
    assert result.locked == 1
    challenge = Challenge.objects.get(pk=cid)
    assert challenge.status == "active"
    assert challenge.trading_day == yesterday + timedelta(days=1)
    assert challenge.day_anchor == Decimal("5000.00")
    assert challenge.equity == Decimal("4760.00")


def test_positionless_challenge_with_a_duration_limit_expires(make_challenge, trader, plans, sweep):
    plan = plans["starter"]
    plan.max_duration_days = 30
    plan.save()
    challenge = make_challenge(trader, plan)
    Challenge.objects.filter(pk=challenge.pk).update(created_at=timezone.now() - timedelta(days=31))
    other = make_challenge(trader, "pro")  # no time rule, no position: not even screened
    result = sweep()
    assert result.evaluated == 1 and result.failed == 1
    assert Breach.objects.get(challenge=challenge).rule == "max_duration"
    assert Challenge.objects.get(pk=other.pk).status == "active"


def test_deadline_slices_the_book_and_the_next_tick_resumes(book, set_price):
    ids = sorted(Challenge.objects.values_list("id", flat=True))
    set_price("RSKTEST", "999.00")
    first = risk_sweep_run(tick=1, interval_seconds=INTERVAL, batch_size=4, deadline_seconds=0)
    assert first.deadline_hit and first.evaluated == 4 and first.resume_after_id == ids[3]
    second = risk_sweep_run(tick=2, interval_seconds=INTERVAL, batch_size=4, deadline_seconds=0)
    assert second.evaluated == 4 and second.resume_after_id == ids[7]
    third = risk_sweep_run(tick=3, interval_seconds=INTERVAL, batch_size=4, deadline_seconds=0)
    # The tail (2 rows), then round again from the start, until the budget is spent.
    assert third.evaluated == 6 and third.deadline_hit and third.resume_after_id == ids[3]
    assert not Challenge.objects.filter(marked_at__lt=first.started_at).exists()


def test_a_killed_sweep_is_resumed_from_its_last_batch(book):
    ids = sorted(Challenge.objects.values_list("id", flat=True))
    SweepTick.objects.create(tick=5, interval_seconds=INTERVAL, started_at=timezone.now(), resume_after_id=ids[5])
    result = risk_sweep_run(tick=6, interval_seconds=INTERVAL, batch_size=3, deadline_seconds=None)
    assert result.evaluated == 10  # ids[6:] first, then the wrap to ids[:6]
    assert result.resume_after_id == 0 and not result.deadline_hit


def test_bulk_mark_skips_a_row_changed_since_the_screen(book, set_price, trader):
    set_price("RSKTEST", "990.00")
    cid = book["calm"][0]
    from risk.services import _DayCache, risk_screen_evaluate

    row = next(r for r in risk_screen_batch(after_id=cid - 1, limit=1))
    cache = _DayCache(timezone.now())
    rules = cache.rules(row.rules_json)
    verdict = risk_screen_evaluate(row=row, rules=rules, now=cache.now)
    Challenge.objects.filter(pk=cid).update(version=row.version + 1, equity=Decimal("1234.00"))  # a fill won
    _bulk_mark([_Screened(row=row, verdict=verdict, today=cache.today(rules))], now=cache.now)
    assert Challenge.objects.get(pk=cid).equity == Decimal("1234.00")


def test_screen_equity_rounds_each_position_half_even_like_netting(plans, trader):
    a = flat_instrument("HALFA", price=Decimal("100.00"))
    b = flat_instrument("HALFB", price=Decimal("100.00"))
    ids = bulk_open_challenges(plan=plans["starter"], instrument=a, groups=[Group("x", 1, Decimal("0.01"))])
    cid = ids["x"][0]
    Position.objects.create(challenge_id=cid, instrument=b, qty=Decimal("-0.03"), avg_entry_price=Decimal("100.00"), opened_at=timezone.now())
    # +0.50 x 0.01 = 0.005 -> 0.00 (even); -0.50 x -0.03 = 0.015 -> 0.02; Postgres round() would say 0.01 + 0.02.
    from challenges.models import Instrument

    Instrument.objects.filter(symbol="HALFA").update(price=Decimal("100.50"))
    Instrument.objects.filter(symbol="HALFB").update(price=Decimal("99.50"))
    row = risk_screen_batch(after_id=cid - 1, limit=1)[0]
    expected = Decimal("5000.00") + unrealized_pl(
        qty=Decimal("0.01"), avg_entry_price=Decimal("100.00"), price=Decimal("100.50"), contract_size=Decimal("1")
    ) + unrealized_pl(qty=Decimal("-0.03"), avg_entry_price=Decimal("100.00"), price=Decimal("99.50"), contract_size=Decimal("1"))
    assert expected == Decimal("5000.02")
    assert row.equity == expected
    assert row.open_positions == 2


def test_sweep_after_a_real_fill_uses_the_fill_state(make_challenge, trader, instrument, set_price, sweep):
    challenge = make_challenge(trader, "starter")
    order_place(challenge_id=challenge.pk, trader=trader, symbol="RSKTEST", side="buy", qty=Decimal("1.00"))
    set_price("RSKTEST", "760.00")
    sweep()
    challenge.refresh_from_db()
    assert challenge.status == "active"
    assert challenge.equity == Decimal("4760.00")
    set_price("RSKTEST", "749.99")
    sweep()
    challenge.refresh_from_db()
    assert challenge.status == "failed"
    assert challenge.breach.observed == Decimal("4749.99")


def test_tick_id_is_now_floored_to_the_interval():
    from datetime import UTC, datetime

    now = datetime(2025, 1, 1, 0, 0, 7, 400000, tzinfo=UTC)
    assert risk_sweep_tick_for(now=now, interval_seconds=Decimal("3")) == 1735689606000
    assert risk_sweep_tick_for(now=now, interval_seconds=Decimal("0.5")) == 1735689607000
