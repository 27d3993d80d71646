"""The inline risk check on fills, challenge_evaluate_locked (used by the sweep), daily
anchors computed as at the reset, trading days, and the live events they send."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal as D

import pytest
from django.db import transaction
from django.utils import timezone

from challenges.models import Breach, Challenge, DailyAnchor, LedgerEntry, Order, Position
from challenges.services import (
    challenge_ensure_anchor,
    challenge_evaluate_locked,
    challenge_state_at,
    order_place,
)
from tradesense.common.models import AuditEvent

from .conftest import set_price


@pytest.fixture
def events(live_events):
    return live_events


def test_a_fill_that_finds_the_account_below_its_floor_fails_it(challenge, trader, place, api, events,
                                                                 django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        assert place(challenge, "BTCUSD", "buy", "1").status_code == 201
    set_price("BTCUSD", D("49700.00"))  # unrealized -300: equity 4,700 < 4,750 (5,000 - 5 %)
    events.clear()
    with django_capture_on_commit_callbacks(execute=True):
        response = place(challenge, "AAPL", "buy", "1")
    assert response.status_code == 201  # the order filled; the check that followed failed the account
    challenge.refresh_from_db()
    assert challenge.status == Challenge.Status.FAILED
    assert challenge.balance == D("4700.00") == challenge.equity
    assert challenge.ended_at is not None
    assert "4750.00" in challenge.failure_reason
    assert not Position.objects.filter(challenge=challenge).exists()
    closing = list(Order.objects.filter(challenge=challenge, reason="breach").order_by("id"))
    assert [(o.instrument.symbol, o.side, o.filled_avg_price, o.realized_pl) for o in closing] == [
        ("BTCUSD", "sell", D("49700.00"), D("-300.00")),
        ("AAPL", "sell", D("100.00"), D("0.00")),
    ] or [(o.instrument.symbol, o.side, o.filled_avg_price, o.realized_pl) for o in closing] == [
        ("AAPL", "sell", D("100.00"), D("0.00")),
        ("BTCUSD", "sell", D("49700.00"), D("-300.00")),
    ]
    breach = Breach.objects.get(challenge=challenge)
    assert (breach.rule, breach.threshold, breach.observed, breach.detected_by) == (
        "max_daily_loss", D("4750.00"), D("4700.00"), "fill",
    )
    assert breach.prices == {"AAPL": "100.00000000", "BTCUSD": "49700.00000000"}
    assert breach.inputs["equity"] == "4700.00" and breach.rules == challenge.rules
    assert challenge.balance == challenge.starting_balance + sum(
        LedgerEntry.objects.filter(challenge=challenge).values_list("amount", flat=True)
    )
    assert AuditEvent.objects.filter(action="challenge.failed", object_id=str(challenge.pk)).count() == 1
    assert challenge.version == 3  # one bump per accepted order, the failure included

    status_events = [e for e in events if e["type"] == "challenge.status"]
    assert status_events == [
        {
            "group": f"challenge.{challenge.pk}",
            "type": "challenge.status",
            "challenge": challenge.pk,
            "version": 3,
            "data": {"status": "failed", "failure_reason": challenge.failure_reason},
        }
    ]
    assert {e["type"] for e in events} == {"order.filled", "position.updated", "equity.updated", "challenge.status"}
    assert all(e["version"] == 3 for e in events)

    snapshot = api.get(f"/api/v1/challenges/{challenge.pk}").json()
    assert snapshot["status"] == "failed"
    assert snapshot["breach"]["rule"] == "max_daily_loss"
    assert snapshot["breach"]["message"] == breach.message
    refused = place(challenge, "AAPL", "buy", "1")
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "challenge_not_active"


def test_evaluate_locked_closes_at_the_breach_prices_it_was_given(challenge, trader, events,
                                                                  django_capture_on_commit_callbacks):
    order_place(challenge_id=challenge.pk, trader=trader, symbol="XAUUSD", side="buy", qty=D("0.5"))
    now = timezone.now()
    with django_capture_on_commit_callbacks(execute=True), transaction.atomic():
        locked = Challenge.objects.select_for_update().get(pk=challenge.pk)
        # 0.5 lot x 100 oz x -11 = -550: equity 4,450 < the 4,500 total floor but the
        # daily floor (4,750) is checked first.
        verdict = challenge_evaluate_locked(
            challenge=locked, prices={"XAUUSD": D("1989.00")}, now=now, detected_by="sweep"
        )
    assert verdict.outcome == "failed" and verdict.breach.rule == "max_daily_loss"
    challenge.refresh_from_db()
    assert challenge.status == "failed" and challenge.version == 3
    assert challenge.balance == D("4450.00")
    close = Order.objects.get(challenge=challenge, reason="breach")
    assert close.filled_avg_price == D("1989.00") and close.filled_at == now
    breach = challenge.breach
    assert breach.detected_by == "sweep" and breach.prices == {"XAUUSD": "1989.00"}
    assert [e["type"] for e in events if e["type"] == "challenge.status"] == ["challenge.status"]


def test_evaluate_locked_marks_without_bumping_the_version(challenge, trader):
    order_place(challenge_id=challenge.pk, trader=trader, symbol="AAPL", side="buy", qty=D("10"))
    with transaction.atomic():
        locked = Challenge.objects.select_for_update().get(pk=challenge.pk)
        verdict = challenge_evaluate_locked(
            challenge=locked, prices={"AAPL": D("110.00")}, now=timezone.now(), detected_by="sweep"
        )
    assert verdict.outcome == "active"
    challenge.refresh_from_db()
    assert (challenge.equity, challenge.intraday_high_equity, challenge.version) == (D("5100.00"), D("5100.00"), 2)
    assert challenge.max_loss_floor == D("4500.00")


def test_a_challenge_passes_when_target_days_and_flat_are_met(challenge, trader, place, api):
    yesterday = timezone.now().date() - timedelta(days=1)
    Challenge.objects.filter(pk=challenge.pk).update(trading_days=2, last_trading_day=yesterday)
    set_price("BTCUSD", D("50000.00"))
    assert place(challenge, "BTCUSD", "buy", "2").status_code == 201
    set_price("BTCUSD", D("50250.00"))  # +500 unrealized: not passed while the position is open
    challenge.refresh_from_db()
    assert challenge.status == "active" and challenge.trading_days == 3
    response = api.delete(f"/api/v1/challenges/{challenge.pk}/positions/BTCUSD")
    assert response.status_code == 200
    challenge.refresh_from_db()
    assert challenge.balance == D("5500.00")
    assert challenge.status == "passed" and challenge.ended_at is not None
    assert AuditEvent.objects.filter(action="challenge.passed", object_id=str(challenge.pk)).exists()
    assert not Breach.objects.filter(challenge=challenge).exists()
    assert place(challenge, "BTCUSD", "buy", "0.1").json()["error"]["code"] == "challenge_not_active"


def test_trading_days_count_in_the_plan_time_zone(challenge, trader):
    challenge.rules = {**challenge.rules, "daily_reset_tz": "America/New_York", "daily_reset_time": "17:00:00"}
    Challenge.objects.filter(pk=challenge.pk).update(
        rules=challenge.rules, created_at=datetime(2026, 11, 20, tzinfo=UTC)
    )
    # 16:30 and 16:50 New York (EST) are one trading day; 17:10 begins the next.
    for hhmm, expected in [((21, 30), 1), ((21, 50), 1), ((22, 10), 2)]:
        at = datetime(2026, 11, 25, *hhmm, tzinfo=UTC)
        set_price("AAPL", D("100.00"), at=at - timedelta(seconds=1))
        order_place(challenge_id=challenge.pk, trader=trader, symbol="AAPL", side="buy", qty=D("1"), now=at)
        challenge.refresh_from_db()
        assert challenge.trading_days == expected
    # A trading day is named by the date its reset falls on (risk.rules.trading_day_for).
    assert challenge.last_trading_day.isoformat() == "2026-11-25"


@pytest.fixture
def history(challenge, trader):
    """Day D-1 (UTC reset): buy 1 BTC at 50,000, sell 0.5 at 50,200 (+100); the last
    price before midnight is 50,400; just after midnight the price crashes to 40,000."""
    day = datetime(2026, 11, 25, tzinfo=UTC)
    Challenge.objects.filter(pk=challenge.pk).update(created_at=day - timedelta(days=1))
    challenge.refresh_from_db()

    def fill(at, side, qty, price):
        set_price("BTCUSD", D(price), at=at - timedelta(seconds=1))
        order_place(challenge_id=challenge.pk, trader=trader, symbol="BTCUSD", side=side, qty=D(qty), now=at)

    fill(day + timedelta(hours=10), "buy", "1", "50000.00")
    fill(day + timedelta(hours=20), "sell", "0.5", "50200.00")
    set_price("BTCUSD", D("50400.00"), at=day + timedelta(hours=23, minutes=59))
    set_price("BTCUSD", D("40000.00"), at=day + timedelta(days=1, seconds=30))
    challenge.refresh_from_db()
    return challenge, day + timedelta(days=1), fill


def test_the_anchor_is_what_the_account_was_at_the_reset(history):
    challenge, reset, _fill = history
    assert challenge_state_at(challenge=challenge, at=reset) == (D("5100.00"), D("5300.00"))
    with transaction.atomic():
        locked = Challenge.objects.select_for_update().get(pk=challenge.pk)
        anchor = challenge_ensure_anchor(challenge=locked, day=reset.date())
    assert (anchor.balance, anchor.equity, anchor.anchor, anchor.reset_at) == (
        D("5100.00"), D("5300.00"), D("5100.00"), reset,
    )
    challenge.refresh_from_db()
    assert (challenge.trading_day, challenge.day_anchor) == (reset.date(), D("5100.00"))
    assert (challenge.day_start_balance, challenge.day_start_equity) == (D("5100.00"), D("5300.00"))
    # Idempotent: a second call (another worker, a retry) returns the same row.
    with transaction.atomic():
        again = challenge_ensure_anchor(challenge=Challenge.objects.select_for_update().get(pk=challenge.pk),
                                        day=reset.date())
    assert again.pk == anchor.pk and DailyAnchor.objects.filter(challenge=challenge, day=reset.date()).count() == 1


def test_the_anchor_replays_fills_when_trading_went_on_after_the_reset(history):
    challenge, reset, fill = history
    # Trading after the reset (the anchor not yet written): the replay must ignore it.
    fill(reset + timedelta(hours=1), "sell", "0.5", "40100.00")
    challenge.refresh_from_db()
    assert challenge.balance == D("150.00")  # 5,100 - 4,950 realized after the reset
    assert challenge_state_at(challenge=challenge, at=reset) == (D("5100.00"), D("5300.00"))
    anchor = DailyAnchor.objects.get(challenge=challenge, day=reset.date())  # written by that fill
    assert (anchor.balance, anchor.equity) == (D("5100.00"), D("5300.00"))


def test_an_equity_anchored_plan_uses_equity_at_the_reset(history):
    challenge, reset, _fill = history
    challenge.rules = {**challenge.rules, "daily_anchor": "equity"}
    Challenge.objects.filter(pk=challenge.pk).update(rules=challenge.rules)
    with transaction.atomic():
        locked = Challenge.objects.select_for_update().get(pk=challenge.pk)
        anchor = challenge_ensure_anchor(challenge=locked, day=reset.date())
    assert anchor.anchor == D("5300.00")
    challenge.refresh_from_db()
    assert challenge.eod_high == D("5300.00")  # the end-of-day trailing high follows the anchor


def test_a_challenge_bought_during_the_day_anchors_at_its_start(make_challenge, trader, market):
    fresh = make_challenge(trader, "pro")
    today = timezone.now().date()
    with transaction.atomic():
        anchor = challenge_ensure_anchor(challenge=Challenge.objects.select_for_update().get(pk=fresh.pk), day=today)
    assert (anchor.balance, anchor.equity, anchor.anchor) == (D("15000.00"),) * 3
