"""POST /api/v1/payments/webhook: signature, tolerance, dedup, and the same outcome in
any order (before the worker's answer, after it, twice)."""

import json
import time
import uuid

import pytest

from challenges.models import Challenge
from payments import services
from payments.models import Purchase, WebhookEvent
from payments.signing import signature_header
from tests.payments.fixtures import SECRET
from tradesense.common.models import AuditEvent

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def webhook_secret(settings):
    settings.PAYMENT_PROCESSOR_SECRET = SECRET


@pytest.fixture
def purchase(trader, plans):
    return services.purchase_create(trader=trader, plan=plans["starter"], payment_method="card",
                                    payment_token="tok_visa")


def event_for(purchase, *, type="charge.succeeded", status="succeeded", amount="200.00", charge_id="ch_abc123",
              event_id=None, decline_code=None):
    return {
        "id": event_id or f"evt_{uuid.uuid4().hex[:12]}",
        "type": type,
        "created": int(time.time()),
        "data": {"object": {
            "id": charge_id, "object": "charge", "idempotency_key": str(purchase.processor_key), "status": status,
            "amount": amount, "currency": "MAD", "payment_method": "card", "decline_code": decline_code,
            "message": "Your card was declined." if decline_code else None,
        }},
    }


def post(client, event, *, secret=SECRET, timestamp=None, header=None, raw=None):
    body = raw if raw is not None else json.dumps(event).encode()
    if header is None:
        header = signature_header(secret=secret, body=body, timestamp=int(timestamp or time.time()))
    return client.post("/api/v1/payments/webhook", body, content_type="application/json", HTTP_X_SIGNATURE=header)


def state(purchase):
    purchase.refresh_from_db()
    return (purchase.status, purchase.charge_id, purchase.challenge_id, purchase.version,
            AuditEvent.objects.count(), Challenge.objects.count())


def test_succeeded_webhook_before_the_worker_settles_the_purchase(client, purchase, processor):
    response = post(client, event_for(purchase))
    assert response.status_code == 200, response.content
    assert response.json()["outcome"] == "applied" and response.json()["duplicate"] is False

    purchase.refresh_from_db()
    assert purchase.status == "succeeded" and purchase.charge_id == "ch_abc123"
    assert purchase.challenge == Challenge.objects.get(source_ref=f"purchase:{purchase.pk}")
    # The queued attempt is not needed any more: the sweep sends nothing.
    assert purchase.attempts.get().status == "cancelled"
    assert services.payments_sweep().calls == 0
    audit = AuditEvent.objects.get(action="purchase.succeeded", object_id=str(purchase.pk))
    assert audit.actor_label == "processor:webhook"


def test_the_same_event_twice_changes_nothing_the_second_time(client, purchase):
    event = event_for(purchase)
    assert post(client, event).json()["outcome"] == "applied"
    before = state(purchase)

    again = post(client, event)
    assert again.status_code == 200
    assert again.json() == {"received": True, "id": event["id"], "duplicate": True, "outcome": "applied"}
    assert state(purchase) == before
    assert WebhookEvent.objects.get().duplicates == 1


def test_a_webhook_after_the_workers_answer_changes_nothing(client, purchase, processor):
    services.payments_sweep()
    purchase.refresh_from_db()
    assert purchase.status == "succeeded"
    before = state(purchase)

    charge = processor.lookup(purchase.processor_key).json()
    response = post(client, event_for(purchase, charge_id=charge["id"]))
    assert response.json()["outcome"] == "no_change"
    assert state(purchase) == before


def test_a_decline_webhook_fails_the_purchase_without_a_challenge(client, purchase):
    response = post(client, event_for(purchase, type="charge.failed", status="declined", decline_code="card_declined"))
    assert response.json()["outcome"] == "applied"
    purchase.refresh_from_db()
    assert purchase.status == "failed" and purchase.challenge is None
    assert "card_declined" in purchase.failure_reason
    assert Challenge.objects.count() == 0


def test_a_late_decline_never_takes_a_paid_challenge_back(client, purchase):
    post(client, event_for(purchase))
    before = state(purchase)
    response = post(client, event_for(purchase, type="charge.failed", status="declined", decline_code="x"))
    assert response.json()["outcome"] == "contradiction"
    after = state(purchase)
    assert after[:4] == before[:4] and after[5] == before[5]
    assert AuditEvent.objects.filter(action="purchase.processor_contradiction").count() == 1


def test_an_amount_mismatch_goes_to_review_not_to_succeeded(client, purchase):
    response = post(client, event_for(purchase, amount="2.00"))
    assert response.json()["outcome"] == "contradiction"
    purchase.refresh_from_db()
    assert purchase.status == "needs_review" and purchase.challenge is None


def test_an_event_for_an_unknown_key_is_acknowledged_and_kept(client, db):
    event = {"id": "evt_x", "type": "charge.succeeded", "data": {"object": {
        "id": "ch_1", "idempotency_key": str(uuid.uuid4()), "status": "succeeded", "amount": "1.00",
        "currency": "MAD"}}}
    response = post(client, event)
    assert response.status_code == 200 and response.json()["outcome"] == "unknown_purchase"
    assert WebhookEvent.objects.get().outcome == "unknown_purchase"


def test_other_event_types_are_kept_and_ignored(client, purchase):
    response = post(client, event_for(purchase, type="charge.refunded"))
    assert response.json()["outcome"] == "ignored"
    purchase.refresh_from_db()
    assert purchase.status == "pending"


@pytest.mark.parametrize(
    "how",
    ["wrong_secret", "missing", "malformed", "stale", "future", "tampered_body", "no_v1"],
)
def test_a_bad_signature_is_400_and_changes_nothing(client, purchase, how):
    event = event_for(purchase)
    body = json.dumps(event).encode()
    now = int(time.time())
    headers = {
        "wrong_secret": signature_header(secret="not-the-secret", body=body, timestamp=now),
        "missing": "",
        "malformed": "garbage",
        "stale": signature_header(secret=SECRET, body=body, timestamp=now - 301),
        "future": signature_header(secret=SECRET, body=body, timestamp=now + 301),
        "tampered_body": signature_header(secret=SECRET, body=body.replace(b"200.00", b"2.00"), timestamp=now),
        "no_v1": f"t={now}",
    }
    before = state(purchase)
    response = post(client, event, header=headers[how], raw=body)

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid_signature" and "X-Signature" in error["fields"]
    assert state(purchase) == before
    assert WebhookEvent.objects.count() == 0


def test_a_resigned_old_timestamp_inside_tolerance_is_accepted(client, purchase):
    assert post(client, event_for(purchase), timestamp=time.time() - 200).status_code == 200


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (b"not json", "body"),
        (b"[]", "body"),
        (b'{"type": "charge.succeeded", "data": {"object": {}}}', "id"),
        (b'{"id": "evt_1", "type": "charge.succeeded", "data": {}}', "data.object"),
        (b'{"id": "evt_1", "type": "charge.succeeded", "data": {"object": {"id": "ch_1"}}}',
         "data.object.idempotency_key"),
    ],
)
def test_signed_but_malformed_events_are_400_and_not_recorded(client, purchase, raw, field):
    response = post(client, None, raw=raw)
    assert response.status_code == 400
    assert field in response.json()["error"]["fields"]
    assert WebhookEvent.objects.count() == 0
    purchase.refresh_from_db()
    assert purchase.status == "pending"


def test_a_contradicting_charge_for_a_failed_purchase_goes_to_review(client, purchase):
    post(client, event_for(purchase, type="charge.failed", status="declined", decline_code="card_declined"))
    response = post(client, event_for(purchase, charge_id="ch_surprise"))
    assert response.json()["outcome"] == "contradiction"
    purchase.refresh_from_db()
    assert purchase.status == "needs_review" and purchase.challenge is None
    assert Purchase.objects.filter(status="succeeded").count() == 0
