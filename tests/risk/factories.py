"""Bulk builders for many active challenges with open positions (sweep tests, the
worker-crash test and bench/bench_sweep.py).

They write the rows challenge_activate and one opening fill (order_place) would have
written -- challenge, order, position, today's DailyAnchor, the audit of neither --
in a handful of bulk INSERTs, because opening 100,000 challenges through the API would
measure the API, not the sweep. An opening fill realizes nothing, so the balance stays
the starting balance and the ledger stays empty, exactly as after a real first order.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from django.contrib.auth import get_user_model
from django.utils import timezone

from challenges.models import Challenge, DailyAnchor, Instrument, Order, Plan, Position
from risk import rules as risk_rules


def flat_instrument(symbol: str, *, price: Decimal, contract_size: Decimal = Decimal("1"), now: datetime | None = None) -> Instrument:
    """An instrument whose simulated walk does not move (volatility 0): only a staff
    price change (market_price_set) moves it, so a test controls every price."""
    now = now or timezone.now()
    instrument, _ = Instrument.objects.update_or_create(
        symbol=symbol,
        defaults=dict(
            name=f"Test {symbol}",
            asset_class="test",
            contract_size=contract_size,
            qty_step=Decimal("0.01"),
            min_qty=Decimal("0.01"),
            max_qty=Decimal("1000000"),
            price_decimals=2,
            initial_price=price,
            volatility=Decimal("0"),
            price=price,
            price_at=now,
            is_active=True,
        ),
    )
    return instrument


@dataclass
class Group:
    name: str
    count: int
    qty: Decimal  # signed: > 0 long, < 0 short


def bulk_open_challenges(
    *,
    plan: Plan,
    instrument: Instrument,
    groups: list[Group],
    trader=None,
    now: datetime | None = None,
    opened_ago: timedelta = timedelta(minutes=5),
    prefix: str = "bulk",
    batch_size: int = 5000,
) -> dict[str, list[int]]:
    """Open `count` challenges per group on `plan`, each holding `qty` of `instrument`
    bought at its current price; returns the challenge ids per group name."""
    now = now or timezone.now()
    opened_at = now - opened_ago
    if trader is None:
        trader, _ = get_user_model().objects.get_or_create(username=f"{prefix}-trader")
    rules = plan.rules_snapshot()
    ruleset = risk_rules.RuleSet.from_snapshot(rules)
    today = risk_rules.trading_day_for(now, tz=ruleset.daily_reset_tz, reset_time=ruleset.daily_reset_time)
    reset_at = risk_rules.reset_instant(today, tz=ruleset.daily_reset_tz, reset_time=ruleset.daily_reset_time)
    start = plan.starting_balance
    out: dict[str, list[int]] = {}
    serial = Challenge.objects.count()
    for group in groups:
        ids: list[int] = []
        remaining = group.count
        while remaining > 0:
            n = min(batch_size, remaining)
            remaining -= n
            challenges = []
            for _ in range(n):
                serial += 1
                challenges.append(
                    Challenge(
                        trader=trader, plan=plan, source_ref=f"{prefix}:{serial}", status=Challenge.Status.ACTIVE,
                        currency=plan.account_currency, starting_balance=start, balance=start, equity=start,
                        rules=rules, ruleset_version=plan.ruleset_version, trading_day=today, day_anchor=start,
                        day_start_balance=start, day_start_equity=start, intraday_high_equity=start, eod_high=start,
                        max_loss_floor=start - ruleset.max_loss_limit(start), trading_days=1, last_trading_day=today,
                        last_trade_at=opened_at, marked_at=opened_at,
                    )
                )
            created = Challenge.objects.bulk_create(challenges, batch_size=batch_size)
            # created_at is auto_now_add: backdate it to the opening, as if bought then.
            Challenge.objects.filter(pk__in=[c.pk for c in created]).update(created_at=opened_at)
            side = "buy" if group.qty > 0 else "sell"
            Order.objects.bulk_create(
                [
                    Order(
                        challenge=c, client_order_id=f"open-{c.pk}", instrument=instrument, side=side, qty=abs(group.qty),
                        filled_qty=abs(group.qty), filled_avg_price=instrument.price, filled_at=opened_at,
                    )
                    for c in created
                ],
                batch_size=batch_size,
            )
            Position.objects.bulk_create(
                [
                    Position(challenge=c, instrument=instrument, qty=group.qty, avg_entry_price=instrument.price, opened_at=opened_at)
                    for c in created
                ],
                batch_size=batch_size,
            )
            DailyAnchor.objects.bulk_create(
                [
                    DailyAnchor(challenge=c, day=today, reset_at=reset_at, balance=start, equity=start, anchor=start)
                    for c in created
                ],
                batch_size=batch_size,
            )
            ids.extend(c.pk for c in created)
        out[group.name] = ids
    return out
