"""The order path's raw SQL (docs/performance.md): same rows and answers as the ORM path,
token authentication without a cache, and a bound on the statements an order runs."""

from decimal import Decimal as D

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from accounts.models import ApiToken
from challenges import services
from challenges.models import Challenge, Instrument, LedgerEntry, Order, Position
from tradesense.common import rawsql
from tradesense.common.models import AuditEvent, IdempotencyRecord


def test_rawsql_loads_the_instances_the_orm_loads(challenge, place):
    assert place(challenge, "EURUSD", "buy", "0.10").status_code == 201
    locked = services.challenge_lock(challenge_id=challenge.pk, trader=challenge.trader)
    orm = Challenge.objects.get(pk=challenge.pk)
    for field in Challenge._meta.concrete_fields:
        assert getattr(locked, field.attname) == getattr(orm, field.attname), field.name
    assert isinstance(locked.rules, dict) and locked.rules == orm.rules  # JSON decoded as the ORM does
    assert locked._state.adding is False and locked._state.db == "default"
    duplicate, positions, instrument = services._order_reads(challenge=locked, symbol="EURUSD", client_order_id="nope")
    assert duplicate is False
    orm_position = Position.objects.select_related("instrument").get(challenge=challenge)
    assert set(positions) == {"EURUSD"}
    for field in Position._meta.concrete_fields:
        assert getattr(positions["EURUSD"], field.attname) == getattr(orm_position, field.attname), field.name
    for field in Instrument._meta.concrete_fields:
        assert getattr(instrument, field.attname) == getattr(orm_position.instrument, field.attname), field.name


def test_order_reads_finds_duplicates_held_and_unknown_symbols(challenge, place):
    assert place(challenge, "GBPUSD", "buy", "0.10", client_order_id="held-1").status_code == 201
    Instrument.objects.filter(symbol="GBPUSD").update(is_active=False)  # held, then delisted
    Instrument.objects.filter(symbol="AAPL").update(is_active=False)
    lock = services.challenge_lock(challenge_id=challenge.pk)
    dup, positions, instrument = services._order_reads(challenge=lock, symbol="GBPUSD", client_order_id="held-1")
    assert dup is True and set(positions) == {"GBPUSD"} and instrument.symbol == "GBPUSD"  # held: still tradable
    dup, positions, instrument = services._order_reads(challenge=lock, symbol="AAPL", client_order_id=None)
    assert dup is False and set(positions) == {"GBPUSD"} and instrument is None  # inactive, not held
    dup, positions, instrument = services._order_reads(challenge=lock, symbol="XAUUSD", client_order_id="x")
    assert dup is False and instrument.symbol == "XAUUSD" and instrument.price == D("2000.00000000")


def test_order_reads_answers_with_nothing_held_and_an_unknown_symbol(challenge):
    lock = services.challenge_lock(challenge_id=challenge.pk)
    assert services._order_reads(challenge=lock, symbol="NOPE", client_order_id="c") == (False, {}, None)


def test_a_fill_writes_the_rows_the_orm_path_wrote(challenge, place, market):
    market("EURUSD", D("1.10000"))
    assert place(challenge, "EURUSD", "buy", "0.50", client_order_id="a").status_code == 201
    market("EURUSD", D("1.10200"))
    response = place(challenge, "EURUSD", "sell", "0.20", client_order_id="b")
    assert response.status_code == 201, response.json()
    order = Order.objects.get(challenge=challenge, client_order_id="b")
    assert (order.side, order.qty, order.filled_qty, order.filled_avg_price) == ("sell", D("0.2"), D("0.2"), D("1.102"))
    assert (order.type, order.status, order.reason, order.realized_pl) == ("market", "filled", "", D("40.00"))
    assert response.json()["id"] == order.pk and response.json()["realized_pl"] == "40.00"
    entry = LedgerEntry.objects.get(challenge=challenge)
    assert (entry.kind, entry.amount, entry.balance_after, entry.order_id) == ("realized_pl", D("40.00"), D("5040.00"), order.pk)
    assert entry.memo == "sell 0.20000000 EURUSD @ 1.10200000" and entry.created_at == order.filled_at
    position = Position.objects.get(challenge=challenge)
    assert (position.qty, position.avg_entry_price) == (D("0.3"), D("1.1"))
    event = AuditEvent.objects.filter(action="order.filled", object_id=str(order.pk)).get()
    assert (event.object_type, event.actor_id, event.actor_label) == ("challenges.order", challenge.trader_id, f"trader:{challenge.trader_id}")
    assert event.before == {"position_qty": "0.50000000", "avg_entry_price": "1.10000000", "balance": "5000.00"}
    assert event.after["realized_pl"] == "40.00" and event.after["balance"] == "5040.00"
    assert event.reason == "market order"
    challenge.refresh_from_db()
    assert (challenge.balance, challenge.version) == (D("5040.00"), 3)
    # Closing the rest deletes the position row.
    assert place(challenge, "EURUSD", "sell", "0.30").status_code == 201
    assert not Position.objects.filter(challenge=challenge).exists()


def test_a_deleted_token_or_an_inactive_user_is_refused_on_the_next_request(challenge, api, trader):
    assert api.get(f"/api/v1/challenges/{challenge.pk}").status_code == 200
    # Deactivated without saving the user (no revocation ran): the look-up itself refuses.
    type(trader).objects.filter(pk=trader.pk).update(is_active=False)
    response = api.get(f"/api/v1/challenges/{challenge.pk}")
    assert response.status_code == 401
    assert response.json()["error"]["message"] == "User inactive or deleted."
    type(trader).objects.filter(pk=trader.pk).update(is_active=True)
    assert api.get(f"/api/v1/challenges/{challenge.pk}").status_code == 200
    ApiToken.objects.filter(user=trader).delete()
    response = api.get(f"/api/v1/challenges/{challenge.pk}")
    assert response.status_code == 401
    assert response.json()["error"] == {"code": "authentication_failed", "message": "Invalid token.", "fields": {}}


def test_an_order_runs_a_bounded_number_of_statements(challenge, place, api):
    place(challenge, "EURUSD", "buy", "0.10")  # warm: today's anchor is written on the first order
    with CaptureQueriesContext(connection) as queries:
        response = place(challenge, "EURUSD", "buy", "0.10", client_order_id="c-1", headers={"Idempotency-Key": "k-1"})
    assert response.status_code == 201
    statements = [q["sql"] for q in queries.captured_queries]
    assert all(statements), statements  # the debug log shows prepared statements too
    # Token, key claim, savepoint, lock, reads, order, position, audit, challenge, release,
    # key answer (docs/performance.md), plus the test's own savepoint pair around the
    # request's transaction: more means the hot path grew a query.
    assert len(statements) <= 13, "\n".join(s[:100] for s in statements)
    assert IdempotencyRecord.objects.get(key="k-1").status_code == 201


@pytest.mark.skipif(connection.vendor != "postgresql", reason="prepared statements are PostgreSQL's")
def test_the_hot_path_statements_are_prepared(challenge, place):
    for _ in range(2):
        assert place(challenge, "EURUSD", "buy", "0.10").status_code == 201
    with rawsql.cursor() as cursor:
        cursor.execute("SELECT statement FROM pg_prepared_statements")
        statements = [row[0] for row in cursor.fetchall()]
    assert any('INSERT INTO "challenges_order"' in s for s in statements), statements
    assert any("FOR UPDATE" in s for s in statements), statements
