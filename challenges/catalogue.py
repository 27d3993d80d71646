"""The instrument catalogue, all quoted in USD (installed by migration 0003).

Sizes are in lots of `contract_size` units (a forex lot is 100,000 of the base currency,
a gold lot 100 oz; crypto, the index CFD and shares trade in single units), so profit and
loss in USD is (price change) x qty x contract_size. `volatility` is the standard
deviation of one simulation step's return (one step per market tick, about a second).
"""

from decimal import Decimal

from django.utils import timezone

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
    return added
