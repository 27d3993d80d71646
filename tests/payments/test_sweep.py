"""The retry queue: claim, charge, record; backoff; horizon -> needs_review -> reconciliation;
lease recovery; all against the running fake processor and Postgres."""

import random
import time
import uuid
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import IntegrityError, transaction
from django.utils import timezone

from challenges.models import Challenge
from payments import services
from payments.models import PaymentAttempt, ProcessorCircuit, Purchase
from payments.services import RetryPolicy
from tradesense.common.models import AuditEvent

pytestmark = pytest.mark.django_db


@pytest.fixture
def purchase_for(trader, plans):
    def _make(token="tok_visa", plan="starter", who=None):
        return services.purchase_create(trader=who or trader, plan=plans[plan], payment_method="card",
                                        payment_token=token)

    return _make


def sweep_until_settled(purchase, timeout: float = 5.0) -> None:
    """Sweep until the purchase leaves pending/processing (retries are due within the
    compressed backoff's fractions of a second)."""
    deadline = time.monotonic() + timeout
    while True:
        services.payments_sweep()
        purchase.refresh_from_db()
        if purchase.status not in ("pending", "processing") or time.monotonic() > deadline:
            return
        time.sleep(0.05)


def actions(purchase) -> list[str]:
    return list(
        AuditEvent.objects.filter(object_type="payments.purchase", object_id=str(purchase.pk))
        .order_by("id").values_list("action", flat=True)
    )


def test_success_creates_the_challenge_in_the_same_step(processor, purchase_for, trader, live_events,
                                                        django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        purchase = purchase_for()
        report = services.payments_sweep()

    purchase.refresh_from_db()
    assert report.calls == 1 and report.succeeded == 1
    assert purchase.status == "succeeded"
    assert purchase.charge_id.startswith("ch_")
    challenge = Challenge.objects.get(source_ref=f"purchase:{purchase.pk}")
    assert purchase.challenge == challenge and challenge.trader == trader
    assert challenge.starting_balance == Decimal("5000.00") and challenge.status == "active"
    assert actions(purchase) == ["purchase.created", "purchase.processing", "purchase.succeeded"]
    attempt = purchase.attempts.get()
    assert attempt.status == "succeeded" and attempt.charge_id == purchase.charge_id
    # The processor holds exactly this charge under the purchase's key.
    assert processor.lookup(purchase.processor_key).json()["id"] == purchase.charge_id
    assert processor.charge_count() == 1
    statuses = [f["data"]["status"] for f in live_events if f["type"] == "purchase.updated"]
    assert statuses == ["pending", "processing", "succeeded"]
    assert live_events[-1]["data"]["challenge"] == challenge.pk
    assert all(f["group"] == f"user.{trader.pk}" for f in live_events if f["type"] == "purchase.updated")


def test_a_second_sweep_finds_nothing_to_do(processor, purchase_for):
    purchase_for()
    services.payments_sweep()
    report = services.payments_sweep()
    assert report.calls == 0
    assert processor.charge_count() == 1


def test_decline_fails_the_purchase_with_the_reason_and_creates_no_challenge(processor, purchase_for):
    purchase = purchase_for(token="tok_decline")
    report = services.payments_sweep()

    purchase.refresh_from_db()
    assert report.declined == 1
    assert purchase.status == "failed"
    assert purchase.failure_reason == "Declined by the payment processor (card_declined): Your card was declined."
    assert purchase.challenge is None
    assert not Challenge.objects.filter(source_ref=f"purchase:{purchase.pk}").exists()
    assert processor.charge_count() == 0
    assert actions(purchase) == ["purchase.created", "purchase.processing", "purchase.failed"]


def test_transient_failure_queues_a_retry_with_the_same_key(processor, purchase_for):
    purchase = purchase_for()
    processor.faults(error_500=True)
    report = services.payments_sweep(max_calls=1)  # full jitter may make the retry due at once
    assert report.errors == 1

    purchase.refresh_from_db()
    first, second = purchase.attempts.order_by("number")
    assert purchase.status == "processing"
    assert first.status == "error" and first.http_status == 500 and first.may_have_charged
    assert second.status == "scheduled" and second.number == 2
    assert second.next_attempt_at <= first.finished_at + timedelta(seconds=0.05)  # base 0.05 s, full jitter

    processor.faults(error_500=False)
    sweep_until_settled(purchase)  # the retry is due within 50 ms
    assert purchase.status == "succeeded"
    assert processor.lookup(purchase.processor_key).json()["idempotency_key"] == str(purchase.processor_key)


def test_backoff_is_full_jitter_doubling_up_to_the_cap():
    policy = RetryPolicy(base_seconds=2.0, cap_seconds=300.0, horizon=timedelta(hours=1))
    rng = random.Random(7)
    for failures, ceiling in [(1, 2), (2, 4), (3, 8), (5, 32), (8, 256), (9, 300), (50, 300), (5000, 300)]:
        delays = [policy.delay_seconds(failures, rng) for _ in range(400)]
        assert all(0 <= d <= ceiling for d in delays)
        assert max(delays) > 0.9 * ceiling and min(delays) < 0.1 * ceiling  # spread over the whole window


def test_past_the_horizon_the_purchase_needs_review_and_nothing_is_charged_again(processor, purchase_for, settings):
    settings.PAYMENT_RETRY_HORIZON_SECONDS = 0.5
    purchase = purchase_for()
    processor.faults(down=True)
    services.payments_sweep()
    Purchase.objects.filter(pk=purchase.pk).update(created_at=timezone.now() - timedelta(seconds=10))
    services.payments_sweep()

    purchase.refresh_from_db()
    assert purchase.status == "needs_review"
    assert "reconciling with the processor" in purchase.failure_reason
    assert not purchase.attempts.filter(status__in=PaymentAttempt.OPEN).exists()
    requests = processor.stats()["counters"]["requests"]
    services.payments_sweep()
    assert processor.stats()["counters"]["requests"] == requests  # the sweep leaves it alone now


def test_reconciliation_finds_a_charge_made_behind_a_dropped_connection(processor, purchase_for, settings):
    settings.PAYMENT_RETRY_HORIZON_SECONDS = 0.5
    purchase = purchase_for()
    processor.faults(drop_after_charge=True)
    services.payments_sweep()  # charged, but the answer was lost
    assert processor.charge_count() == 1
    Purchase.objects.filter(pk=purchase.pk).update(created_at=timezone.now() - timedelta(seconds=10))
    services.payments_sweep()
    purchase.refresh_from_db()
    assert purchase.status == "needs_review"

    processor.faults(drop_after_charge=False)
    assert services.purchases_reconcile_due() == {"succeeded": 1}
    purchase.refresh_from_db()
    assert purchase.status == "succeeded" and purchase.challenge is not None
    assert purchase.charge_id == processor.lookup(purchase.processor_key).json()["id"]
    assert processor.charge_count() == 1
    assert actions(purchase)[-2:] == ["purchase.needs_review", "purchase.succeeded"]


def test_reconciliation_fails_a_purchase_the_processor_never_charged(processor, purchase_for, settings):
    settings.PAYMENT_RETRY_HORIZON_SECONDS = 0.5
    purchase = purchase_for()
    processor.faults(down=True)
    services.payments_sweep()
    Purchase.objects.filter(pk=purchase.pk).update(created_at=timezone.now() - timedelta(seconds=10))
    services.payments_sweep()

    assert services.purchases_reconcile_due() == {"unavailable": 1}  # still down: it waits
    purchase.refresh_from_db()
    assert purchase.status == "needs_review" and "processor unavailable" in purchase.reconcile_note

    processor.faults(down=False)
    ProcessorCircuit.objects.update(state="closed", consecutive_failures=0)
    assert services.purchases_reconcile_due() == {"failed": 1}
    purchase.refresh_from_db()
    assert purchase.status == "failed" and purchase.challenge is None
    assert purchase.failure_reason.startswith("Not charged")
    assert processor.charge_count() == 0


def test_a_worker_lost_mid_call_is_taken_over_after_its_lease(processor, purchase_for):
    purchase = purchase_for()
    claim = services._claim_next(now=timezone.now())
    assert claim is not None  # ...and the worker dies here, before calling
    assert services.payments_sweep().calls == 0  # its lease still holds

    PaymentAttempt.objects.filter(pk=claim.attempt_id).update(lease_until=timezone.now() - timedelta(seconds=1))
    report = services.payments_sweep()
    assert report.recovered == 1
    sweep_until_settled(purchase)
    assert purchase.status == "succeeded"
    assert list(purchase.attempts.order_by("number").values_list("status", flat=True)) == ["abandoned", "succeeded"]
    assert processor.charge_count() == 1


def test_a_late_answer_after_the_lease_was_taken_over_charges_once(processor, purchase_for):
    """The slow worker's call and the take-over's call carry the same key."""
    purchase = purchase_for()
    claim = services._claim_next(now=timezone.now())
    PaymentAttempt.objects.filter(pk=claim.attempt_id).update(lease_until=timezone.now() - timedelta(seconds=1))
    services._recover_expired_leases(now=timezone.now())
    PaymentAttempt.objects.filter(purchase=purchase, status="scheduled").update(next_attempt_at=timezone.now())
    services.payments_sweep()  # the take-over charges
    services._charge_claim(claim, services.get_processor())  # the lost worker's call finally happens

    purchase.refresh_from_db()
    assert purchase.status == "succeeded"
    assert processor.charge_count() == 1
    assert AuditEvent.objects.filter(action="purchase.succeeded", object_id=str(purchase.pk)).count() == 1
    assert Challenge.objects.filter(source_ref=f"purchase:{purchase.pk}").count() == 1


def test_a_refused_request_goes_to_review_not_to_failed(processor, purchase_for):
    purchase = purchase_for()
    # Someone used this purchase's key for another amount first: the processor refuses ours.
    services.get_processor().charge(idempotency_key=str(purchase.processor_key), amount=Decimal("1.00"),
                                    currency="MAD", payment_method="card", token="tok_visa", description="x")
    report = services.payments_sweep()
    purchase.refresh_from_db()
    assert report.rejected == 1
    assert purchase.status == "needs_review" and "refused" in purchase.failure_reason
    # Reconciliation sees the 1.00 charge under the key: it does not match, so it stays for an operator.
    assert services.purchases_reconcile_due() == {"contradiction": 1}
    purchase.refresh_from_db()
    assert purchase.status == "needs_review" and purchase.challenge is None


def test_only_one_attempt_per_purchase_can_be_open(purchase_for):
    """A unique index, not hope: two workers can never both hold an attempt of one purchase."""
    purchase = purchase_for()
    with pytest.raises(IntegrityError), transaction.atomic():
        PaymentAttempt.objects.create(purchase=purchase, number=2, next_attempt_at=timezone.now())
    assert purchase.attempts.count() == 1


def test_purchase_charge_task_charges_only_its_purchase(processor, purchase_for, make_user):
    mine = purchase_for()
    other = purchase_for(who=make_user())
    from payments.tasks import purchase_charge

    purchase_charge.run(mine.pk)
    mine.refresh_from_db()
    other.refresh_from_db()
    assert mine.status == "succeeded" and other.status == "pending"
    assert uuid.UUID(str(mine.processor_key)) != other.processor_key
