"""The instrument catalogue, all quoted in USD (installed by migration 0003).

Sizes are in lots of `contract_size` units (a forex lot is 100,000 of the base currency,
a gold lot 100 oz; crypto, the index CFD and shares trade in single units), so profit and
loss in USD is (price change) x qty x contract_size. `volatility` is the standard
deviation of one simulation step's return (one step per market tick, about a second).

The catalogue's fixed terms and the plan list are read on nearly every page and API call
and written only by operators and this installer, so they are cached (PLANS_CACHE,
INSTRUMENTS_CACHE, read in challenges/selectors.py); prices never are.
"""

import functools
import hashlib
from decimal import Decimal

from django.db.models.signals import post_delete, post_migrate, post_save
from django.utils import timezone

from tradesense.common.cache import CachedRead

D = Decimal
CATALOGUE = [
    # symbol, name, asset class, price, price decimals, contract size, qty step, min, max, volatility
    ("EURUSD", "Euro / US Dollar", "forex", D("1.08500"), 5, D("100000"), D("0.01"), D("0.01"), D("50"), D("0.00004")),
    ("GBPUSD", "British Pound / US Dollar", "forex", D("1.27000"), 5, D("100000"), D("0.01"), D("0.01"), D("50"), D("0.00005")),
    ("XAUUSD", "Gold / US Dollar", "metal", D("2350.00"), 2, D("100"), D("0.01"), D("0.01"), D("50"), D("0.00008")),
    ("BTCUSD", "Bitcoin / US Dollar", "crypto", D("65000.00"), 2, D("1"), D("0.0001"), D("0.0001"), D("100"), D("0.00020")),
    ("ETHUSD", "Ether / US Dollar", "crypto", D("3200.00"), 2, D("1"), D("0.001"), D("0.001"), D("1000"), D("0.00025")),
    ("US500", "S&P 500 index CFD", "index", D("5200.00"), 2, D("1"), D("0.1"), D("0.1"), D("1000"), D("0.00006")),
    ("AAPL", "Apple Inc.", "stock", D("190.00"), 2, D("1"), D("0.01"), D("0.01"), D("100000"), D("0.00010")),
    ("TSLA", "Tesla, Inc.", "stock", D("180.00"), 2, D("1"), D("0.01"), D("0.01"), D("100000"), D("0.00020")),
]


def install_catalogue(*, Instrument, PriceTick, now=None) -> int:
    """Insert the symbols that are missing (models passed in, so the data migration can
    use its historical models). Returns how many were added; existing rows are left as
    operators tuned them."""
    now = now or timezone.now()
    added = 0
    for index, (symbol, name, asset_class, price, decimals, contract, step, low, high, vol) in enumerate(CATALOGUE):
        instrument, created = Instrument.objects.get_or_create(
            symbol=symbol,
            defaults=dict(
                name=name,
                asset_class=asset_class,
                quote_currency="USD",
                contract_size=contract,
                qty_step=step,
                min_qty=low,
                max_qty=high,
                price_decimals=decimals,
                initial_price=price,
                volatility=vol,
                seed=index + 1,
                sim_step=0,
                price=price,
                price_at=now,
            ),
        )
        if created:
            added += 1
            # The history starts with the initial price, so "the price at or before t"
            # exists for any t after the catalogue was installed.
            PriceTick.objects.create(instrument=instrument, price=price, at=now, source="sim", step=0)
    if added:
        # The migration passes historical models, whose saves the receivers below never see.
        INSTRUMENTS_CACHE.invalidate()
    return added


# --- Cached reads ------------------------------------------------------------------------------------


def _model_shape(label: str):
    """A key suffix that changes with the model's columns: a cached instance pickled by one
    release is never unpickled by another with different fields."""

    @functools.cache
    def suffix() -> str:
        from django.apps import apps

        fields = ",".join(f.attname for f in apps.get_model(label)._meta.concrete_fields)
        return hashlib.sha1(fields.encode(), usedforsecurity=False).hexdigest()[:10]

    return suffix


PLANS_CACHE = CachedRead("plans", key_suffix=_model_shape("challenges.Plan"))
INSTRUMENTS_CACHE = CachedRead("instruments")
# Saves that move only the price: every market tick, never a change of the catalogue.
PRICE_FIELDS = frozenset({"price", "price_at", "sim_step"})


def _plan_changed(sender, **kwargs):
    PLANS_CACHE.invalidate()


def _instrument_changed(sender, update_fields=None, **kwargs):
    if update_fields is not None and set(update_fields) <= PRICE_FIELDS:
        return
    INSTRUMENTS_CACHE.invalidate()


def _database_rebuilt(sender, **kwargs):
    # migrate (data migrations use historical models) and flush (tests) bypass save();
    # the signal comes once per app, this app's is enough.
    if sender.name != "challenges":
        return
    PLANS_CACHE.invalidate()
    INSTRUMENTS_CACHE.invalidate()


def connect_cache_invalidation() -> None:
    """Receivers rather than calls in each service: plans are written by plan_save,
    plan_apply_rule_preset and seed commands in three apps, and a writer that forgets
    the call would leave traders a stale price. Idempotent (dispatch_uid)."""
    for name, signal in (("saved", post_save), ("deleted", post_delete)):
        signal.connect(_plan_changed, sender="challenges.Plan", dispatch_uid=f"catalogue.plans.{name}")
        signal.connect(_instrument_changed, sender="challenges.Instrument", dispatch_uid=f"catalogue.instruments.{name}")
    post_migrate.connect(_database_rebuilt, dispatch_uid="catalogue.post_migrate")


# Every process that reads these caches (challenges.selectors) or installs the catalogue
# imports this module; ChallengesConfig.ready should call it too, for the other writers.
connect_cache_invalidation()
