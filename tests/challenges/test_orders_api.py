"""POST/GET orders, positions and closes through the REST API (API.md)."""

from decimal import Decimal as D

import pytest
from rest_framework.test import APIClient

from challenges.api import OrderThrottle
from challenges.models import Challenge, LedgerEntry, Order, Position
from tradesense.common.models import AuditEvent, Conflict, IdempotencyRecord
from tradesense.common.throttling import throttle_reset


def state(challenge):
    """Everything an order can change, to prove a refused one changed nothing."""
    challenge.refresh_from_db()
    return (
        challenge.balance,
        challenge.version,
        challenge.status,
        Order.objects.filter(challenge=challenge).count(),
        LedgerEntry.objects.filter(challenge=challenge).count(),
        list(Position.objects.filter(challenge=challenge).values_list("instrument__symbol", "qty", "avg_entry_price")),
    )


def test_market_order_fills_at_the_current_price(challenge, place, market):
    market("EURUSD", D("1.10000"))
    response = place(challenge, "EURUSD", "buy", "0.50", client_order_id="first-1")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["client_order_id"] == "first-1"
    assert (body["symbol"], body["side"], body["type"], body["status"]) == ("EURUSD", "buy", "market", "filled")
    assert (body["qty"], body["filled_qty"], body["filled_avg_price"]) == ("0.50000000", "0.50000000", "1.10000000")
    assert body["filled_at"].endswith("Z") and body["created_at"]
    assert response["ETag"] == '"2"'
    position = Position.objects.get(challenge=challenge)
    assert (position.qty, position.avg_entry_price) == (D("0.5"), D("1.1"))
    challenge.refresh_from_db()
    assert challenge.version == 2
    assert challenge.trading_days == 1
    event = AuditEvent.objects.filter(action="order.filled").get()
    assert event.actor_label == f"trader:{challenge.trader_id}"
    assert event.after["position_qty"] == "0.50000000"


def test_positions_orders_and_close(challenge, place, api, market):
    market("BTCUSD", D("50000.00"))
    assert place(challenge, "BTCUSD", "buy", "0.05").status_code == 201
    market("BTCUSD", D("50400.00"))
    positions = api.get(f"/api/v1/challenges/{challenge.pk}/positions").json()["results"]
    assert positions == [
        {
            "symbol": "BTCUSD",
            "qty": "0.05000000",
            "side": "long",
            "avg_entry_price": "50000.00000000",
            "current_price": "50400.00000000",
            "market_value": "2520.00",
            "unrealized_pl": "20.00",
            "contract_size": "1",
            "opened_at": positions[0]["opened_at"],
        }
    ]
    detail = api.get(f"/api/v1/challenges/{challenge.pk}").json()
    assert (detail["balance"], detail["equity"], detail["unrealized_pl"]) == ("5000.00", "5020.00", "20.00")

    response = api.delete(f"/api/v1/challenges/{challenge.pk}/positions/BTCUSD")
    assert response.status_code == 200
    closing = response.json()
    assert (closing["side"], closing["qty"], closing["realized_pl"], closing["reason"]) == (
        "sell", "0.05000000", "20.00", "close",
    )
    challenge.refresh_from_db()
    assert challenge.balance == D("5020.00") == challenge.equity
    assert not Position.objects.filter(challenge=challenge).exists()
    assert api.delete(f"/api/v1/challenges/{challenge.pk}/positions/BTCUSD").status_code == 404

    orders = api.get(f"/api/v1/challenges/{challenge.pk}/orders").json()
    assert [o["side"] for o in orders["results"]] == ["sell", "buy"]  # newest first
    assert orders["next"] is None
    page = api.get(f"/api/v1/challenges/{challenge.pk}/orders?limit=1").json()
    assert len(page["results"]) == 1 and "before=" in page["next"]
    second = api.get(page["next"]).json()
    assert [o["side"] for o in second["results"]] == ["buy"] and second["next"] is None
    assert api.get(f"/api/v1/challenges/{challenge.pk}/orders?symbol=EURUSD").json()["results"] == []
    assert len(api.get(f"/api/v1/challenges/{challenge.pk}/orders?status=filled").json()["results"]) == 2
    assert api.get(f"/api/v1/challenges/{challenge.pk}/orders?status=open").status_code == 400
    assert api.get(f"/api/v1/challenges/{challenge.pk}/orders?limit=zero").status_code == 400


def test_retried_client_order_id_fills_once(challenge, place, api):
    first = place(challenge, "EURUSD", "buy", "0.10", client_order_id="bot-42")
    assert first.status_code == 201
    before = state(challenge)
    again = place(challenge, "EURUSD", "buy", "0.10", client_order_id="bot-42")
    assert again.status_code == 200
    assert again.json() == first.json()
    assert state(challenge) == before
    by_id = api.get(f"/api/v1/challenges/{challenge.pk}/orders/by_client_order_id/bot-42")
    assert by_id.status_code == 200 and by_id.json() == first.json()
    assert api.get(f"/api/v1/challenges/{challenge.pk}/orders/by_client_order_id/nope").status_code == 404
    # The same id for a different order is refused, not silently mapped to the first.
    other = place(challenge, "EURUSD", "sell", "0.10", client_order_id="bot-42")
    assert other.status_code == 422
    assert other.json()["error"]["code"] == "client_order_id_reused"
    assert state(challenge) == before


def test_replayed_idempotency_key_fills_once(challenge, place):
    first = place(challenge, "ETHUSD", "buy", "0.5", headers={"Idempotency-Key": "k-1"})
    assert first.status_code == 201
    before = state(challenge)
    replay = place(challenge, "ETHUSD", "buy", "0.5", headers={"Idempotency-Key": "k-1"})
    assert replay.status_code == 201
    assert replay.json() == first.json()
    assert replay["Idempotent-Replayed"] == "true"
    assert state(challenge) == before
    reused = place(challenge, "ETHUSD", "buy", "0.6", headers={"Idempotency-Key": "k-1"})
    assert reused.status_code == 422
    assert reused.json()["error"]["code"] == "idempotency_key_reused"
    assert state(challenge) == before
    assert IdempotencyRecord.objects.count() == 1


def test_a_refused_order_leaves_no_idempotency_record(challenge, place):
    response = place(challenge, "NOPE", "buy", "1", headers={"Idempotency-Key": "k-2"})
    assert response.status_code == 422
    assert not IdempotencyRecord.objects.exists()


def test_someone_elses_challenge_is_404(challenge, place, other_trader, client_for):
    stranger = client_for(other_trader)
    before = state(challenge)
    base = f"/api/v1/challenges/{challenge.pk}"
    assert place(challenge, client=stranger).status_code == 404
    assert place(challenge, client=stranger, headers={"Idempotency-Key": "x"}).status_code == 404
    for url in ["", "/orders", "/positions", "/portfolio/history", "/orders/by_client_order_id/a"]:
        response = stranger.get(base + url)
        assert response.status_code == 404, url
        assert response.json()["error"]["code"] == "not_found"
    assert stranger.delete(base + "/positions/EURUSD").status_code == 404
    assert stranger.get("/api/v1/challenges").json()["results"] == []
    assert state(challenge) == before
    assert APIClient().get(base).status_code == 401
    assert place(challenge, client=APIClient()).status_code == 401


NUMERIC_BAD_QTY = [
    ("-1", "Must be greater than zero."),
    ("0", "Must be greater than zero."),
    ("0.00", "Must be greater than zero."),
    ("abc", 'Must be a decimal number such as "0.10".'),
    ("", 'Must be a decimal number such as "0.10".'),
    ("NaN", 'Must be a decimal number such as "0.10".'),
    ("Infinity", 'Must be a decimal number such as "0.10".'),
    ("-Infinity", 'Must be a decimal number such as "0.10".'),
    ("1e3", 'Must be a decimal number such as "0.10".'),
    ("1" * 30, "Too large: at most 16 digits before the decimal point."),
    ("99999999999999999", "Too large: at most 16 digits before the decimal point."),
    ("0.123456789", "At most 8 decimal places."),
    (0.1, 'Must be a decimal string such as "0.10".'),
    (True, 'Must be a decimal string such as "0.10".'),
    (None, "This field may not be null."),
    ([1], 'Must be a decimal string such as "0.10".'),
]


@pytest.mark.parametrize("qty,problem", NUMERIC_BAD_QTY)
def test_bad_quantities_are_400_naming_qty(challenge, place, qty, problem):
    before = state(challenge)
    response = place(challenge, qty=qty)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid"
    assert error["fields"] == {"qty": [problem]}
    assert state(challenge) == before


@pytest.mark.parametrize(
    "qty,code",
    [
        ("0.001", "invalid_qty"),  # below EURUSD's 0.01 minimum
        ("0.015", "invalid_qty"),  # not a multiple of the 0.01 step
        ("51", "invalid_qty"),  # above the 50-lot maximum
        ("9999999999999999", "invalid_qty"),
        ("40", "insufficient_margin"),  # 40 lots = 4.4M notional on 5,000 x 30
    ],
)
def test_quantities_refused_by_a_rule_are_422(challenge, place, qty, code):
    before = state(challenge)
    response = place(challenge, qty=qty)
    assert response.status_code == 422
    assert response.json()["error"]["code"] == code
    assert "qty" in response.json()["error"]["fields"]
    assert state(challenge) == before


@pytest.mark.parametrize(
    "body,field",
    [
        ({"symbol": "EURUSD", "side": "buy", "qty": "1", "leverage": "500"}, "leverage"),
        ({"symbol": "EURUSD", "side": "buy", "qty": "1", "balance": "1000000"}, "balance"),
        ({"symbol": "EURUSD", "side": "hold", "qty": "1"}, "side"),
        ({"symbol": "EURUSD", "side": "buy", "qty": "1", "type": "limit"}, "type"),
        ({"symbol": "EURUSD", "qty": "1"}, "side"),
        ({"side": "buy", "qty": "1"}, "symbol"),
        ({"symbol": "EURUSD", "side": "buy"}, "qty"),
        ({"symbol": "EURUSD", "side": "buy", "qty": "1", "client_order_id": "has space"}, "client_order_id"),
        ({"symbol": "EURUSD", "side": "buy", "qty": "1", "client_order_id": "x" * 65}, "client_order_id"),
        ({"symbol": "E" * 17, "side": "buy", "qty": "1"}, "symbol"),
    ],
)
def test_malformed_bodies_are_400_naming_the_field(challenge, api, body, field):
    before = state(challenge)
    response = api.post(f"/api/v1/challenges/{challenge.pk}/orders", body, format="json")
    assert response.status_code == 400
    assert field in response.json()["error"]["fields"]
    assert state(challenge) == before


@pytest.mark.parametrize("raw", ["{", "not json", '{"qty": NaN}', '[1, 2]', '"a string"', "null"])
def test_malformed_json_is_400(challenge, api, raw):
    before = state(challenge)
    response = api.post(f"/api/v1/challenges/{challenge.pk}/orders", raw, content_type="application/json")
    assert response.status_code == 400
    assert response.json()["error"]["code"] in {"malformed_json", "invalid"}
    assert state(challenge) == before


def test_malformed_json_with_an_idempotency_key_is_400(challenge, api):
    response = api.post(
        f"/api/v1/challenges/{challenge.pk}/orders", "{", content_type="application/json",
        headers={"Idempotency-Key": "k"},
    )
    assert response.status_code == 400


def test_symbols_are_case_insensitive(challenge, place):
    response = place(challenge, symbol=" eurusd ")
    assert response.status_code == 201 and response.json()["symbol"] == "EURUSD"


def test_unknown_symbol_is_422(challenge, place):
    before = state(challenge)
    response = place(challenge, symbol="DOGEUSD")
    assert response.status_code == 422
    assert response.json()["error"] == {
        "code": "unknown_symbol",
        "message": "Unknown symbol 'DOGEUSD'.",
        "fields": {"symbol": ["Unknown symbol."]},
    }
    assert state(challenge) == before


@pytest.mark.parametrize("status", [Challenge.Status.PASSED, Challenge.Status.FAILED])
def test_orders_on_an_ended_challenge_are_409(challenge, place, api, status):
    Challenge.objects.filter(pk=challenge.pk).update(status=status)
    before = state(challenge)
    response = place(challenge)
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "challenge_not_active"
    assert state(challenge) == before


def test_close_on_an_ended_challenge_is_409(challenge, place, api):
    assert place(challenge, "AAPL", "buy", "1").status_code == 201
    Challenge.objects.filter(pk=challenge.pk).update(status=Challenge.Status.PASSED)
    response = api.delete(f"/api/v1/challenges/{challenge.pk}/positions/AAPL")
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "challenge_not_active"


def test_if_match_current_version_applies_and_stale_is_409_with_a_conflict(challenge, place):
    ok = place(challenge, headers={"If-Match": '"1"'})
    assert ok.status_code == 201 and ok["ETag"] == '"2"'
    before = state(challenge)
    stale = place(challenge, headers={"If-Match": '"1"'}, client_order_id="late-writer")
    assert stale.status_code == 409
    assert stale.json()["error"]["code"] == "stale_version"
    assert state(challenge) == before
    conflict = Conflict.objects.get()
    assert (conflict.object_type, conflict.object_id) == ("challenges.challenge", str(challenge.pk))
    assert (conflict.expected_version, conflict.actual_version) == (1, 2)
    assert conflict.attempted_change["client_order_id"] == "late-writer"
    assert conflict.status == Conflict.Status.OPEN
    # The same refused request retried is the same conflict, not a new one per retry.
    assert place(challenge, headers={"If-Match": '"1"'}, client_order_id="late-writer").status_code == 409
    assert Conflict.objects.count() == 1
    assert place(challenge, headers={"If-Match": "*"}).status_code == 201
    assert place(challenge, headers={"If-Match": "W/\"3\""}).status_code == 201


@pytest.mark.parametrize("header", ['"abc"', "1.5", '"-1"', ""])
def test_malformed_if_match_is_400(challenge, place, header):
    response = place(challenge, headers={"If-Match": header})
    assert response.status_code == 400
    assert "If-Match" in response.json()["error"]["fields"]


def test_stale_if_match_on_close_is_409(challenge, place, api):
    place(challenge, "AAPL", "buy", "1")
    response = api.delete(f"/api/v1/challenges/{challenge.pk}/positions/AAPL", headers={"If-Match": '"1"'})
    assert response.status_code == 409
    assert Position.objects.filter(challenge=challenge).exists()
    assert Conflict.objects.get().attempted_change["action"] == "position.close"


def test_order_placement_is_throttled(challenge, place, monkeypatch):
    monkeypatch.setattr(OrderThrottle, "THROTTLE_RATES", {"orders": "3/min"})
    throttle_reset(scope="orders", ident=challenge.trader_id)
    responses = [place(challenge, client_order_id=f"t{i}") for i in range(4)]
    throttle_reset(scope="orders", ident=challenge.trader_id)
    assert [r.status_code for r in responses] == [201, 201, 201, 429]
    refused = responses[-1]
    assert refused.json()["error"]["code"] == "throttled"
    assert 1 <= int(refused["Retry-After"]) <= 120
    assert Order.objects.filter(challenge=challenge).count() == 3


def test_margin_allows_reducing_an_oversized_position(challenge, place, market):
    assert place(challenge, "BTCUSD", "buy", "2").status_code == 201  # 100,000 of 5,000 x 30
    # Exposure above the limit (here: the rule set's leverage drops to 1), adding is
    # refused and reducing is still allowed.
    challenge.refresh_from_db()
    challenge.rules = {**challenge.rules, "leverage": "1"}
    challenge.save(update_fields=["rules"])
    refused = place(challenge, "BTCUSD", "buy", "0.1")
    assert refused.status_code == 422
    assert refused.json()["error"]["code"] == "insufficient_margin"
    assert place(challenge, "ETHUSD", "sell", "0.1").json()["error"]["code"] == "insufficient_margin"
    assert place(challenge, "BTCUSD", "sell", "0.5").status_code == 201
    assert Position.objects.get(challenge=challenge).qty == D("1.5")


def test_margin_boundary_is_inclusive(challenge, place, market):
    # 5,000.00 x 30 = 150,000: exactly 3 BTC at 50,000 is allowed, 0.0001 more is not.
    assert place(challenge, "BTCUSD", "buy", "3").status_code == 201
    assert place(challenge, "BTCUSD", "buy", "0.0001").json()["error"]["code"] == "insufficient_margin"
