"""Money, prices and quantities are Decimal end to end; these are their column shapes."""

from decimal import ROUND_HALF_EVEN, Decimal

# Account currency amounts: cents.
MONEY = dict(max_digits=20, decimal_places=2)
# Prices and quantities: 8 places covers FX pips, crypto satoshis and fractional shares.
PRICE = dict(max_digits=24, decimal_places=8)
QUANTITY = dict(max_digits=24, decimal_places=8)
PERCENT = dict(max_digits=7, decimal_places=4)

CENT = Decimal("0.01")
PRICE_QUANTUM = Decimal("0.00000001")


def to_money(value: Decimal) -> Decimal:
    """Round an amount to cents with banker's rounding (no drift on sums)."""
    return Decimal(value).quantize(CENT, rounding=ROUND_HALF_EVEN)


def to_price(value: Decimal) -> Decimal:
    return Decimal(value).quantize(PRICE_QUANTUM, rounding=ROUND_HALF_EVEN)
