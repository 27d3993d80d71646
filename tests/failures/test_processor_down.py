"""Seed failure 7, payment processor down: purchases are queued for retry and no false
transaction is ever recorded.

Against the running fake processor (its own process, port 18101) and Postgres, with
four threads sweeping the database retry queue as four workers would. Each purchase
must end succeeded exactly once, the processor must have charged each exactly once,
and there must be exactly one challenge per succeeded purchase.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from decimal import Decimal

import httpx
import pytest
from django.db.models import Count, F, Sum

from challenges.models import Challenge
from payments.models import PaymentAttempt, Purchase, WebhookEvent
from payments.signing import signature_header
from tests.payments.fixtures import (  # noqa: F401 - fixtures are found by their registered names
    Sweepers,
    buy,
    fixture_captured_enqueues,
    fixture_fake_processor_proc,
    fixture_processor,
    fixture_webhook_receiver,
    run_sweepers,
    sweep_for,
)
from tradesense.common.models import AuditEvent

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

N = 200


def open_purchases() -> int:
    return Purchase.objects.filter(status__in=("pending", "processing")).count()


def buy_many(client_for, make_user, n: int, *, token_for=lambda i: "tok_visa") -> list[int]:
    clients = [client_for(make_user()) for _ in range(10)]
    ids = []
    for i in range(n):
        response = buy(clients[i % len(clients)], key=f"purchase-{i}", token=token_for(i),
                       plan=("starter", "pro", "elite")[i % 3])
        assert response.status_code == 202, response.content
        ids.append(response.json()["id"])
    return ids


def assert_each_succeeded_exactly_once(processor, ids: list[int]) -> None:
    purchases = Purchase.objects.filter(pk__in=ids)
    assert Counter(purchases.values_list("status", flat=True)) == {"succeeded": len(ids)}
    # Exactly one "succeeded" state change per purchase in the audit log.
    succeeded_events = Counter(
        AuditEvent.objects.filter(action="purchase.succeeded").values_list("object_id", flat=True)
    )
    assert succeeded_events == {str(pk): 1 for pk in ids}
    # The processor charged each purchase once: its count, its total and its keys agree with ours.
    stats = processor.stats()
    assert stats["charges"] == len(ids)
    assert Decimal(stats["charged_total"]) == purchases.aggregate(total=Sum("amount"))["total"]
    charged = {e["body"]["data"]["object"]["idempotency_key"]: e["body"]["data"]["object"]["id"]
               for e in processor.events() if e["type"] == "charge.succeeded"}
    assert charged == {str(p.processor_key): p.charge_id for p in purchases}
    # Challenges created equal succeeded purchases, one each, owned by the buyer.
    challenges = Challenge.objects.filter(source_ref__startswith="purchase:")
    assert challenges.count() == len(ids)
    assert set(purchases.values_list("challenge_id", flat=True)) == set(challenges.values_list("pk", flat=True))
    assert not purchases.exclude(challenge__trader=F("trader")).exists()
    # No attempt is left queued or in flight.
    assert not PaymentAttempt.objects.filter(status__in=PaymentAttempt.OPEN).exists()


def test_200_purchases_while_the_processor_is_down_then_up(processor, plans, client_for, make_user):
    processor.faults(down=True)
    ids = buy_many(client_for, make_user, N)

    # Down for a stretch: four workers keep sweeping.
    sweep_for(3.0)
    assert open_purchases() == N  # nothing recorded as paid, nothing failed
    assert processor.charge_count() == 0
    outage_requests = processor.stats()["counters"]["refused_down"]
    # The circuit breaker stopped the hammering: a handful of calls and one probe per
    # cool-down (0.3 s), where retrying blindly would have made well over a thousand.
    assert AuditEvent.objects.filter(action="processor_circuit.open").exists()
    assert outage_requests < 60, outage_requests
    assert PaymentAttempt.objects.filter(status="error", may_have_charged=True).count() == outage_requests

    processor.faults(down=False)
    recovery = run_sweepers(until=lambda: open_purchases() == 0, timeout=120)
    print(f"\n{N} purchases: {outage_requests} calls during the 3 s outage, settled {recovery:.1f}s after recovery")

    assert_each_succeeded_exactly_once(processor, ids)
    assert processor.stats()["counters"].get("replays", 0) == 0  # cut off before being read: nothing to replay


def test_charge_then_drop_never_charges_twice(processor, plans, client_for, make_user, settings, webhook_receiver):
    # The breaker would rightly stop calling after 5 drops; here every purchase must be
    # charged behind a dropped connection first, the worst case for double charging.
    settings.PAYMENT_CIRCUIT_FAILURE_THRESHOLD = 100_000
    processor.faults(drop_after_charge=True, hold_webhooks=True)
    ids = buy_many(client_for, make_user, N)

    # Every charge goes through and no answer comes back: the worker knows nothing.
    run_sweepers(until=lambda: processor.charge_count() == N, timeout=120)
    assert open_purchases() == N
    assert not Challenge.objects.exists()

    # The processor recovers while its webhooks (held until now) race the workers'
    # retries, in reverse order: some settle a purchase before a worker's answer, some
    # arrive after it. (Each event twice: the next test.)
    processor.faults(drop_after_charge=False)
    with Sweepers(4):
        released = processor.release(order="reverse", times=1)
        run_sweepers(until=lambda: open_purchases() == 0, threads=1, timeout=120)
    assert released["deliveries"] == N and set(released["statuses"]) == {200}

    assert_each_succeeded_exactly_once(processor, ids)
    counters = processor.stats()["counters"]
    assert counters["charges_made"] == N
    assert counters["dropped"] >= N  # every purchase's first charge went unanswered
    # Retries before the processor recovered (and any after it) got the first result back.
    assert counters["replays"] > 0
    events = WebhookEvent.objects.all()
    assert events.count() == N
    assert Counter(events.values_list("outcome", flat=True)).keys() <= {"applied", "no_change"}
    settled_by = Counter(
        AuditEvent.objects.filter(action="purchase.succeeded").values_list("actor_label", flat=True)
    )
    print(f"\ncharge-then-drop: {counters['dropped']} dropped answers, {counters['replays']} replays; "
          f"settled by {dict(settled_by)}")


def test_webhooks_twice_and_out_of_order_change_nothing(processor, plans, client_for, make_user, webhook_receiver):
    processor.faults(hold_webhooks=True)
    n = 40
    ids = buy_many(client_for, make_user, n, token_for=lambda i: "tok_decline" if i % 4 == 0 else "tok_visa")
    run_sweepers(until=lambda: open_purchases() == 0)

    def snapshot():
        return (
            list(Purchase.objects.order_by("id").values_list("id", "status", "charge_id", "challenge_id", "version",
                                                          "failure_reason")),
            AuditEvent.objects.count(),
            Challenge.objects.count(),
        )

    before = snapshot()
    statuses = Counter(p[1] for p in before[0])
    assert statuses == {"succeeded": 30, "failed": 10}
    # A decline creates no challenge and charges nothing.
    assert not Purchase.objects.filter(status="failed", challenge__isnull=False).exists()
    assert Challenge.objects.count() == 30 and processor.charge_count() == 30

    released = processor.release(order="reverse", times=2)
    assert released["deliveries"] == 2 * n and set(released["statuses"]) == {200}
    assert snapshot() == before
    recorded = WebhookEvent.objects.values("outcome").annotate(n=Count("id"))
    assert {r["outcome"]: r["n"] for r in recorded} == {"no_change": n}
    assert sum(WebhookEvent.objects.values_list("duplicates", flat=True)) == n

    # A forged delivery over real HTTP (signed with the wrong secret) is 400 and changes nothing.
    event = processor.events()[0]["body"]
    event["id"] = "evt_forged"
    forged_body = json.dumps(event).encode()
    forged = httpx.post(
        f"{webhook_receiver}/api/v1/payments/webhook", content=forged_body,
        headers={"Content-Type": "application/json",
                 "X-Signature": signature_header(secret="guessed", body=forged_body, timestamp=int(time.time()))},
    )
    assert forged.status_code == 400 and forged.json()["error"]["code"] == "invalid_signature"
    assert snapshot() == before
    assert not WebhookEvent.objects.filter(event_id="evt_forged").exists()
    assert len(ids) == n
