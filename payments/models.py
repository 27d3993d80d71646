"""Purchases, the database retry queue of payment attempts, the circuit breaker, webhooks.

The state machine and the retry policy are drawn in docs/payments.md.
"""

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q

from tradesense.common.money import MONEY


class Purchase(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending"  # recorded; no call to the processor yet
        PROCESSING = "processing"  # charging, possibly through retries
        SUCCEEDED = "succeeded"  # the processor confirmed the charge; the challenge exists
        FAILED = "failed"  # declined, or provably never charged
        NEEDS_REVIEW = "needs_review"  # outcome unknown past the horizon: reconciliation decides

    class PaymentMethod(models.TextChoices):
        CARD = "card"
        PAYPAL = "paypal"
        CRYPTO = "crypto"

    # The status pipeline, as data; payments.services checks every transition here.
    # FAILED -> NEEDS_REVIEW exists for one case only: the processor later reports a
    # charge for a purchase recorded as failed (money moved; an operator must see it).
    ALLOWED_TRANSITIONS = {
        Status.PENDING: (Status.PROCESSING, Status.SUCCEEDED, Status.FAILED, Status.NEEDS_REVIEW),
        Status.PROCESSING: (Status.SUCCEEDED, Status.FAILED, Status.NEEDS_REVIEW),
        Status.NEEDS_REVIEW: (Status.SUCCEEDED, Status.FAILED),
        Status.SUCCEEDED: (),
        Status.FAILED: (Status.NEEDS_REVIEW,),
    }
    # Statuses in which a charge may still be attempted or confirmed.
    OPEN = (Status.PENDING, Status.PROCESSING, Status.NEEDS_REVIEW)

    trader = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="purchases")
    plan = models.ForeignKey("challenges.Plan", on_delete=models.PROTECT, related_name="+")
    amount = models.DecimalField(**MONEY)
    currency = models.CharField(max_length=3)
    payment_method = models.CharField(max_length=10, choices=PaymentMethod.choices)
    # A processor token (tok_...), never a card number.
    payment_token = models.CharField(max_length=128)
    status = models.CharField(max_length=15, choices=Status.choices, default=Status.PENDING, db_index=True)
    version = models.PositiveIntegerField(default=1)
    # Sent with every attempt, so the processor charges a purchase at most once; it is
    # the first attempt's id.
    processor_key = models.UUIDField(unique=True, editable=False)
    charge_id = models.CharField(max_length=100, blank=True, default="")
    failure_reason = models.TextField(blank=True, default="")
    challenge = models.OneToOneField(
        "challenges.Challenge", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    resolved_at = models.DateTimeField(null=True, blank=True)
    last_reconciled_at = models.DateTimeField(null=True, blank=True)
    reconcile_note = models.TextField(blank=True, default="")

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["trader", "-id"], name="purchase_trader_newest")]
        constraints = [models.CheckConstraint(condition=Q(amount__gt=0), name="purchase_amount_positive")]

    def __str__(self):
        return f"Purchase #{self.pk} ({self.status})"


class PaymentAttempt(models.Model):
    """One call (or one planned call) to the processor for a purchase: the retry queue.

    A SCHEDULED row with next_attempt_at <= now is due work; the sweep claims it with
    SELECT ... FOR UPDATE SKIP LOCKED and marks it IN_FLIGHT under a lease, so a worker
    killed mid-call leaves a row whose lease expires and is taken over.
    """

    class Status(models.TextChoices):
        SCHEDULED = "scheduled"  # due at next_attempt_at
        IN_FLIGHT = "in_flight"  # claimed; the call is under way until lease_until
        SUCCEEDED = "succeeded"  # the processor confirmed a charge
        DECLINED = "declined"  # the processor declined
        ERROR = "error"  # transient failure (timeout, refused, dropped, 5xx): retried
        REJECTED = "rejected"  # the processor refused the request itself: to review
        ABANDONED = "abandoned"  # the lease expired (worker lost mid-call): outcome unknown
        CANCELLED = "cancelled"  # not needed any more (resolved by a webhook, past the horizon)

    OPEN = (Status.SCHEDULED, Status.IN_FLIGHT)

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    purchase = models.ForeignKey(Purchase, on_delete=models.PROTECT, related_name="attempts")
    number = models.PositiveIntegerField()
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.SCHEDULED)
    next_attempt_at = models.DateTimeField()
    lease_until = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True, default="")
    # Only for ERROR: False when the request provably never reached the processor.
    may_have_charged = models.BooleanField(null=True, blank=True)
    http_status = models.PositiveSmallIntegerField(null=True, blank=True)
    charge_id = models.CharField(max_length=100, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["purchase_id", "number"]
        constraints = [
            models.UniqueConstraint(fields=["purchase", "number"], name="payment_attempt_number_unique"),
            # At most one attempt per purchase is queued or under way: two workers can
            # never charge the same purchase concurrently, whatever the code path.
            models.UniqueConstraint(
                fields=["purchase"],
                condition=Q(status__in=["scheduled", "in_flight"]),
                name="payment_attempt_one_open_per_purchase",
            ),
        ]
        indexes = [
            models.Index(fields=["next_attempt_at"], condition=Q(status="scheduled"), name="payment_attempt_due"),
            models.Index(fields=["lease_until"], condition=Q(status="in_flight"), name="payment_attempt_leased"),
        ]

    def __str__(self):
        return f"Attempt {self.number} of purchase #{self.purchase_id} ({self.status})"


class ProcessorCircuit(models.Model):
    """The circuit breaker in front of the processor, one row, shared by every worker.

    In the database, not the cache: every worker sees the same state, it survives
    restarts, and a Redis outage cannot reset or break it.
    """

    class State(models.TextChoices):
        CLOSED = "closed"
        OPEN = "open"
        HALF_OPEN = "half_open"

    name = models.CharField(max_length=50, unique=True, default="processor")
    state = models.CharField(max_length=10, choices=State.choices, default=State.CLOSED)
    consecutive_failures = models.PositiveIntegerField(default=0)
    opened_at = models.DateTimeField(null=True, blank=True)
    retry_at = models.DateTimeField(null=True, blank=True)  # when an OPEN circuit lets a probe through
    probe_until = models.DateTimeField(null=True, blank=True)  # a HALF_OPEN probe's lease
    last_error = models.TextField(blank=True, default="")
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self):
        return f"{self.name}: {self.state}"


class WebhookEvent(models.Model):
    """A processor webhook, kept once per event id (replays only bump `duplicates`)."""

    class Outcome(models.TextChoices):
        APPLIED = "applied"  # changed the purchase
        NO_CHANGE = "no_change"  # the purchase already reflected it
        UNKNOWN_PURCHASE = "unknown_purchase"
        IGNORED = "ignored"  # an event type we do not act on
        CONTRADICTION = "contradiction"  # disagrees with a final state: audited for an operator

    event_id = models.CharField(max_length=100, unique=True)
    type = models.CharField(max_length=50)
    payload = models.JSONField()
    signed_at = models.DateTimeField()
    received_at = models.DateTimeField(auto_now_add=True)
    purchase = models.ForeignKey(Purchase, null=True, blank=True, on_delete=models.PROTECT, related_name="webhooks")
    outcome = models.CharField(max_length=20, choices=Outcome.choices)
    duplicates = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["-id"]

    def __str__(self):
        return f"{self.type} {self.event_id}"
