"""Position netting: open, add, reduce, flip, close; long and short; exact Decimals."""

from decimal import Decimal as D

import pytest

from challenges import netting
from challenges.models import LedgerEntry, Position
from challenges.services import order_place

# (position qty, avg entry, side, fill qty, price, contract) -> (qty, avg, realized, closed, opened)
TABLE = [
    # open long / open short
    (D("0"), D("0"), "buy", D("2"), D("100.00"), D("1"), D("2"), D("100.00000000"), D("0.00"), D("0"), D("2")),
    (D("0"), D("0"), "sell", D("3"), D("100.00"), D("1"), D("-3"), D("100.00000000"), D("0.00"), D("0"), D("3")),
    # add long: the average weighs lots by size
    (D("2"), D("100"), "buy", D("2"), D("110.00"), D("1"), D("4"), D("105.00000000"), D("0.00"), D("0"), D("2")),
    (D("1"), D("100"), "buy", D("2"), D("103"), D("1"), D("3"), D("102.00000000"), D("0.00"), D("0"), D("2")),
    # add short
    (D("-1"), D("200"), "sell", D("3"), D("196"), D("1"), D("-4"), D("197.00000000"), D("0.00"), D("0"), D("3")),
    # an average that does not terminate rounds half-even to 8 places
    (D("1"), D("1"), "buy", D("2"), D("2"), D("1"), D("3"), D("1.66666667"), D("0.00"), D("0"), D("2")),
    # reduce long at a profit / at a loss: the average stays
    (D("4"), D("105"), "sell", D("1"), D("120"), D("1"), D("3"), D("105"), D("15.00"), D("1"), D("0")),
    (D("4"), D("105"), "sell", D("3"), D("100"), D("1"), D("1"), D("105"), D("-15.00"), D("3"), D("0")),
    # reduce short: profit when the price fell
    (D("-4"), D("197"), "buy", D("1"), D("190"), D("1"), D("-3"), D("197"), D("7.00"), D("1"), D("0")),
    (D("-4"), D("197"), "buy", D("2"), D("199.5"), D("1"), D("-2"), D("197"), D("-5.00"), D("2"), D("0")),
    # close long / close short
    (D("3"), D("100"), "sell", D("3"), D("101"), D("1"), D("0"), D("0"), D("3.00"), D("3"), D("0")),
    (D("-3"), D("100"), "buy", D("3"), D("101"), D("1"), D("0"), D("0"), D("-3.00"), D("3"), D("0")),
    # flip long -> short: 2 close at a profit, 3 open short at the fill price
    (D("2"), D("100"), "sell", D("5"), D("110"), D("1"), D("-3"), D("110.00000000"), D("20.00"), D("2"), D("3")),
    # flip short -> long
    (D("-2"), D("100"), "buy", D("3"), D("90"), D("1"), D("1"), D("90.00000000"), D("20.00"), D("2"), D("1")),
    # forex lots: 0.5 lot EURUSD, 100,000 per lot, +12 pips = +60.00
    (D("0.5"), D("1.08500"), "sell", D("0.5"), D("1.08620"), D("100000"), D("0"), D("0"), D("60.00"), D("0.5"), D("0")),
    # short gold lot (100 oz) closed 2.35 higher: -235.00
    (D("-1"), D("2350.00"), "buy", D("1"), D("2352.35"), D("100"), D("0"), D("0"), D("-235.00"), D("1"), D("0")),
    # half a cent realizes with banker's rounding: 0.005 -> 0.00, 0.015 -> 0.02
    (D("1"), D("1.000"), "sell", D("1"), D("1.005"), D("1"), D("0"), D("0"), D("0.00"), D("1"), D("0")),
    (D("1"), D("1.000"), "sell", D("1"), D("1.015"), D("1"), D("0"), D("0"), D("0.02"), D("1"), D("0")),
]


@pytest.mark.parametrize("qty,avg,side,fill,price,contract,e_qty,e_avg,e_pl,e_closed,e_opened", TABLE)
def test_net_fill_table(qty, avg, side, fill, price, contract, e_qty, e_avg, e_pl, e_closed, e_opened):
    result = netting.net_fill(
        qty=qty, avg_entry_price=avg, side=side, fill_qty=fill, price=price, contract_size=contract
    )
    assert result.qty == e_qty
    assert result.avg_entry_price == e_avg
    assert result.realized_pl == e_pl
    assert str(result.realized_pl) == str(e_pl)  # exactly two places, no "-0.00"
    assert result.closed_qty == e_closed
    assert result.opened_qty == e_opened


def test_huge_values_are_exact_beyond_the_default_context():
    # 16 integer digits x 8 decimals x a 100,000 contract: more than 28 significant digits.
    result = netting.net_fill(
        qty=D("1234567.12345678"),
        avg_entry_price=D("65000.12345678"),
        side="sell",
        fill_qty=D("1234567.12345678"),
        price=D("65001.12345679"),
        contract_size=D("100000"),
    )
    exact = (D("65001.12345679") - D("65000.12345678")) * D("1234567.12345678") * D("100000")
    assert result.realized_pl == exact.quantize(D("0.01"))
    assert result.realized_pl == D("123456713580.25")


def test_unrealized_matches_what_a_close_would_realize():
    for qty, avg, price in [(D("3"), D("100"), D("97.5")), (D("-0.3"), D("1.1"), D("1.09871")), (D("2"), D("7"), D("7"))]:
        close = netting.net_fill(
            qty=qty, avg_entry_price=avg, side="sell" if qty > 0 else "buy", fill_qty=abs(qty), price=price,
            contract_size=D("100"),
        )
        assert netting.unrealized_pl(qty=qty, avg_entry_price=avg, price=price, contract_size=D("100")) == close.realized_pl


def test_bad_fills_are_refused():
    with pytest.raises(ValueError):
        netting.net_fill(qty=D("1"), avg_entry_price=D("1"), side="buy", fill_qty=D("0"), price=D("1"), contract_size=D("1"))
    with pytest.raises(ValueError):
        netting.net_fill(qty=D("1"), avg_entry_price=D("1"), side="hold", fill_qty=D("1"), price=D("1"), contract_size=D("1"))


def test_netting_through_the_service_long_then_flip_short(challenge, trader, market):
    """open, add, reduce, flip, close on AAPL (contract 1), checked against the ledger."""
    steps = [
        # price, side, qty -> position qty, avg, balance
        ("100.00", "buy", "10", D("10"), D("100"), D("5000.00")),
        ("110.00", "buy", "10", D("20"), D("105"), D("5000.00")),
        ("120.00", "sell", "5", D("15"), D("105"), D("5075.00")),
        ("90.00", "sell", "20", D("-5"), D("90"), D("4850.00")),
        ("80.00", "buy", "5", None, None, D("4900.00")),
    ]
    for price, side, qty, e_qty, e_avg, e_balance in steps:
        market("AAPL", D(price))
        order_place(challenge_id=challenge.pk, trader=trader, symbol="AAPL", side=side, qty=D(qty))
        challenge.refresh_from_db()
        position = Position.objects.filter(challenge=challenge, instrument__symbol="AAPL").first()
        if e_qty is None:
            assert position is None
        else:
            assert (position.qty, position.avg_entry_price) == (e_qty, e_avg)
        assert challenge.balance == e_balance
    amounts = list(LedgerEntry.objects.filter(challenge=challenge).values_list("amount", flat=True))
    assert amounts == [D("75.00"), D("-225.00"), D("50.00")]
    assert challenge.balance == challenge.starting_balance + sum(amounts)
    assert challenge.equity == challenge.balance  # flat
    assert challenge.version == 6  # activation 1 + five fills


def test_netting_through_the_service_short_side(challenge, trader, market):
    market("XAUUSD", D("2000.00"))
    order_place(challenge_id=challenge.pk, trader=trader, symbol="XAUUSD", side="sell", qty=D("0.20"))
    market("XAUUSD", D("1990.00"))
    order_place(challenge_id=challenge.pk, trader=trader, symbol="XAUUSD", side="sell", qty=D("0.20"))
    position = Position.objects.get(challenge=challenge)
    assert (position.qty, position.avg_entry_price) == (D("-0.40"), D("1995.00000000"))
    market("XAUUSD", D("1985.50"))
    order_place(challenge_id=challenge.pk, trader=trader, symbol="XAUUSD", side="buy", qty=D("0.40"))
    challenge.refresh_from_db()
    # (1995 - 1985.5) x 0.4 oz-lots x 100 oz = 380.00
    assert challenge.balance == D("5380.00")
    assert not Position.objects.filter(challenge=challenge).exists()
