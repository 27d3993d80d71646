"""The market: a seeded random walk per symbol, an optional external feed, staff prices.

One current price per symbol lives on its Instrument row (`price`, `price_at`) and is
written in the same transaction as the PriceTick that records it, so the web process,
the risk sweep and the price history can never disagree about a price at an instant.

The simulation is a pure function of (market seed, instrument seed, symbol, step): the
shock of step n does not depend on anything that happened before, so the same seed and
starting price always give the same path, whatever interrupted it. The shock is an
Irwin-Hall sum of twelve integer uniforms (mean 0, variance 1, bounded at +-6), computed
in integers and Decimals only, so a path is identical on every platform.
"""

from __future__ import annotations

import logging
import random
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from prometheus_client import Counter

from challenges.errors import StalePrice
from challenges.models import Instrument, PriceTick
from tradesense.common.audit import audit_record
from tradesense.common.money import to_price

logger = logging.getLogger(__name__)

FEED_FAILURES = Counter(
    "tradesense_market_feed_failures_total", "Market ticks where the external feed failed and the simulation carried on."
)
SIM_CATCHUPS = Counter(
    "tradesense_market_sim_catchups_total", "Stale simulated prices advanced inline by a fill (no tick had run)."
)

_UNIFORM_SCALE = 1_000_000
_DRAWS = 12


# --- The simulation (pure) ---------------------------------------------------------------


def sim_shock(*, seed: int, symbol: str, step: int) -> Decimal:
    """A standard-normal-like shock for one step, reproducible from its inputs alone."""
    # random.Random seeded with a str hashes it with SHA-512: stable across processes
    # and Python versions, unlike hash().
    rng = random.Random(f"{seed}:{symbol}:{step}")
    total = sum(2 * rng.randrange(_UNIFORM_SCALE) + 1 for _ in range(_DRAWS))
    return Decimal(total) / Decimal(2 * _UNIFORM_SCALE) - Decimal(_DRAWS // 2)


def sim_next_price(
    *, price: Decimal, seed: int, symbol: str, step: int, volatility: Decimal, price_decimals: int
) -> Decimal:
    """The price after step `step` of the walk, rounded to the symbol's tick size."""
    tick = Decimal(1).scaleb(-price_decimals)
    moved = price * (Decimal(1) + volatility * sim_shock(seed=seed, symbol=symbol, step=step))
    return max(moved.quantize(tick, rounding=ROUND_HALF_EVEN), tick)


def sim_path(
    *,
    start_price: Decimal,
    seed: int,
    symbol: str,
    first_step: int,
    steps: int,
    volatility: Decimal,
    price_decimals: int,
) -> list[Decimal]:
    prices, price = [], start_price
    for step in range(first_step, first_step + steps):
        price = sim_next_price(
            price=price, seed=seed, symbol=symbol, step=step, volatility=volatility, price_decimals=price_decimals
        )
        prices.append(price)
    return prices


def instrument_seed(instrument: Instrument) -> int:
    # The deployment's seed and the symbol's own: an operator can re-seed one symbol.
    return settings.MARKET_SEED * 1_000_003 + instrument.seed


# --- The external feed ---------------------------------------------------------------------


@dataclass(frozen=True)
class Quote:
    symbol: str
    price: Decimal
    at: datetime


class FeedError(Exception):
    """The feed could not be read; the simulation carries on for this tick."""


class PriceFeed(ABC):
    """An external market-data source. `fetch` returns what it has, and raises FeedError
    (or anything else) when it cannot answer: the caller falls back to the simulation
    for every symbol the feed did not price freshly."""

    name = "feed"

    @abstractmethod
    def fetch(self, *, symbols: Sequence[str], timeout: float) -> Mapping[str, Quote]: ...


class HttpJsonFeed(PriceFeed):
    """GET <url> answering {"prices": [{"symbol": "EURUSD", "price": "1.08512", "at": "<ISO 8601>"}]}."""

    name = "http-json"

    def __init__(self, url: str):
        self.url = url

    def fetch(self, *, symbols: Sequence[str], timeout: float) -> Mapping[str, Quote]:
        import httpx

        try:
            response = httpx.get(self.url, params={"symbols": ",".join(symbols)}, timeout=timeout)
            response.raise_for_status()
            rows = response.json().get("prices", [])
        except Exception as exc:  # noqa: BLE001 - any failure means "no feed this tick"
            raise FeedError(f"{self.url}: {exc}") from exc
        quotes = {}
        for row in rows if isinstance(rows, list) else []:
            quote = _parse_quote(row)
            if quote is not None:
                quotes[quote.symbol] = quote
        return quotes


def _parse_quote(row) -> Quote | None:
    """One feed row, or None when anything about it is unusable (skipped, not trusted)."""
    try:
        symbol = str(row["symbol"])
        price = Decimal(str(row["price"]))
        at = datetime.fromisoformat(str(row["at"]).replace("Z", "+00:00"))
    except (KeyError, TypeError, ValueError, InvalidOperation):
        return None
    if not price.is_finite() or price <= 0 or at.tzinfo is None:
        return None
    return Quote(symbol=symbol, price=price, at=at)


def feed_from_settings() -> PriceFeed | None:
    url = getattr(settings, "MARKET_FEED_URL", "")
    return HttpJsonFeed(url) if url else None


# --- Services ---------------------------------------------------------------------------------


def _usable_quote(quote: Quote | None, *, now: datetime) -> bool:
    if not isinstance(quote, Quote) or not quote.price.is_finite() or quote.price <= 0:
        return False
    max_age = timedelta(seconds=getattr(settings, "MARKET_FEED_MAX_AGE_SECONDS", 10.0))
    # Stale, or from the future beyond a little clock skew: not a price to trade on.
    return now - max_age <= quote.at <= now + timedelta(seconds=2)


def market_tick(*, now: datetime | None = None, feed: PriceFeed | None = None, use_settings_feed: bool = True) -> list[PriceTick]:
    """Advance every active instrument once: from the feed where it has a fresh quote,
    by one simulation step everywhere else. Safe to run concurrently: rows another tick
    (or an inline catch-up) holds are skipped, not advanced twice."""
    now = now or timezone.now()
    if feed is None and use_settings_feed:
        feed = feed_from_settings()
    quotes: Mapping[str, Quote] = {}
    if feed is not None:
        try:
            symbols = list(Instrument.objects.filter(is_active=True).values_list("symbol", flat=True))
            quotes = feed.fetch(symbols=symbols, timeout=getattr(settings, "MARKET_FEED_TIMEOUT_SECONDS", 1.0))
        except Exception as exc:  # noqa: BLE001 - the seed: trading continues on the simulation
            FEED_FAILURES.inc()
            logger.warning("market feed %s failed, simulating this tick: %s", feed.name, exc)
    with transaction.atomic():
        instruments = list(Instrument.objects.select_for_update(skip_locked=True).filter(is_active=True))
        ticks = []
        for instrument in instruments:
            quote = quotes.get(instrument.symbol)
            if _usable_quote(quote, now=now):
                # Stamped with the tick's instant: the price as observed now (the quote's
                # own age is bounded by MARKET_FEED_MAX_AGE_SECONDS).
                ticks.append(_set_price(instrument, price=to_price(quote.price), at=now, source=PriceTick.Source.FEED))
            else:
                ticks.append(_sim_step(instrument, now=now))
        PriceTick.objects.bulk_create(ticks)
        Instrument.objects.bulk_update(instruments, ["price", "price_at", "sim_step"])
    return ticks


def _set_price(instrument: Instrument, *, price: Decimal, at: datetime, source: str, step: int | None = None) -> PriceTick:
    instrument.price = price
    instrument.price_at = at
    return PriceTick(instrument=instrument, price=price, at=at, source=source, step=step)


def _sim_step(instrument: Instrument, *, now: datetime) -> PriceTick:
    step = instrument.sim_step + 1
    price = sim_next_price(
        price=instrument.price,
        seed=instrument_seed(instrument),
        symbol=instrument.symbol,
        step=step,
        volatility=instrument.volatility,
        price_decimals=instrument.price_decimals,
    )
    instrument.sim_step = step
    return _set_price(instrument, price=to_price(price), at=now, source=PriceTick.Source.SIMULATION, step=step)


def market_price_set(*, symbol: str, price: Decimal, actor, now: datetime | None = None) -> PriceTick:
    """Staff set a price now (demos and tests); the walk carries on from it."""
    now = now or timezone.now()
    with transaction.atomic():
        instrument = Instrument.objects.select_for_update().get(symbol=symbol, is_active=True)
        before = {"price": instrument.price, "at": instrument.price_at}
        tick = _set_price(instrument, price=to_price(price), at=now, source=PriceTick.Source.STAFF)
        tick.save()
        instrument.save(update_fields=["price", "price_at"])
        audit_record(
            action="market.price_set",
            object_type="challenges.instrument",
            object_id=symbol,
            before=before,
            after={"price": instrument.price, "at": now},
            actor=actor,
            reason="price set by staff",
        )
    return tick


def price_is_fresh(instrument: Instrument, *, now: datetime) -> bool:
    return now - instrument.price_at <= timedelta(seconds=settings.MARKET_PRICE_MAX_AGE_SECONDS)


def market_fresh_price(*, instrument: Instrument, now: datetime) -> Decimal:
    """The instrument's current price for a fill, never a stale one.

    When the price is older than MARKET_PRICE_MAX_AGE_SECONDS (the ticker stopped: worker
    or beat down), the simulation is advanced here, under the instrument's row lock, so
    trading carries on without the worker (the seed: a worker crash does not stop
    trading). With MARKET_SIM_CATCHUP_ON_FILL off, a stale price is refused (503).
    Must run inside the caller's transaction; it updates `instrument` in place.
    """
    if price_is_fresh(instrument, now=now):
        return instrument.price
    if not getattr(settings, "MARKET_SIM_CATCHUP_ON_FILL", True):
        raise StalePrice(
            f"The price of {instrument.symbol} is older than {settings.MARKET_PRICE_MAX_AGE_SECONDS:g} s; "
            "it is not used for fills. Retry shortly.",
            fields={"symbol": ["Price is stale."]},
        )
    locked = Instrument.objects.select_for_update().get(pk=instrument.pk)
    if not price_is_fresh(locked, now=now):
        # Another process may have advanced it while we waited for the lock; if not, we do.
        tick = _sim_step(locked, now=now)
        tick.save()
        locked.save(update_fields=["price", "price_at", "sim_step"])
        SIM_CATCHUPS.inc()
    instrument.price, instrument.price_at, instrument.sim_step = locked.price, locked.price_at, locked.sim_step
    return instrument.price


# Price history is kept tick by tick for HISTORY_FULL_DAYS (equity curves, replays, the
# daily anchor's catch-up), then thinned to the last tick of each minute: one tick a
# second on 8 symbols is ~690,000 rows a day, and a disk that fills stops the database
# (the seed's disk-exhaustion case). The kept tick is the one "at or before" any instant
# of that minute resolves to, so a catch-up after long downtime still finds a price.
HISTORY_FULL_DAYS = 2
HISTORY_COMPACT_BATCH = 50_000


def market_history_compact(*, now: datetime | None = None, full_days: int = HISTORY_FULL_DAYS) -> int:
    """Delete all but the last tick per instrument and minute older than `full_days`.
    Idempotent and batched; returns the number of ticks deleted."""
    from django.db.models import F, Window
    from django.db.models.functions import RowNumber, TruncMinute

    cutoff = (now or timezone.now()) - timedelta(days=full_days)
    ranked = PriceTick.objects.filter(at__lt=cutoff).annotate(
        rank=Window(RowNumber(), partition_by=[F("instrument_id"), TruncMinute("at")], order_by=[F("at").desc(), F("id").desc()])
    )
    deleted = 0
    while True:
        ids = list(ranked.filter(rank__gt=1).values_list("id", flat=True)[:HISTORY_COMPACT_BATCH])
        if not ids:
            return deleted
        with transaction.atomic():
            deleted += PriceTick.objects.filter(id__in=ids).delete()[0]
