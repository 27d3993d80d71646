"""POST/GET /api/v1/purchases: the contract of API.md, idempotency, validation, ownership."""

from decimal import Decimal

import pytest

from payments.models import PaymentAttempt, Purchase
from tests.payments.fixtures import buy
from tradesense.common.models import AuditEvent, IdempotencyRecord

pytestmark = pytest.mark.django_db


def test_purchase_is_recorded_and_answered_202_without_calling_the_processor(api, trader, plans, captured_enqueues,
                                                                             live_events, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        response = buy(api, plan="pro", token="tok_visa", method="card")

    assert response.status_code == 202, response.content
    body = response.json()
    purchase = Purchase.objects.get()
    assert body["id"] == purchase.pk
    assert body["plan"] == "pro"
    assert body["amount"] == "500.00" and Decimal(body["amount"]) == plans["pro"].price
    assert body["currency"] == "MAD"
    assert body["status"] == "pending"
    assert body["challenge"] is None
    assert body["failure_reason"] == ""
    assert body["attempts"] == 1
    assert body["next_attempt_at"] is not None
    assert {"created_at", "updated_at"} <= set(body)

    # The first attempt is the retry queue's first row; its id is the processor's key.
    attempt = PaymentAttempt.objects.get()
    assert attempt.purchase == purchase and attempt.number == 1 and attempt.status == "scheduled"
    assert attempt.id == purchase.processor_key
    assert purchase.trader == trader and purchase.payment_token == "tok_visa"
    # Audited, nudged after commit (best effort), and the trader's stream told.
    assert AuditEvent.objects.filter(action="purchase.created", object_id=str(purchase.pk)).count() == 1
    assert captured_enqueues == [(purchase.pk,)]
    assert [(f["group"], f["type"], f["data"]["status"]) for f in live_events] == [
        (f"user.{trader.pk}", "purchase.updated", "pending")
    ]


def test_post_answers_at_once_while_the_processor_is_down(api, plans, processor):
    processor.faults(down=True)
    response = buy(api)
    assert response.status_code == 202
    assert processor.stats()["counters"].get("requests", 0) == 0  # no request waited on it


def test_replayed_idempotency_key_creates_nothing(api, plans):
    first = buy(api, key="buy-once-1")
    replay = buy(api, key="buy-once-1")

    assert first.status_code == replay.status_code == 202
    assert replay.json() == first.json()
    assert replay["Idempotent-Replayed"] == "true"
    assert Purchase.objects.count() == 1
    assert PaymentAttempt.objects.count() == 1
    assert AuditEvent.objects.filter(action="purchase.created").count() == 1


def test_same_key_with_another_body_is_422_and_creates_nothing(api, plans):
    assert buy(api, key="k-2", plan="starter").status_code == 202
    response = buy(api, key="k-2", plan="elite")
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "idempotency_key_reused"
    assert Purchase.objects.count() == 1


def test_unknown_plan_is_404_naming_the_field(api, plans):
    response = buy(api, plan="platinum")
    assert response.status_code == 404
    error = response.json()["error"]
    assert error["code"] == "unknown_plan" and "plan" in error["fields"]
    assert Purchase.objects.count() == 0
    assert IdempotencyRecord.objects.count() == 0  # a refused request can be retried with its key


def test_inactive_plan_is_not_for_sale(api, plans):
    plans["elite"].is_active = False
    plans["elite"].save()
    assert buy(api, plan="elite").status_code == 404


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"plan": "starter", "payment_method": "cheque", "payment_token": "tok_visa"}, "payment_method"),
        ({"plan": "starter", "payment_method": "card", "payment_token": "4242 4242 4242 4242"}, "payment_token"),
        ({"plan": "starter", "payment_method": "card", "payment_token": "x"}, "payment_token"),
        ({"plan": "starter", "payment_method": "card"}, "payment_token"),
        ({"payment_method": "card", "payment_token": "tok_visa"}, "plan"),
        ({"plan": "starter", "payment_method": "card", "payment_token": "tok_visa", "amount": "1.00"}, "amount"),
    ],
)
def test_bad_input_is_400_naming_the_field(api, plans, body, field):
    response = api.post("/api/v1/purchases", body, format="json")
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid"
    assert field in error["fields"], error
    assert Purchase.objects.count() == 0


def test_malformed_json_is_400(api, plans):
    response = api.post("/api/v1/purchases", "{not json", content_type="application/json")
    assert response.status_code == 400
    assert Purchase.objects.count() == 0


def test_anonymous_is_401(client_for, plans):
    response = client_for(None).post("/api/v1/purchases", {"plan": "starter"}, format="json")
    assert response.status_code == 401


def test_detail_is_the_traders_own_only(api, client_for, other_trader, plans):
    purchase_id = buy(api).json()["id"]

    mine = api.get(f"/api/v1/purchases/{purchase_id}")
    assert mine.status_code == 200 and mine.json()["id"] == purchase_id and mine.json()["status"] == "pending"

    theirs = client_for(other_trader).get(f"/api/v1/purchases/{purchase_id}")
    assert theirs.status_code == 404
    assert theirs.json()["error"]["code"] == "not_found"
    assert api.get("/api/v1/purchases/999999").status_code == 404


def test_list_is_newest_first_paginated_and_own_only(api, client_for, other_trader, plans):
    ids = [buy(api).json()["id"] for _ in range(5)]
    buy(client_for(other_trader))

    page = api.get("/api/v1/purchases?limit=2").json()
    assert [p["id"] for p in page["results"]] == ids[::-1][:2]
    assert page["next"] is not None
    second = api.get(page["next"]).json()
    assert [p["id"] for p in second["results"]] == ids[::-1][2:4]
    everything = api.get("/api/v1/purchases").json()
    assert [p["id"] for p in everything["results"]] == ids[::-1]
    assert everything["next"] is None
    assert api.get("/api/v1/purchases?limit=501").status_code == 400
    assert api.get("/api/v1/purchases?limit=0").status_code == 400
