"""Every non-trivial read of challenges, orders, positions and prices (HackSoft selectors).

Values leave here as plain JSON-ready dicts with money, prices and quantities as
decimal strings (API.md), so the REST API, live events and the dashboard show the same
numbers."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from decimal import Decimal

from django.db.models import DecimalField, ExpressionWrapper, F, Prefetch, Q, QuerySet
from django.utils import timezone

from challenges import netting
from challenges.catalogue import INSTRUMENTS_CACHE, PLANS_CACHE
from challenges.errors import ChallengeNotFound
from challenges.models import Breach, Challenge, Instrument, LedgerEntry, Order, Plan, Position, PriceTick
from risk import rules as risk_rules

ZERO = Decimal("0")
CENT = Decimal("0.01")
MAX_LIMIT = 500


def _s(value) -> str | None:
    return None if value is None else str(value)


def _plain(value: Decimal) -> str:
    """A catalogue number without exponent or trailing zeros ("100000", "0.01")."""
    return f"{value.normalize():f}"


def iso_utc(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


# --- Plans and market ----------------------------------------------------------------------------


def plan_list() -> list[Plan]:
    """The plans on sale, in display order (cached: challenges/catalogue.py)."""
    return PLANS_CACHE.get(lambda: list(Plan.objects.filter(is_active=True).order_by("sort_order", "price")))


def _instrument_terms() -> dict[str, dict]:
    """Every instrument's fixed terms by symbol; no price (it moves every second)."""
    return {
        symbol: {
            "name": name,
            "asset_class": asset_class,
            "contract_size": _plain(contract),
            "qty_step": _plain(step),
            "min_qty": _plain(low),
        }
        for symbol, name, asset_class, contract, step, low in Instrument.objects.values_list(
            "symbol", "name", "asset_class", "contract_size", "qty_step", "min_qty"
        )
    }


def market_prices() -> list[dict]:
    """Listed instruments at their current prices: prices and listing from the database,
    the fixed terms from the cached catalogue."""
    quotes = list(Instrument.objects.filter(is_active=True).order_by("symbol").values_list("symbol", "price", "price_at"))
    terms = INSTRUMENTS_CACHE.get(_instrument_terms)
    if any(symbol not in terms for symbol, _, _ in quotes):
        # Listed by a write the invalidation never saw (bulk_create, raw SQL): read afresh.
        INSTRUMENTS_CACHE.invalidate()
        terms = INSTRUMENTS_CACHE.get(_instrument_terms)
    return [{"symbol": symbol, "price": _s(price), "at": iso_utc(at), **terms[symbol]} for symbol, price, at in quotes]


def price_history(*, symbol: str, since: datetime, limit: int) -> list[dict]:
    ticks = (
        PriceTick.objects.filter(instrument__symbol=symbol, at__gte=since)
        .order_by("-at", "-id")
        .values_list("price", "at", "source")[:limit]
    )
    return [{"price": _s(p), "at": iso_utc(at), "source": src} for p, at, src in reversed(list(ticks))]


# --- Challenges -------------------------------------------------------------------------------------


def challenge_list_for_trader(*, trader) -> QuerySet[Challenge]:
    return (
        Challenge.objects.filter(trader=trader)
        .select_related("plan", "breach")
        .prefetch_related(Prefetch("positions", queryset=Position.objects.select_related("instrument")))
        .order_by("-id")
    )


def challenge_get_for_trader(*, trader, challenge_id: int) -> Challenge:
    challenge = challenge_list_for_trader(trader=trader).filter(pk=challenge_id).first()
    if challenge is None:
        raise ChallengeNotFound()
    return challenge


def _live_equity(challenge: Challenge, positions: Iterable[Position]) -> tuple[Decimal, Decimal]:
    """(equity, unrealized) at the instruments' current prices (what API.md calls equity)."""
    unrealized = ZERO
    for position in positions:
        unrealized += netting.unrealized_pl(
            qty=position.qty,
            avg_entry_price=position.avg_entry_price,
            price=position.instrument.price,
            contract_size=position.instrument.contract_size,
        )
    return challenge.balance + unrealized, unrealized


def breach_to_dict(breach: Breach | None) -> dict | None:
    if breach is None:
        return None
    return {
        "rule": breach.rule,
        "threshold": _s(breach.threshold),
        "observed": _s(breach.observed),
        "message": breach.message,
        "prices": breach.prices,
        "at": iso_utc(breach.at),
        "ruleset_version": breach.ruleset_version,
        "detected_by": breach.detected_by,
    }


def challenge_snapshot(*, challenge: Challenge) -> dict:
    """The challenge as API.md shows it. Equity is live (balance plus unrealized P&L at
    current prices); the floors come from the risk rules themselves, so the numbers a
    trader sees are the ones the rules enforce."""
    positions = list(challenge.positions.all())  # prefetched by the list selector
    if challenge.status == Challenge.Status.ACTIVE:
        equity, unrealized = _live_equity(challenge, positions)
    else:
        equity, unrealized = challenge.equity, ZERO
    rules = risk_rules.RuleSet.from_snapshot(challenge.rules)
    start = challenge.starting_balance
    anchor = challenge.day_anchor if challenge.day_anchor is not None else start
    verdict = risk_rules.evaluate(
        rules,
        risk_rules.AccountState(
            now=timezone.now(),
            starting_balance=start,
            balance=challenge.balance,
            equity=equity,
            day_anchor=anchor,
            intraday_high_equity=challenge.intraday_high_equity or start,
            eod_high=challenge.eod_high or start,
            trading_days=challenge.trading_days,
            has_open_positions=bool(positions),
        ),
    )
    try:
        breach = challenge.breach
    except Breach.DoesNotExist:
        breach = None
    return {
        "id": challenge.pk,
        "plan": challenge.plan.slug,
        "status": challenge.status,
        "currency": challenge.currency,
        "starting_balance": _s(start),
        "balance": _s(challenge.balance),
        "equity": _s(equity),
        "unrealized_pl": _s(unrealized),
        "day_start_balance": _s(challenge.day_start_balance if challenge.day_start_balance is not None else start),
        "day_start_equity": _s(challenge.day_start_equity if challenge.day_start_equity is not None else start),
        "day_anchor": _s(anchor),
        "trading_day": challenge.trading_day.isoformat() if challenge.trading_day else None,
        "daily_loss_floor": _s(verdict.daily_loss_floor),
        "max_loss_floor": _s(verdict.max_loss_floor),
        "profit_target_balance": _s(verdict.profit_target_balance),
        "daily_loss_used_pct": _s(verdict.daily_loss_used_pct),
        "total_loss_used_pct": _s(verdict.total_loss_used_pct),
        "trading_days": challenge.trading_days,
        "min_trading_days": rules.min_trading_days,
        "leverage": _s(rules.leverage),
        "ruleset_version": challenge.ruleset_version,
        "failure_reason": challenge.failure_reason or None,
        "breach": breach_to_dict(breach),
        "version": challenge.version,
        "marked_at": iso_utc(challenge.marked_at),
        "created_at": iso_utc(challenge.created_at),
        "ended_at": iso_utc(challenge.ended_at),
    }


# --- Orders and positions ------------------------------------------------------------------------------


def order_to_dict(order: Order) -> dict:
    return {
        "id": order.pk,
        "client_order_id": order.client_order_id,
        "symbol": order.instrument.symbol,
        "side": str(order.side),
        "qty": _s(order.qty),
        "type": str(order.type),
        "status": str(order.status),
        "filled_qty": _s(order.filled_qty),
        "filled_avg_price": _s(order.filled_avg_price),
        "realized_pl": _s(order.realized_pl),
        "reason": order.reason or None,
        "filled_at": iso_utc(order.filled_at),
        "created_at": iso_utc(order.created_at),
    }


def order_list(
    *, challenge: Challenge, status: str | None = None, symbol: str | None = None, before: int | None = None
) -> QuerySet[Order]:
    qs = Order.objects.filter(challenge=challenge).select_related("instrument").order_by("-id")
    if status:
        qs = qs.filter(status=status)
    if symbol:
        qs = qs.filter(instrument__symbol=symbol)
    if before is not None:
        qs = qs.filter(pk__lt=before)
    return qs


def order_get_by_client_order_id(*, challenge: Challenge, client_order_id: str) -> Order:
    order = Order.objects.filter(challenge=challenge, client_order_id=client_order_id).select_related("instrument").first()
    if order is None:
        raise ChallengeNotFound("No order with this client_order_id.")
    return order


def position_to_dict(position: Position | None, *, symbol: str | None = None) -> dict:
    """A position at its instrument's current price; a closed one is qty "0"."""
    if position is None:
        return {"symbol": symbol, "qty": "0", "side": None, "avg_entry_price": None}
    instrument = position.instrument
    price = instrument.price
    return {
        "symbol": instrument.symbol,
        "qty": _s(position.qty),
        "side": "long" if position.qty > 0 else "short",
        "avg_entry_price": _s(position.avg_entry_price),
        "current_price": _s(price),
        "market_value": _s(netting.exposure(qty=position.qty, price=price, contract_size=instrument.contract_size).copy_sign(position.qty).quantize(CENT)),
        "unrealized_pl": _s(
            netting.unrealized_pl(
                qty=position.qty,
                avg_entry_price=position.avg_entry_price,
                price=price,
                contract_size=instrument.contract_size,
            )
        ),
        "contract_size": _plain(instrument.contract_size),
        "opened_at": iso_utc(position.opened_at),
    }


def position_list(*, challenge: Challenge) -> list[dict]:
    positions = Position.objects.filter(challenge=challenge).select_related("instrument").order_by("instrument__symbol")
    return [position_to_dict(p) for p in positions]


def ledger_balance_check(*, challenge: Challenge) -> tuple[Decimal, Decimal]:
    """(balance, starting balance + sum of the ledger): equal, always."""
    total = sum(LedgerEntry.objects.filter(challenge=challenge).values_list("amount", flat=True), ZERO)
    return challenge.balance, challenge.starting_balance + total


# --- Portfolio history ----------------------------------------------------------------------------------

TIMEFRAMES = {"1Min": 60, "5Min": 300, "15Min": 900, "1H": 3600, "1D": 86400}


def portfolio_history(*, challenge: Challenge, timeframe: str | None = None, limit: int = 200, now: datetime | None = None) -> dict:
    """Equity and profit/loss at regular instants from activation to now (or the end),
    replayed from the fills, the ledger and the price history; the last point is live.

    At most `limit` points: the most recent ones. Timestamps ascend (a chart's order)."""
    now = now or timezone.now()
    start = challenge.created_at
    end = challenge.ended_at or now
    span = max((end - start).total_seconds(), 1)
    if timeframe is None:
        timeframe = next((name for name, sec in TIMEFRAMES.items() if span / sec <= limit), "1D")
    step = TIMEFRAMES[timeframe]
    # Points on round boundaries of the timeframe (10:05, 10:10, ...), plus the start
    # and the end (now: live prices), keeping the most recent `limit`.
    first_boundary = -(-int(start.timestamp()) // step) * step
    points = [start]
    boundary = first_boundary
    while boundary < end.timestamp():
        at = datetime.fromtimestamp(boundary, tz=UTC)
        if at > start:
            points.append(at)
        boundary += step
    points.append(end)
    points = points[-limit:]

    fills = list(Order.objects.filter(challenge=challenge, filled_at__lte=end).select_related("instrument").order_by("filled_at", "id"))
    ledger = list(
        LedgerEntry.objects.filter(challenge=challenge, created_at__lte=end).order_by("created_at", "id").values_list("created_at", "amount")
    )
    held: dict[int, tuple[Instrument, Decimal, Decimal]] = {}
    balance = challenge.starting_balance
    fi = li = 0
    timestamps, equities, pls = [], [], []
    for index, at in enumerate(points):
        while fi < len(fills) and fills[fi].filled_at <= at:
            netting.book_apply_fill(held, order=fills[fi])
            fi += 1
        while li < len(ledger) and ledger[li][0] <= at:
            balance += ledger[li][1]
            li += 1
        equity = balance
        live = index == len(points) - 1 and challenge.ended_at is None
        for instrument, qty, avg in held.values():
            if live:
                price = Instrument.objects.filter(pk=instrument.pk).values_list("price", flat=True).first()
            else:
                price = (
                    PriceTick.objects.filter(instrument=instrument, at__lte=at)
                    .order_by("-at", "-id")
                    .values_list("price", flat=True)
                    .first()
                ) or avg
            equity += netting.unrealized_pl(qty=qty, avg_entry_price=avg, price=price, contract_size=instrument.contract_size)
        timestamps.append(iso_utc(at))
        equities.append(_s(equity))
        pls.append(_s(equity - challenge.starting_balance))
    return {
        "timestamp": timestamps,
        "equity": equities,
        "profit_loss": pls,
        "base_value": _s(challenge.starting_balance),
        "timeframe": timeframe,
    }


# --- Leaderboard ------------------------------------------------------------------------------------------


def leaderboard(*, now: datetime | None = None, limit: int = 50) -> list[dict]:
    """This month's ranking by profit (equity over starting balance), failed challenges
    excluded: every challenge that was open at some point of the current UTC month."""
    now = now or timezone.now()
    month_start = now.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    profit_pct = ExpressionWrapper(
        (F("equity") - F("starting_balance")) * Decimal("100") / F("starting_balance"),
        output_field=DecimalField(max_digits=30, decimal_places=10),
    )
    rows = (
        Challenge.objects.exclude(status=Challenge.Status.FAILED)
        .filter(Q(ended_at__isnull=True) | Q(ended_at__gte=month_start))
        .annotate(profit_pct=profit_pct)
        .select_related("trader", "plan")
        .order_by("-profit_pct", "id")[:limit]
    )
    return [
        {
            "rank": rank,
            "trader": row.trader.get_username(),
            "challenge": row.pk,
            "plan": row.plan.slug,
            "status": row.status,
            "profit_pct": _s(Decimal(row.profit_pct).quantize(CENT)),
        }
        for rank, row in enumerate(rows, start=1)
    ]
