"""Real concurrency against PostgreSQL: threads, each with its own connection, on one
challenge. The row lock serializes them; nothing is lost, doubled or torn."""

import threading
import uuid
from decimal import Decimal as D

import pytest
from django.db import connection
from rest_framework.test import APIClient

from challenges import netting
from challenges.models import Challenge, LedgerEntry, Order, Position
from challenges.services import order_place
from tradesense.common.models import AuditEvent

from .conftest import set_price

pytestmark = pytest.mark.django_db(transaction=True)


def run_threads(n, target):
    """Start n threads behind a barrier so they hit the database together."""
    barrier = threading.Barrier(n)
    results = [None] * n

    def worker(i):
        try:
            barrier.wait(timeout=10)
            results[i] = target(i)
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            results[i] = exc
        finally:
            connection.close()  # give the pooled connection back

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads)
    return results


def client_for_token(token_key):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token_key}")
    return client


@pytest.fixture
def token(trader):
    from accounts.services import token_issue

    return token_issue(user=trader)


def test_twenty_concurrent_orders_leave_everything_consistent(challenge, trader, token):
    order_place(challenge_id=challenge.pk, trader=trader, symbol="AAPL", side="buy", qty=D("10"))
    set_price("AAPL", D("101.00"))

    def place(i):
        # Even threads sell 1 (realizing +1.00 while long), odd ones buy 2 or trade EURUSD.
        symbol, side, qty = [("AAPL", "sell", "1"), ("AAPL", "buy", "2"), ("EURUSD", "buy", "0.01")][i % 3]
        response = client_for_token(token).post(
            f"/api/v1/challenges/{challenge.pk}/orders",
            {"symbol": symbol, "side": side, "qty": qty, "client_order_id": f"c-{i}"},
            format="json",
            headers={"Idempotency-Key": f"k-{i}"},
        )
        return response.status_code

    codes = run_threads(20, place)
    assert codes == [201] * 20, codes

    challenge.refresh_from_db()
    orders = list(Order.objects.filter(challenge=challenge).select_related("instrument").order_by("id"))
    assert len(orders) == 21
    assert challenge.version == 1 + 21  # one bump per fill, none lost to a race
    ledger = list(LedgerEntry.objects.filter(challenge=challenge).order_by("id"))
    assert challenge.balance == challenge.starting_balance + sum((e.amount for e in ledger), D("0"))
    # Each sell of 1 at 101 realizes against whatever average held then: replaying the
    # fills in commit order must give exactly the stored positions and ledger.
    held, realized = {}, []
    for order in orders:
        qty, avg = held.get(order.instrument.symbol, (D("0"), D("0")))
        result = netting.net_fill(
            qty=qty, avg_entry_price=avg, side=order.side, fill_qty=order.filled_qty,
            price=order.filled_avg_price, contract_size=order.instrument.contract_size,
        )
        held[order.instrument.symbol] = (result.qty, result.avg_entry_price)
        if result.realized_pl:
            realized.append(result.realized_pl)
        assert order.realized_pl == result.realized_pl
    assert [e.amount for e in ledger] == realized
    stored = {
        p.instrument.symbol: (p.qty, p.avg_entry_price)
        for p in Position.objects.filter(challenge=challenge).select_related("instrument")
    }
    assert stored == {s: v for s, v in held.items() if v[0] != 0}
    assert stored["AAPL"][0] == D("10") - 7 + 2 * 7  # 7 sells of 1, 7 buys of 2
    assert stored["EURUSD"][0] == D("0.06")
    assert AuditEvent.objects.filter(action="order.filled").count() == 21


def test_concurrent_retries_of_one_client_order_id_fill_once(challenge, token):
    def place(_):
        return client_for_token(token).post(
            f"/api/v1/challenges/{challenge.pk}/orders",
            {"symbol": "EURUSD", "side": "buy", "qty": "0.10", "client_order_id": "same-order"},
            format="json",
        ).status_code

    codes = run_threads(10, place)
    assert sorted(codes) == [200] * 9 + [201]
    assert Order.objects.filter(challenge=challenge).count() == 1
    assert Position.objects.get(challenge=challenge).qty == D("0.10")
    challenge.refresh_from_db()
    assert challenge.version == 2


def test_concurrent_replays_of_one_idempotency_key_fill_once(challenge, token):
    key = uuid.uuid4().hex

    def place(_):
        response = client_for_token(token).post(
            f"/api/v1/challenges/{challenge.pk}/orders",
            {"symbol": "EURUSD", "side": "sell", "qty": "0.20"},
            format="json",
            headers={"Idempotency-Key": key},
        )
        return response.status_code, response.json()["id"]

    results = run_threads(10, place)
    assert {r[0] for r in results} == {201}
    assert len({r[1] for r in results}) == 1  # every replay answers the first order
    assert Order.objects.filter(challenge=challenge).count() == 1
    challenge.refresh_from_db()
    assert challenge.version == 2 and Challenge.objects.get(pk=challenge.pk).balance == D("5000.00")
