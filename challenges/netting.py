"""Position netting: pure Decimal arithmetic over plain values (no ORM, no clock).

One position per symbol, signed: qty > 0 is long, qty < 0 is short. A fill in the
position's direction adds to it at a weighted average entry price; a fill against it
reduces, closes or flips it, and the closed part realizes profit and loss at
(fill price - average entry) x closed qty x contract size, signed by the direction.

Why a wide local context: a quantity and a price each carry up to 24 digits (8 after
the point), and the product with a contract size of 100,000 can need more than the
default 28 significant digits. Every intermediate is computed exactly at 80 digits; the
only roundings are the two the model declares: realized P&L to cents (banker's
rounding, once per fill, so the ledger is exact) and the average entry price to 8
places (the column's precision).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, localcontext

from tradesense.common.money import to_money, to_price

ZERO = Decimal("0")
EXACT_PRECISION = 80


def _cents(value: Decimal) -> Decimal:
    # No negative zero: "-0.00" would be a correct but confusing amount to show.
    return to_money(value) + ZERO


@dataclass(frozen=True)
class NetResult:
    qty: Decimal  # the signed position after the fill; 0 when flat
    avg_entry_price: Decimal  # 0 when flat
    realized_pl: Decimal  # cents, realized by the part of the fill that reduced the position
    closed_qty: Decimal  # how much of the previous position the fill closed
    opened_qty: Decimal  # how much of the fill opened or added to a position


def signed_qty(*, side: str, qty: Decimal) -> Decimal:
    if side == "buy":
        return qty
    if side == "sell":
        return -qty
    raise ValueError(f"side must be 'buy' or 'sell', not {side!r}")


def net_fill(
    *, qty: Decimal, avg_entry_price: Decimal, side: str, fill_qty: Decimal, price: Decimal, contract_size: Decimal
) -> NetResult:
    """Apply one fill of `fill_qty` (> 0) at `price` to a position of `qty` at `avg_entry_price`."""
    if fill_qty <= 0:
        raise ValueError("fill_qty must be positive")
    delta = signed_qty(side=side, qty=fill_qty)
    with localcontext() as ctx:
        ctx.prec = EXACT_PRECISION
        new_qty = qty + delta
        if qty == 0 or (qty > 0) == (delta > 0):
            # Open or add: the new average weighs old and new lots by size.
            cost = abs(qty) * avg_entry_price + fill_qty * price
            return NetResult(
                qty=new_qty,
                avg_entry_price=to_price(cost / abs(new_qty)),
                realized_pl=_cents(ZERO),
                closed_qty=ZERO,
                opened_qty=fill_qty,
            )
        # Reduce, close or flip: the closed part realizes against the average entry.
        closed = min(abs(qty), fill_qty)
        direction = Decimal(1) if qty > 0 else Decimal(-1)
        realized = _cents((price - avg_entry_price) * closed * contract_size * direction)
        if new_qty == 0:
            avg = ZERO
        elif (new_qty > 0) == (qty > 0):
            avg = avg_entry_price  # a reduction leaves the remaining lots' average alone
        else:
            avg = to_price(price)  # a flip: the remainder is a new position opened at the fill
        return NetResult(
            qty=new_qty,
            avg_entry_price=avg,
            realized_pl=realized,
            closed_qty=closed,
            opened_qty=fill_qty - closed,
        )


def unrealized_pl(*, qty: Decimal, avg_entry_price: Decimal, price: Decimal, contract_size: Decimal) -> Decimal:
    """What closing the whole position at `price` would realize (cents, same rounding as a fill)."""
    with localcontext() as ctx:
        ctx.prec = EXACT_PRECISION
        return _cents((price - avg_entry_price) * qty * contract_size)


def exposure(*, qty: Decimal, price: Decimal, contract_size: Decimal) -> Decimal:
    """Gross notional of a position at `price` (always >= 0), in the quote currency."""
    with localcontext() as ctx:
        ctx.prec = EXACT_PRECISION
        return abs(qty) * price * contract_size


def book_apply_fill(book: dict, *, order) -> None:
    """Net one filled order into a replayed book {instrument_id: (instrument, qty,
    avg_entry_price)}: used to rebuild positions as they were at an earlier instant
    (daily anchors, portfolio history) from the immutable order rows."""
    instrument = order.instrument
    _, qty, avg = book.get(order.instrument_id, (instrument, ZERO, ZERO))
    result = net_fill(
        qty=qty,
        avg_entry_price=avg,
        side=order.side,
        fill_qty=order.filled_qty,
        price=order.filled_avg_price,
        contract_size=instrument.contract_size,
    )
    if result.qty == 0:
        book.pop(order.instrument_id, None)
    else:
        book[order.instrument_id] = (instrument, result.qty, result.avg_entry_price)
