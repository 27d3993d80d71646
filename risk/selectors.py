"""Reads for the risk engine. The sweep's screen is one set-based query per batch."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal

from django.db import connection
from django.db.models import Max

from challenges.models import Challenge, Instrument, Position
from risk.models import RiskWarning, SweepTick, WorkerHeartbeat


@dataclass(frozen=True)
class ScreenRow:
    """One active challenge marked to market at the current prices (plain values)."""

    id: int
    version: int
    starting_balance: Decimal
    balance: Decimal
    equity: Decimal  # balance + unrealized P&L (each position rounded to cents, half-even)
    day_anchor: Decimal | None
    trading_day: date | None
    intraday_high_equity: Decimal | None
    eod_high: Decimal | None
    trading_days: int
    created_at: datetime
    last_trade_at: datetime | None
    rules_json: str  # the raw rules snapshot, so equal snapshots parse once per sweep
    open_positions: int


# Banker's rounding to cents in SQL, identical to tradesense.common.money.to_money (and so
# to challenges.netting.unrealized_pl): Postgres' round() sends halves away from zero, so
# an exact half cent whose lower neighbour is even is truncated instead. Numeric is exact.
_PG_HALF_EVEN_CENTS = """
CASE WHEN mod(abs({x}) * 100, 1) = 0.5 AND mod(trunc(abs({x}) * 100), 2) = 0
     THEN trunc({x} * 100) / 100
     ELSE round({x}, 2) END
"""

_PG_SCREEN_SQL = """
WITH batch AS (
    -- A LATERAL probe, not EXISTS: under the OR the planner hashes the whole position
    -- table for every batch; this walks the primary key and probes the index per row.
    SELECT c.id FROM challenges_challenge c
    LEFT JOIN LATERAL (SELECT 1 AS held FROM challenges_position p WHERE p.challenge_id = c.id LIMIT 1) h ON true
    WHERE c.status = 'active' AND c.id > %(after_id)s
      AND (h.held IS NOT NULL
           OR c.rules ->> 'max_duration_days' IS NOT NULL
           OR c.rules ->> 'inactivity_days' IS NOT NULL)
    ORDER BY c.id
    LIMIT %(limit)s
)
SELECT c.id, c.version, c.starting_balance, c.balance,
       c.balance + COALESCE(SUM({upl}), 0) AS equity,
       c.day_anchor, c.trading_day, c.intraday_high_equity, c.eod_high, c.trading_days,
       c.created_at, c.last_trade_at, c.rules::text, COUNT(p.id) AS open_positions
FROM batch
JOIN challenges_challenge c ON c.id = batch.id
LEFT JOIN challenges_position p ON p.challenge_id = c.id
LEFT JOIN challenges_instrument i ON i.id = p.instrument_id
GROUP BY c.id
ORDER BY c.id
""".format(upl=_PG_HALF_EVEN_CENTS.format(x="((i.price - p.avg_entry_price) * p.qty * i.contract_size)"))  # nosec B608


def risk_screen_batch(*, after_id: int, limit: int) -> list[ScreenRow]:
    """The next `limit` active challenges after `after_id` that have an open position (or a
    time-based rule), each with its equity at the instruments' current prices.

    One query on Postgres: positions x instruments aggregated per challenge."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(_PG_SCREEN_SQL, {"after_id": after_id, "limit": limit})
            return [ScreenRow(*row) for row in cursor.fetchall()]
    return _screen_batch_portable(after_id=after_id, limit=limit)


def _screen_batch_portable(*, after_id: int, limit: int) -> list[ScreenRow]:
    """The same screen for the embedded SQLite default, where numbers are not exact in
    SQL: two queries per batch and the arithmetic in Python (challenges.netting)."""
    import json

    from django.db.models import Exists, OuterRef, Q

    from challenges.netting import unrealized_pl

    has_position = Exists(Position.objects.filter(challenge_id=OuterRef("pk")))
    challenges = list(
        Challenge.objects.filter(status=Challenge.Status.ACTIVE, pk__gt=after_id)
        .annotate(has_position=has_position)
        .filter(
            Q(has_position=True)
            | Q(rules__max_duration_days__isnull=False) & ~Q(rules__max_duration_days=None)
            | Q(rules__inactivity_days__isnull=False) & ~Q(rules__inactivity_days=None)
        )
        .order_by("pk")[:limit]
    )
    positions = defaultdict(list)
    for p in Position.objects.filter(challenge_id__in=[c.pk for c in challenges]).values(
        "challenge_id", "qty", "avg_entry_price", "instrument__price", "instrument__contract_size"
    ):
        positions[p["challenge_id"]].append(p)
    rows = []
    for c in challenges:
        own = positions.get(c.pk, [])
        upl = sum(
            (
                unrealized_pl(
                    qty=p["qty"],
                    avg_entry_price=p["avg_entry_price"],
                    price=p["instrument__price"],
                    contract_size=p["instrument__contract_size"],
                )
                for p in own
            ),
            Decimal("0.00"),
        )
        rows.append(
            ScreenRow(
                c.pk, c.version, c.starting_balance, c.balance, c.balance + upl, c.day_anchor, c.trading_day,
                c.intraday_high_equity, c.eod_high, c.trading_days, c.created_at, c.last_trade_at,
                json.dumps(c.rules, sort_keys=True), len(own),
            )
        )
    return rows


def risk_prices_for_challenges(*, challenge_ids: list[int]) -> dict[int, dict[str, Decimal]]:
    """Current price of every instrument each challenge holds: {challenge: {symbol: price}}."""
    out: dict[int, dict[str, Decimal]] = defaultdict(dict)
    rows = Position.objects.filter(challenge_id__in=challenge_ids).values_list(
        "challenge_id", "instrument__symbol", "instrument__price"
    )
    for challenge_id, symbol, price in rows:
        out[challenge_id][symbol] = price
    return dict(out)


def risk_current_prices(*, symbols: list[str]) -> dict[str, Decimal]:
    return dict(Instrument.objects.filter(symbol__in=symbols).values_list("symbol", "price"))


def risk_warnings_recorded(*, challenge_ids: list[int], since_day: date) -> set[tuple[int, str, int, date]]:
    """(challenge, rule, level, day) of the warnings already sent on or after `since_day`."""
    return set(
        RiskWarning.objects.filter(challenge_id__in=challenge_ids, trading_day__gte=since_day).values_list(
            "challenge_id", "rule", "level", "trading_day"
        )
    )


def risk_warning_list(*, challenge: Challenge):
    return RiskWarning.objects.filter(challenge=challenge).order_by("-trading_day", "rule", "level")


def risk_reset_groups() -> list[tuple[str, str]]:
    """The distinct (time zone, reset time) pairs among active challenges' rule sets."""
    return list(
        Challenge.objects.filter(status=Challenge.Status.ACTIVE)
        .values_list("rules__daily_reset_tz", "rules__daily_reset_time")
        .distinct()
        .order_by()
    )


def risk_challenges_missing_anchor(*, tz: str, reset_time: str, day: date, after_id: int, limit: int) -> list[int]:
    """Active challenges on this reset convention whose anchor for `day` is not written yet."""
    from django.db.models import Q

    return list(
        Challenge.objects.filter(
            status=Challenge.Status.ACTIVE,
            rules__daily_reset_tz=tz,
            rules__daily_reset_time=reset_time,
            pk__gt=after_id,
        )
        .filter(Q(trading_day__isnull=True) | Q(trading_day__lt=day))
        .order_by("pk")
        .values_list("pk", flat=True)[:limit]
    )


def sweep_tick_latest() -> SweepTick | None:
    return SweepTick.objects.order_by("-tick").first()


def sweep_tick_last_finished() -> SweepTick | None:
    return SweepTick.objects.filter(finished_at__isnull=False).order_by("-tick").first()


def worker_heartbeat_latest_at() -> datetime | None:
    return WorkerHeartbeat.objects.aggregate(latest=Max("beat_at"))["latest"]
