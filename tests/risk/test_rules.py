"""Table tests for the pure risk rules (risk/rules.py): exact Decimal values, no database."""

from dataclasses import replace
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal

import pytest

from risk.rules import (
    AccountState,
    RuleSet,
    RuleSetError,
    anchor_value,
    evaluate,
    max_loss_floor_for,
    next_eod_high,
    reset_instant,
    trading_day_for,
)

NOW = datetime(2025, 6, 2, 12, 0, tzinfo=UTC)


def snapshot(**overrides) -> dict:
    """What Plan.rules_snapshot() produces for the seeded plans (strings for decimals)."""
    base = {
        "ruleset_version": 3,
        "max_daily_loss_pct": "5.0000",
        "max_total_loss_pct": "10.0000",
        "profit_target_pct": "10.0000",
        "min_trading_days": 3,
        "leverage": "30.00",
        "daily_reset_tz": "UTC",
        "daily_reset_time": "00:00:00",
        "daily_anchor": "balance",
        "max_loss_mode": "static",
        "trailing_locks_at_start": False,
        "best_day_max_share_pct": None,
        "max_duration_days": None,
        "inactivity_days": None,
    }
    base.update(overrides)
    return base


def rules(**overrides) -> RuleSet:
    return RuleSet.from_snapshot(snapshot(**overrides))


def state(**overrides) -> AccountState:
    base = dict(
        now=NOW,
        starting_balance=Decimal("5000.00"),
        balance=Decimal("5000.00"),
        equity=Decimal("5000.00"),
        day_anchor=Decimal("5000.00"),
        intraday_high_equity=Decimal("5000.00"),
        eod_high=Decimal("5000.00"),
        trading_days=0,
        has_open_positions=True,
        created_at=NOW - timedelta(days=1),
        last_trade_at=NOW - timedelta(hours=1),
    )
    base.update(overrides)
    return AccountState(**base)


# --- the snapshot -------------------------------------------------------------------


def test_from_snapshot_parses_plan_rules_snapshot_exactly():
    r = rules(daily_reset_tz="America/New_York", daily_reset_time="17:00:00", best_day_max_share_pct="40.0000")
    assert r.ruleset_version == 3
    assert r.max_daily_loss_pct == Decimal("5.0000")
    assert r.max_total_loss_pct == Decimal("10.0000")
    assert r.profit_target_pct == Decimal("10.0000")
    assert r.min_trading_days == 3
    assert r.leverage == Decimal("30.00")
    assert r.daily_reset_tz == "America/New_York"
    assert r.daily_reset_time == time(17, 0)
    assert r.best_day_max_share_pct == Decimal("40.0000")
    assert r.max_duration_days is None
    assert RuleSet.from_snapshot(r.to_snapshot()) == r


@pytest.mark.django_db
def test_from_snapshot_reads_a_real_plan_snapshot(plans):
    plan = plans["pro"]
    r = RuleSet.from_snapshot(plan.rules_snapshot())
    assert r.max_daily_loss_pct == Decimal("5")
    assert r.max_total_loss_pct == Decimal("10")
    assert r.daily_reset_tz == "UTC"
    assert r.daily_reset_time == time(0, 0)
    assert r.daily_loss_limit(plan.starting_balance) == Decimal("750.00")
    assert r.profit_target_balance(plan.starting_balance) == Decimal("16500.00")


@pytest.mark.parametrize(
    "field,value,message",
    [
        ("daily_reset_tz", "Mars/Olympus", "time zone"),
        ("daily_anchor", "median", "daily_anchor"),
        ("max_loss_mode", "sideways", "max_loss_mode"),
        ("max_daily_loss_pct", "five", "max_daily_loss_pct"),
        ("max_daily_loss_pct", 5.0, "float"),
        ("max_total_loss_pct", "-1", "non-negative"),
        ("daily_reset_time", "25:00", "daily_reset_time"),
        ("trailing_locks_at_start", "yes", "trailing_locks_at_start"),
        ("min_trading_days", "three", "min_trading_days"),
    ],
)
def test_from_snapshot_refuses_bad_rules_naming_the_rule(field, value, message):
    with pytest.raises(RuleSetError, match=message):
        rules(**{field: value})


def test_money_limits_round_half_even_to_cents():
    r = rules(max_daily_loss_pct="4.3333", max_total_loss_pct="7.1250", profit_target_pct="8.0005")
    start = Decimal("12345.67")
    assert r.daily_loss_limit(start) == Decimal("534.97")  # 534.9773...
    assert r.max_loss_limit(start) == Decimal("879.63")  # 879.62898...
    assert r.profit_target_balance(start) == Decimal("13333.39")  # + 987.7153...
    # An exact half cent goes to the even cent.
    assert rules().daily_loss_limit(Decimal("5000.10")) == Decimal("250.00")  # 250.005
    assert rules().daily_loss_limit(Decimal("5000.30")) == Decimal("250.02")  # 250.015


# --- daily loss ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "equity,outcome",
    [
        (Decimal("4750.01"), "active"),
        (Decimal("4750.00"), "active"),  # exactly at the floor is not a breach
        (Decimal("4749.99"), "failed"),  # one cent below is
    ],
)
def test_daily_loss_boundary(equity, outcome):
    v = evaluate(rules(), state(equity=equity))
    assert v.daily_loss_floor == Decimal("4750.00")
    assert v.outcome == outcome
    if outcome == "failed":
        assert v.breach.rule == "max_daily_loss"
        assert v.breach.threshold == Decimal("4750.00")
        assert v.breach.observed == Decimal("4749.99")
        assert "4750.00" in v.breach.message
    else:
        assert v.breach is None


def test_daily_floor_follows_the_anchor_not_the_start():
    # Up 300 at the reset: the day may lose 250 from there, so 5049.99 breaches although
    # the account is still above its starting balance.
    v = evaluate(rules(), state(day_anchor=Decimal("5300.00"), equity=Decimal("5049.99")))
    assert v.daily_loss_floor == Decimal("5050.00")
    assert v.outcome == "failed" and v.breach.rule == "max_daily_loss"


@pytest.mark.parametrize(
    "mode,balance,equity,expected",
    [
        ("balance", Decimal("5100.00"), Decimal("5250.00"), Decimal("5100.00")),
        ("equity", Decimal("5100.00"), Decimal("5250.00"), Decimal("5250.00")),
        ("higher", Decimal("5100.00"), Decimal("5250.00"), Decimal("5250.00")),
        ("higher", Decimal("5100.00"), Decimal("4900.00"), Decimal("5100.00")),
        ("equity", Decimal("5100.00"), Decimal("4900.00"), Decimal("4900.00")),
    ],
)
def test_anchor_value(mode, balance, equity, expected):
    assert anchor_value(rules(daily_anchor=mode), balance=balance, equity=equity) == expected


# --- total loss -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "equity,outcome",
    [(Decimal("4500.00"), "active"), (Decimal("4499.99"), "failed")],
)
def test_static_max_loss_boundary(equity, outcome):
    # The anchor is low enough that the daily rule is not the one crossed.
    v = evaluate(rules(), state(day_anchor=Decimal("4600.00"), equity=equity))
    assert v.max_loss_floor == Decimal("4500.00")
    assert v.outcome == outcome
    if outcome == "failed":
        assert (v.breach.rule, v.breach.threshold, v.breach.observed) == (
            "max_total_loss",
            Decimal("4500.00"),
            Decimal("4499.99"),
        )


def test_static_floor_ignores_highs():
    v = evaluate(rules(), state(intraday_high_equity=Decimal("6000.00"), eod_high=Decimal("6000.00")))
    assert v.max_loss_floor == Decimal("4500.00")


@pytest.mark.parametrize(
    "mode,locks,intraday_high,eod_high,expected_floor",
    [
        # trailing from the end-of-day high
        ("trailing_eod", False, Decimal("5900.00"), Decimal("5200.00"), Decimal("4700.00")),
        ("trailing_eod", False, Decimal("5900.00"), Decimal("5600.00"), Decimal("5100.00")),
        ("trailing_eod", True, Decimal("5900.00"), Decimal("5400.00"), Decimal("4900.00")),
        ("trailing_eod", True, Decimal("5900.00"), Decimal("5500.00"), Decimal("5000.00")),  # reaches the lock
        ("trailing_eod", True, Decimal("5900.00"), Decimal("5600.00"), Decimal("5000.00")),  # locked
        ("trailing_eod", True, Decimal("5900.00"), Decimal("9000.00"), Decimal("5000.00")),  # stays locked
        # trailing from the intraday equity high
        ("trailing_intraday", False, Decimal("5300.00"), Decimal("5000.00"), Decimal("4800.00")),
        ("trailing_intraday", False, Decimal("5700.00"), Decimal("5000.00"), Decimal("5200.00")),
        ("trailing_intraday", True, Decimal("5499.99"), Decimal("5000.00"), Decimal("4999.99")),
        ("trailing_intraday", True, Decimal("5700.00"), Decimal("5000.00"), Decimal("5000.00")),
        # a high below the start never lowers the floor below the static one
        ("trailing_intraday", False, Decimal("4000.00"), Decimal("4000.00"), Decimal("4500.00")),
    ],
)
def test_trailing_floors(mode, locks, intraday_high, eod_high, expected_floor):
    r = rules(max_loss_mode=mode, trailing_locks_at_start=locks)
    v = evaluate(
        r,
        state(
            equity=Decimal("5000.00"),
            day_anchor=Decimal("5000.00"),
            intraday_high_equity=intraday_high,
            eod_high=eod_high,
        ),
    )
    assert v.max_loss_floor == expected_floor


def test_trailing_intraday_floor_boundary_and_breach():
    r = rules(max_loss_mode="trailing_intraday", max_daily_loss_pct="50")
    high = Decimal("5800.00")
    at_floor = evaluate(r, state(intraday_high_equity=high, equity=Decimal("5300.00"), day_anchor=high))
    assert at_floor.max_loss_floor == Decimal("5300.00") and at_floor.outcome == "active"
    below = evaluate(r, state(intraday_high_equity=high, equity=Decimal("5299.99"), day_anchor=high))
    assert below.outcome == "failed"
    assert below.breach.rule == "max_total_loss"
    assert below.breach.threshold == Decimal("5300.00")
    assert "highest intraday equity value 5800.00" in below.breach.message


def test_trailing_intraday_raises_the_high_with_the_equity_being_evaluated():
    r = rules(max_loss_mode="trailing_intraday")
    v = evaluate(r, state(intraday_high_equity=Decimal("5100.00"), equity=Decimal("5350.00")))
    assert v.new_intraday_high_equity == Decimal("5350.00")
    assert v.max_loss_floor == Decimal("4850.00")


def test_trailing_locked_floor_breach_message_says_locked():
    r = rules(max_loss_mode="trailing_eod", trailing_locks_at_start=True, max_daily_loss_pct="50")
    v = evaluate(r, state(eod_high=Decimal("6000.00"), day_anchor=Decimal("6000.00"), equity=Decimal("4999.99")))
    assert v.outcome == "failed"
    assert (v.breach.rule, v.breach.threshold) == ("max_total_loss", Decimal("5000.00"))
    assert "locked at the starting balance" in v.breach.message


def test_next_eod_high_only_rises():
    r = rules(daily_anchor="higher")
    assert next_eod_high(r, eod_high=Decimal("5200.00"), balance=Decimal("5100.00"), equity=Decimal("5300.00")) == Decimal("5300.00")
    assert next_eod_high(r, eod_high=Decimal("5200.00"), balance=Decimal("5100.00"), equity=Decimal("4000.00")) == Decimal("5200.00")
    assert next_eod_high(r, eod_high=None, balance=Decimal("5100.00"), equity=Decimal("4000.00")) == Decimal("5100.00")


def test_max_loss_floor_for_static_ignores_high():
    r = rules()
    assert max_loss_floor_for(r, starting_balance=Decimal("5000.00"), high=Decimal("9000.00")) == Decimal("4500.00")


# --- order of checks --------------------------------------------------------------------


def test_daily_breach_is_reported_before_total_breach():
    v = evaluate(rules(), state(equity=Decimal("4400.00")))
    assert v.breach.rule == "max_daily_loss"
    assert v.daily_loss_floor == Decimal("4750.00") and v.max_loss_floor == Decimal("4500.00")


def test_breach_before_pass():
    # Balance is over the target, every pass condition holds, but the day's loss floor
    # was crossed (a day that started at 6000 after a large open profit): failed, not passed.
    r = rules(daily_anchor="equity")
    s = state(
        balance=Decimal("5600.00"),
        equity=Decimal("5600.00"),
        day_anchor=Decimal("5900.00"),
        trading_days=5,
        has_open_positions=False,
    )
    v = evaluate(r, s)
    assert v.outcome == "failed"
    assert v.breach.rule == "max_daily_loss"
    assert v.breach.threshold == Decimal("5650.00")


# --- pass ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "balance,trading_days,open_positions,outcome,blockers",
    [
        (Decimal("5500.00"), 3, False, "passed", ()),
        (Decimal("5499.99"), 3, False, "active", ("profit_target",)),
        (Decimal("5500.00"), 2, False, "active", ("min_trading_days",)),
        (Decimal("5500.00"), 3, True, "active", ("open_positions",)),
        (Decimal("6000.00"), 9, False, "passed", ()),
    ],
)
def test_pass_needs_target_min_days_and_no_open_position(balance, trading_days, open_positions, outcome, blockers):
    v = evaluate(
        rules(),
        state(balance=balance, equity=balance, day_anchor=balance, trading_days=trading_days, has_open_positions=open_positions),
    )
    assert v.profit_target_balance == Decimal("5500.00")
    assert v.outcome == outcome
    assert v.pass_blockers == blockers
    assert v.breach is None


@pytest.mark.parametrize(
    "best_day,total,outcome",
    [
        (Decimal("200.00"), Decimal("500.00"), "passed"),  # 40 % exactly: allowed
        (Decimal("200.01"), Decimal("500.00"), "active"),  # over the share: gate, not a failure
    ],
)
def test_best_day_share_is_a_gate(best_day, total, outcome):
    r = rules(best_day_max_share_pct="40")
    v = evaluate(
        r,
        state(
            balance=Decimal("5500.00"),
            equity=Decimal("5500.00"),
            day_anchor=Decimal("5500.00"),
            trading_days=3,
            has_open_positions=False,
            best_day_profit=best_day,
            total_profit=total,
        ),
    )
    assert v.outcome == outcome
    assert v.breach is None
    if outcome == "active":
        assert v.pass_blockers == ("best_day_share",)


# --- duration and inactivity -------------------------------------------------------------


def test_max_duration_breach_at_the_limit():
    r = rules(max_duration_days=30)
    created = NOW - timedelta(days=30)
    assert evaluate(r, state(created_at=created + timedelta(seconds=1))).outcome == "active"
    v = evaluate(r, state(created_at=created))
    assert v.outcome == "failed"
    assert (v.breach.rule, v.breach.threshold, v.breach.observed) == ("max_duration", Decimal("30"), Decimal("30.00"))


def test_inactivity_counts_from_last_trade_or_creation():
    r = rules(inactivity_days=7)
    assert evaluate(r, state(last_trade_at=NOW - timedelta(days=6, hours=23))).outcome == "active"
    v = evaluate(r, state(last_trade_at=NOW - timedelta(days=7, hours=12)))
    assert (v.outcome, v.breach.rule, v.breach.observed) == ("failed", "inactivity", Decimal("7.50"))
    v = evaluate(r, state(last_trade_at=None, created_at=NOW - timedelta(days=8)))
    assert v.breach.rule == "inactivity"


def test_loss_rules_come_before_duration():
    r = rules(max_duration_days=1)
    v = evaluate(r, state(created_at=NOW - timedelta(days=2), equity=Decimal("4000.00")))
    assert v.breach.rule == "max_daily_loss"


# --- warnings --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "equity,daily_levels,daily_used",
    [
        (Decimal("4875.01"), [], Decimal("49.99")),
        (Decimal("4875.00"), [50], Decimal("50.00")),
        (Decimal("4800.00"), [50, 80], Decimal("80.00")),
        (Decimal("4775.01"), [50, 80], Decimal("89.99")),
        (Decimal("4775.00"), [50, 80, 90], Decimal("90.00")),
        (Decimal("5100.00"), [], Decimal("0.00")),
    ],
)
def test_daily_warning_levels(equity, daily_levels, daily_used):
    v = evaluate(rules(), state(equity=equity))
    assert [w.level for w in v.warnings if w.rule == "max_daily_loss"] == daily_levels
    assert v.daily_loss_used_pct == daily_used
    assert v.outcome == "active"


def test_total_warning_levels_against_trailing_reference():
    # Trailing intraday from 5800: floor 5300, the reference is 5800; 5550 uses 50 %.
    r = rules(max_loss_mode="trailing_intraday", max_daily_loss_pct="50")
    v = evaluate(r, state(intraday_high_equity=Decimal("5800.00"), day_anchor=Decimal("5800.00"), equity=Decimal("5550.00")))
    assert [w.level for w in v.warnings if w.rule == "max_total_loss"] == [50]
    assert v.total_loss_used_pct == Decimal("50.00")


# --- trading days and resets across daylight saving ------------------------------------------

NY = "America/New_York"
PRAGUE = "Europe/Prague"


@pytest.mark.parametrize(
    "tz,reset,day,expected_utc",
    [
        # UTC midnight (TradeSense preset): never moves.
        ("UTC", time(0), date(2025, 3, 30), datetime(2025, 3, 30, 0, 0, tzinfo=UTC)),
        # Europe/Prague midnight: CET (+1) until the last Sunday of March, then CEST (+2).
        (PRAGUE, time(0), date(2025, 3, 29), datetime(2025, 3, 28, 23, 0, tzinfo=UTC)),
        (PRAGUE, time(0), date(2025, 3, 30), datetime(2025, 3, 29, 23, 0, tzinfo=UTC)),  # change day (02:00->03:00)
        (PRAGUE, time(0), date(2025, 3, 31), datetime(2025, 3, 30, 22, 0, tzinfo=UTC)),
        (PRAGUE, time(0), date(2025, 10, 26), datetime(2025, 10, 25, 22, 0, tzinfo=UTC)),  # change day (03:00->02:00)
        (PRAGUE, time(0), date(2025, 10, 27), datetime(2025, 10, 26, 23, 0, tzinfo=UTC)),
        # America/New_York 17:00: EST (-5) until the second Sunday of March, EDT (-4) until
        # the first Sunday of November.
        (NY, time(17), date(2025, 3, 8), datetime(2025, 3, 8, 22, 0, tzinfo=UTC)),
        (NY, time(17), date(2025, 3, 9), datetime(2025, 3, 9, 21, 0, tzinfo=UTC)),  # change day
        (NY, time(17), date(2025, 11, 1), datetime(2025, 11, 1, 21, 0, tzinfo=UTC)),
        (NY, time(17), date(2025, 11, 2), datetime(2025, 11, 2, 22, 0, tzinfo=UTC)),  # change day
        # A reset inside the spring gap (02:30 does not exist on 9 March in New York):
        # it resolves to 03:30 EDT, i.e. 07:30 UTC.
        (NY, time(2, 30), date(2025, 3, 9), datetime(2025, 3, 9, 7, 30, tzinfo=UTC)),
        # A reset that happens twice (01:30 on 2 November): the first one (EDT).
        (NY, time(1, 30), date(2025, 11, 2), datetime(2025, 11, 2, 5, 30, tzinfo=UTC)),
    ],
)
def test_reset_instant_across_dst(tz, reset, day, expected_utc):
    assert reset_instant(day, tz=tz, reset_time=reset) == expected_utc
    # The instant a day begins belongs to that day; one microsecond before, to the previous.
    assert trading_day_for(expected_utc, tz=tz, reset_time=reset) == day
    assert trading_day_for(expected_utc - timedelta(microseconds=1), tz=tz, reset_time=reset) == day - timedelta(days=1)


@pytest.mark.parametrize(
    "now,tz,reset,expected",
    [
        # 17:00 New York: 16:59 belongs to the previous trading day.
        (datetime(2025, 3, 10, 20, 59, tzinfo=UTC), NY, time(17), date(2025, 3, 9)),  # 16:59 EDT
        (datetime(2025, 3, 10, 21, 0, tzinfo=UTC), NY, time(17), date(2025, 3, 10)),  # 17:00 EDT
        (datetime(2025, 3, 7, 21, 30, tzinfo=UTC), NY, time(17), date(2025, 3, 6)),  # 16:30 EST
        (datetime(2025, 3, 7, 22, 0, tzinfo=UTC), NY, time(17), date(2025, 3, 7)),  # 17:00 EST
        # The same UTC clock time is a different trading day either side of the change.
        (datetime(2025, 11, 3, 21, 30, tzinfo=UTC), NY, time(17), date(2025, 11, 2)),  # 16:30 EST
        (datetime(2025, 11, 1, 21, 30, tzinfo=UTC), NY, time(17), date(2025, 11, 1)),  # 17:30 EDT
        # Prague midnight.
        (datetime(2025, 3, 30, 22, 30, tzinfo=UTC), PRAGUE, time(0), date(2025, 3, 31)),  # 00:30 CEST
        (datetime(2025, 3, 30, 21, 59, tzinfo=UTC), PRAGUE, time(0), date(2025, 3, 30)),
        (datetime(2025, 10, 26, 22, 59, tzinfo=UTC), PRAGUE, time(0), date(2025, 10, 26)),  # 23:59 CET
        (datetime(2025, 10, 26, 23, 0, tzinfo=UTC), PRAGUE, time(0), date(2025, 10, 27)),
        # UTC midnight.
        (datetime(2025, 3, 30, 23, 59, 59, tzinfo=UTC), "UTC", time(0), date(2025, 3, 30)),
    ],
)
def test_trading_day_for(now, tz, reset, expected):
    assert trading_day_for(now, tz=tz, reset_time=reset) == expected


@pytest.mark.parametrize("tz,reset", [(PRAGUE, time(0)), (NY, time(17)), ("UTC", time(0))])
def test_trading_day_lengths_over_a_year(tz, reset):
    """Every trading day in 2025 is 24 h, except the two change days (23 h and 25 h)."""
    lengths = {}
    day = date(2025, 1, 1)
    while day.year == 2025:
        start = reset_instant(day, tz=tz, reset_time=reset)
        end = reset_instant(day + timedelta(days=1), tz=tz, reset_time=reset)
        lengths[day] = (end - start) / timedelta(hours=1)
        assert trading_day_for(start + (end - start) / 2, tz=tz, reset_time=reset) == day
        day += timedelta(days=1)
    odd = {d: h for d, h in lengths.items() if h != 24}
    if tz == "UTC":
        assert odd == {}
    elif tz == PRAGUE:
        assert odd == {date(2025, 3, 30): 23, date(2025, 10, 26): 25}
    else:
        # The 17:00 New York day that contains the 02:00 change is the one that began
        # the evening before.
        assert odd == {date(2025, 3, 8): 23, date(2025, 11, 1): 25}


def test_trading_day_for_refuses_naive_datetimes():
    with pytest.raises(ValueError):
        trading_day_for(datetime(2025, 1, 1, 12, 0), tz="UTC", reset_time=time(0))


# --- replay ----------------------------------------------------------------------------------


def test_stored_inputs_replay_the_same_verdict():
    r = rules(max_loss_mode="trailing_intraday", trailing_locks_at_start=True)
    s = state(equity=Decimal("4749.99"), intraday_high_equity=Decimal("5123.45"), best_day_profit=Decimal("1.00"))
    stored_rules, stored_inputs = r.to_snapshot(), s.to_inputs()
    assert evaluate(RuleSet.from_snapshot(stored_rules), AccountState.from_inputs(stored_inputs)) == evaluate(r, s)


def test_evaluate_is_pure():
    r, s = rules(), state(equity=Decimal("4800.00"))
    assert evaluate(r, s) == evaluate(r, replace(s))
