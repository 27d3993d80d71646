"""Property: whatever sequence of prices and fills happens, after a sweep no active
challenge is below a floor (and every failed one has exactly one breach, no position).

Runs the real services on Postgres: order_place (with its inline check), the staff
price service and risk_sweep_run. The floors are recomputed independently from the
rows (positions x current price, netting arithmetic, the pure rules)."""

import itertools
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from challenges.errors import ChallengeNotActive, InsufficientMargin
from challenges.models import Breach, Challenge, Plan, Position
from challenges.netting import unrealized_pl
from challenges.services import challenge_activate, order_place
from risk import rules as risk_rules
from risk.services import risk_sweep_run
from tests.risk.factories import flat_instrument

pytestmark = pytest.mark.django_db

_serial = itertools.count(1)

prices = st.decimals(min_value=Decimal("500.00"), max_value=Decimal("1500.00"), places=2)
price_op = st.tuples(st.just("price"), prices)
fill_op = st.tuples(
    st.just("fill"),
    st.integers(min_value=0, max_value=2),
    st.sampled_from(["buy", "sell"]),
    st.sampled_from([Decimal("0.10"), Decimal("0.50"), Decimal("1.00"), Decimal("2.50")]),
)
plan_shape = st.fixed_dictionaries(
    {
        "max_loss_mode": st.sampled_from(["static", "trailing_eod", "trailing_intraday"]),
        "trailing_locks_at_start": st.booleans(),
        "daily_anchor": st.sampled_from(["balance", "equity", "higher"]),
    }
)


def _check_invariant(challenge_ids: list[int], symbol: str) -> None:
    from challenges.models import Instrument

    price = Instrument.objects.get(symbol=symbol).price
    for challenge in Challenge.objects.filter(pk__in=challenge_ids):
        positions = list(Position.objects.filter(challenge=challenge).select_related("instrument"))
        if challenge.status == Challenge.Status.FAILED:
            assert Breach.objects.filter(challenge=challenge).count() == 1
            assert positions == []
            continue
        equity = challenge.balance + sum(
            (
                unrealized_pl(qty=p.qty, avg_entry_price=p.avg_entry_price, price=price, contract_size=p.instrument.contract_size)
                for p in positions
            ),
            Decimal("0.00"),
        )
        assert equity == challenge.equity, "the sweep marked this challenge at the current price"
        if challenge.status != Challenge.Status.ACTIVE:
            continue
        if challenge.day_anchor is None:
            # Never traded: no day has been anchored, there is nothing to lose yet.
            assert not positions and challenge.balance == challenge.starting_balance
            continue
        rules = risk_rules.RuleSet.from_snapshot(challenge.rules)
        state = risk_rules.AccountState(
            now=challenge.marked_at,
            starting_balance=challenge.starting_balance,
            balance=challenge.balance,
            equity=equity,
            day_anchor=challenge.day_anchor,
            intraday_high_equity=challenge.intraday_high_equity,
            eod_high=challenge.eod_high,
            trading_days=challenge.trading_days,
            has_open_positions=bool(positions),
        )
        verdict = risk_rules.evaluate(rules, state)
        assert equity >= verdict.daily_loss_floor, (challenge.pk, equity, verdict.daily_loss_floor)
        assert equity >= verdict.max_loss_floor, (challenge.pk, equity, verdict.max_loss_floor)
        assert verdict.outcome != "failed"


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(shape=plan_shape, ops=st.lists(st.one_of(price_op, fill_op), min_size=1, max_size=8))
def test_no_active_challenge_is_below_a_floor_after_a_sweep(trader, staff, shape, ops):
    from challenges.market import market_price_set

    n = next(_serial)
    symbol = f"PROP{n}"
    flat_instrument(symbol, price=Decimal("1000.00"))
    plan = Plan.objects.create(
        slug=f"prop-{n}", name=f"Prop {n}", price=Decimal("100.00"), starting_balance=Decimal("5000.00"), **shape
    )
    ids = [challenge_activate(trader=trader, plan=plan, source_ref=f"prop:{n}:{i}").pk for i in range(3)]
    for op in ops:
        if op[0] == "price":
            market_price_set(symbol=symbol, price=op[1], actor=staff)
        else:
            _, index, side, qty = op
            try:
                order_place(challenge_id=ids[index], trader=trader, symbol=symbol, side=side, qty=qty)
            except (ChallengeNotActive, InsufficientMargin):
                pass  # refused orders change nothing; the invariant still has to hold
        risk_sweep_run(tick=n * 1_000_000 + next(_serial), interval_seconds=Decimal("3"), deadline_seconds=None)
        _check_invariant(ids, symbol)
