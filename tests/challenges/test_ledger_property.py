"""Property: after any sequence of prices and orders, balance == starting balance + the
sum of the ledger, each ledger row's balance_after chains, and the stored positions are
exactly the netting of the stored fills."""

import uuid
from decimal import Decimal as D

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from challenges import netting
from challenges.errors import ChallengeNotActive, InsufficientMargin
from challenges.models import Challenge, LedgerEntry, Order, Position
from challenges.services import challenge_activate, order_place

from .conftest import set_price

SYMBOLS = {
    # symbol: (base price, qty step, max lots in one order)
    "EURUSD": (D("1.10000"), D("0.01"), 300),
    "XAUUSD": (D("2000.00"), D("0.01"), 300),
    "BTCUSD": (D("50000.00"), D("0.0001"), 30000),
    "AAPL": (D("100.00"), D("0.01"), 30000),
}

step = st.tuples(
    st.sampled_from(sorted(SYMBOLS)),
    st.sampled_from(["buy", "sell"]),
    st.integers(min_value=1, max_value=30000),  # in qty steps, capped per symbol below
    st.integers(min_value=-300, max_value=300),  # price move in basis points of the base
)


def check_invariants(challenge: Challenge) -> None:
    challenge.refresh_from_db()
    ledger = list(LedgerEntry.objects.filter(challenge=challenge).order_by("id"))
    assert challenge.balance == challenge.starting_balance + sum((e.amount for e in ledger), D("0"))
    running = challenge.starting_balance
    for entry in ledger:
        running += entry.amount
        assert entry.balance_after == running
        assert entry.amount == entry.order.realized_pl != 0
    held = {}
    for order in Order.objects.filter(challenge=challenge).select_related("instrument").order_by("id"):
        qty, avg = held.get(order.instrument.symbol, (D("0"), D("0")))
        result = netting.net_fill(
            qty=qty, avg_entry_price=avg, side=order.side, fill_qty=order.filled_qty,
            price=order.filled_avg_price, contract_size=order.instrument.contract_size,
        )
        held[order.instrument.symbol] = (result.qty, result.avg_entry_price)
    expected = {sym: v for sym, v in held.items() if v[0] != 0}
    stored = {
        p.instrument.symbol: (p.qty, p.avg_entry_price)
        for p in Position.objects.filter(challenge=challenge).select_related("instrument")
    }
    assert stored == expected
    if challenge.status != Challenge.Status.ACTIVE:
        assert stored == {}  # a failed (or passed) account is flat


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(steps=st.lists(step, min_size=1, max_size=12))
def test_ledger_invariant_holds_for_any_order_sequence(trader, plans, market, steps):
    challenge = challenge_activate(trader=trader, plan=plans["starter"], source_ref=f"prop:{uuid.uuid4().hex}")
    for symbol, side, n_steps, move_bp in steps:
        base, qty_step, max_steps = SYMBOLS[symbol]
        price = (base * (D(10000) + move_bp) / D(10000)).quantize(base)
        set_price(symbol, price)
        qty = qty_step * min(n_steps, max_steps)
        try:
            order_place(challenge_id=challenge.pk, trader=trader, symbol=symbol, side=side, qty=qty)
        except (InsufficientMargin, ChallengeNotActive) as exc:
            event(type(exc).__name__)
        check_invariants(challenge)
    event(f"status {challenge.status}")
    event(f"ledger rows > 0: {LedgerEntry.objects.filter(challenge=challenge).exists()}")
