"""Every write to purchases goes through here (HackSoft style: services own transactions).

The flow, the state machine and the retry policy are in docs/payments.md. In short:
a purchase is recorded with its first attempt (the retry queue is the attempts table),
a sweep claims due attempts with SELECT ... FOR UPDATE SKIP LOCKED and calls the
processor outside any transaction, and each answer is recorded in one transaction with
its audit events. Whatever tells us the outcome first (the worker's own answer, a
webhook, a reconciliation look-up) settles the purchase; the others find it settled.

Lock order, everywhere a lock is waited for: purchase row, then its attempt rows. The
claim takes both with SKIP LOCKED, so it never waits and cannot deadlock.
"""

from __future__ import annotations

import json
import logging
import random
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from challenges.models import Plan
from challenges.services import challenge_activate
from payments import circuit
from payments.models import PaymentAttempt, Purchase, WebhookEvent
from payments.processor import Charge, PaymentProcessor, ProcessorRejected, ProcessorUnavailable, get_processor
from payments.signing import SignatureError, verify_signature
from tradesense.common.audit import actor_label_for, audit_record
from tradesense.common.errors import InvalidInput, StateConflict
from tradesense.common.realtime import enqueue_on_commit, send_event_on_commit

logger = logging.getLogger(__name__)

SWEEP_ACTOR = "system:payments-sweep"
WEBHOOK_ACTOR = "processor:webhook"
RECONCILE_ACTOR = "system:payments-reconcile"

Status = Purchase.Status
AttemptStatus = PaymentAttempt.Status
# Purchases whose charge is still being attempted (NEEDS_REVIEW waits for reconciliation).
CHARGING = (Status.PENDING, Status.PROCESSING)


class InvalidPurchaseTransition(StateConflict):
    code = "invalid_transition"


# --- Retry policy -----------------------------------------------------------------------


@dataclass(frozen=True)
class RetryPolicy:
    base_seconds: float
    cap_seconds: float
    horizon: timedelta

    def delay_seconds(self, failures: int, rng: random.Random | None = None) -> float:
        """Exponential backoff with full jitter: uniform(0, min(cap, base * 2^(failures-1))).

        Full jitter spreads a crowd of purchases that failed together (an outage) over
        the whole window, so the recovering processor is not hit by a synchronized wave.
        """
        exponent = min(max(failures - 1, 0), 40)  # 2^40 s is far past any cap
        ceiling = min(self.cap_seconds, self.base_seconds * (2**exponent))
        return (rng or random).uniform(0, ceiling)


def retry_policy() -> RetryPolicy:
    return RetryPolicy(
        base_seconds=float(getattr(settings, "PAYMENT_RETRY_BASE_SECONDS", 2.0)),
        cap_seconds=float(getattr(settings, "PAYMENT_RETRY_CAP_SECONDS", 300.0)),
        horizon=timedelta(seconds=float(getattr(settings, "PAYMENT_RETRY_HORIZON_SECONDS", 3600.0))),
    )


def attempt_lease() -> timedelta:
    # Longer than one call can take (the client's timeout), so a live call's attempt is
    # never taken over; short enough that a killed worker delays a purchase by seconds.
    return timedelta(seconds=2 * float(settings.PAYMENT_PROCESSOR_TIMEOUT_SECONDS) + 10)


# --- State changes: one place, audited, with a live event after commit ---------------------


def purchase_snapshot(purchase: Purchase) -> dict:
    return {
        "id": purchase.pk,
        "status": purchase.status,
        "version": purchase.version,
        "amount": str(purchase.amount),
        "currency": purchase.currency,
        "charge_id": purchase.charge_id,
        "challenge": purchase.challenge_id,
        "failure_reason": purchase.failure_reason,
    }


def _send_updated(purchase: Purchase) -> None:
    data = purchase_snapshot(purchase)
    data.pop("charge_id")  # the trader's frame carries what GET /purchases/{id} shows
    send_event_on_commit(type="purchase.updated", user=purchase.trader_id, data=data)


def _transition(purchase: Purchase, to: str, *, reason: str, actor_label: str, actor=None, **changes) -> None:
    """Move a locked purchase along ALLOWED_TRANSITIONS, in the caller's transaction."""
    if to not in Purchase.ALLOWED_TRANSITIONS[purchase.status]:
        raise InvalidPurchaseTransition(f"A {purchase.status} purchase cannot become {to}.")
    before = purchase_snapshot(purchase)
    purchase.status = to
    for name, value in changes.items():
        setattr(purchase, name, value)
    purchase.version += 1
    purchase.save()
    audit_record(
        action=f"purchase.{to}", obj=purchase, before=before, after=purchase_snapshot(purchase), reason=reason,
        actor=actor, actor_label=actor_label,
    )
    _send_updated(purchase)


def _attempt_snapshot(attempt: PaymentAttempt) -> dict:
    return {
        "purchase": attempt.purchase_id,
        "number": attempt.number,
        "status": attempt.status,
        "next_attempt_at": attempt.next_attempt_at,
        "error": attempt.error,
        "charge_id": attempt.charge_id,
    }


def _attempt_move(attempt: PaymentAttempt, to: str, *, actor_label: str, reason: str = "", **changes) -> None:
    before = _attempt_snapshot(attempt)
    attempt.status = to
    for name, value in changes.items():
        setattr(attempt, name, value)
    if to not in PaymentAttempt.OPEN and attempt.finished_at is None:
        attempt.finished_at = timezone.now()
    attempt.save()
    audit_record(
        action=f"payment_attempt.{to}", obj=attempt, before=before, after=_attempt_snapshot(attempt),
        reason=reason, actor_label=actor_label,
    )


def _cancel_scheduled(purchase: Purchase, *, actor_label: str, reason: str) -> None:
    for attempt in PaymentAttempt.objects.select_for_update().filter(
        purchase=purchase, status=AttemptStatus.SCHEDULED
    ):
        _attempt_move(attempt, AttemptStatus.CANCELLED, actor_label=actor_label, reason=reason)


def _locked_purchase(purchase_id: int) -> Purchase:
    # of=("self",): lock the purchase only, not the trader and plan it joins.
    return Purchase.objects.select_for_update(of=("self",)).select_related("plan", "trader").get(pk=purchase_id)


# --- Creating a purchase ---------------------------------------------------------------------


def purchase_create(*, trader, plan: Plan, payment_method: str, payment_token: str) -> Purchase:
    """Record the purchase and its first attempt, due now; the charge happens in a worker.

    No call to the processor and no wait on the broker: the best-effort enqueue only
    starts the charge sooner; the sweep finds the attempt in the database regardless.
    """
    from payments.tasks import purchase_charge  # tasks import this module

    now = timezone.now()
    key = uuid.uuid4()
    with transaction.atomic():
        purchase = Purchase.objects.create(
            trader=trader,
            plan=plan,
            amount=plan.price,
            currency=plan.currency,
            payment_method=payment_method,
            payment_token=payment_token,
            processor_key=key,
        )
        PaymentAttempt.objects.create(id=key, purchase=purchase, number=1, next_attempt_at=now)
        audit_record(
            action="purchase.created",
            obj=purchase,
            actor=trader,
            before=None,
            after={**purchase_snapshot(purchase), "plan": plan.slug, "payment_method": payment_method},
            reason="bought by the trader",
        )
        _send_updated(purchase)
        enqueue_on_commit(purchase_charge, purchase.pk)
    return purchase


# --- Applying what the processor says (worker answer, webhook, reconciliation) ------------


def _contradiction(purchase: Purchase, *, what: str, actor_label: str) -> None:
    logger.error("purchase %s: %s", purchase.pk, what)
    audit_record(
        action="purchase.processor_contradiction", obj=purchase, before=purchase_snapshot(purchase),
        after=purchase_snapshot(purchase), reason=what, actor_label=actor_label,
    )


def _apply_charge(purchase: Purchase, charge: Charge, *, via: str, actor_label: str) -> str:
    """The processor says `charge` succeeded for this (locked) purchase. Returns the outcome."""
    if charge.amount != purchase.amount or charge.currency != purchase.currency:
        what = (
            f"the processor charged {charge.amount} {charge.currency} ({charge.id}) but the purchase is "
            f"{purchase.amount} {purchase.currency}"
        )
        if purchase.status in CHARGING or purchase.status == Status.FAILED:
            _cancel_scheduled(purchase, actor_label=actor_label, reason=what)
            _transition(purchase, Status.NEEDS_REVIEW, reason=what, actor_label=actor_label,
                        failure_reason=f"Needs review: {what}.", charge_id=charge.id)
            return WebhookEvent.Outcome.CONTRADICTION
        _contradiction(purchase, what=what, actor_label=actor_label)
        return WebhookEvent.Outcome.CONTRADICTION
    if purchase.status in Purchase.OPEN:
        # The challenge and the paid status are one transaction: a purchase is never
        # succeeded without its challenge, and a challenge never exists unpaid.
        challenge = challenge_activate(
            trader=purchase.trader, plan=purchase.plan, source_ref=f"purchase:{purchase.pk}", actor_label=actor_label
        )
        _cancel_scheduled(purchase, actor_label=actor_label, reason=f"charge {charge.id} confirmed by {via}")
        _transition(
            purchase, Status.SUCCEEDED, reason=f"charge {charge.id} confirmed by {via}", actor_label=actor_label,
            charge_id=charge.id, challenge=challenge, failure_reason="", resolved_at=timezone.now(),
        )
        return WebhookEvent.Outcome.APPLIED
    if purchase.status == Status.SUCCEEDED:
        if purchase.charge_id == charge.id:
            return WebhookEvent.Outcome.NO_CHANGE
        _contradiction(purchase, what=f"{via} reports charge {charge.id}, the purchase holds {purchase.charge_id}",
                       actor_label=actor_label)
        return WebhookEvent.Outcome.CONTRADICTION
    # FAILED, yet the processor reports money taken: an operator must see it, and
    # reconciliation will confirm the charge and open the challenge the trader paid for.
    what = f"{via} reports charge {charge.id} for a purchase recorded as failed"
    _transition(purchase, Status.NEEDS_REVIEW, reason=what, actor_label=actor_label,
                failure_reason=f"Needs review: {what}.")
    return WebhookEvent.Outcome.CONTRADICTION


def _decline_reason(charge: Charge) -> str:
    reason = f"Declined by the payment processor ({charge.decline_code or 'declined'})"
    return f"{reason}: {charge.message}" if charge.message else f"{reason}."


def _apply_decline(purchase: Purchase, charge: Charge, *, via: str, actor_label: str) -> str:
    if purchase.status in Purchase.OPEN:
        _cancel_scheduled(purchase, actor_label=actor_label, reason=f"declined ({via})")
        _transition(
            purchase, Status.FAILED, reason=f"declined ({charge.decline_code}) according to {via}",
            actor_label=actor_label, failure_reason=_decline_reason(charge), charge_id=charge.id,
            resolved_at=timezone.now(),
        )
        return WebhookEvent.Outcome.APPLIED
    if purchase.status == Status.FAILED:
        return WebhookEvent.Outcome.NO_CHANGE
    # SUCCEEDED: the processor keeps the first result per key, so this is its bug or
    # tampering; a paid challenge is never taken back automatically.
    _contradiction(purchase, what=f"{via} reports a decline for a succeeded purchase", actor_label=actor_label)
    return WebhookEvent.Outcome.CONTRADICTION


def _apply_processor_result(purchase: Purchase, charge: Charge, *, via: str, actor_label: str) -> str:
    if charge.succeeded:
        return _apply_charge(purchase, charge, via=via, actor_label=actor_label)
    return _apply_decline(purchase, charge, via=via, actor_label=actor_label)


def _move_to_review(purchase: Purchase, *, reason: str, actor_label: str) -> None:
    _cancel_scheduled(purchase, actor_label=actor_label, reason="past the retry horizon")
    _transition(purchase, Status.NEEDS_REVIEW, reason=reason, actor_label=actor_label,
                failure_reason=f"Needs review: {reason}")


def _retry_or_review(purchase: Purchase, *, after: PaymentAttempt, now: datetime, error: str, actor_label: str) -> None:
    """After an attempt with an unknown or failed outcome: queue the next one (same key),
    or, past the horizon, hand the purchase to reconciliation."""
    policy = retry_policy()
    next_at = now + timedelta(seconds=policy.delay_seconds(after.number))
    if next_at > purchase.created_at + policy.horizon:
        _move_to_review(
            purchase,
            reason=(
                f"outcome still unknown after {after.number} attempts over "
                f"{int(policy.horizon.total_seconds())} s (last: {error}); reconciling with the processor"
            ),
            actor_label=actor_label,
        )
        return
    attempt = PaymentAttempt.objects.create(purchase=purchase, number=after.number + 1, next_attempt_at=next_at)
    audit_record(action="payment_attempt.scheduled", obj=attempt, before=None, after=_attempt_snapshot(attempt),
                 reason=f"retry after: {error}", actor_label=actor_label)


# --- The retry queue: claim, call, record --------------------------------------------------------


@dataclass(frozen=True)
class _Claim:
    attempt_id: uuid.UUID
    purchase_id: int
    number: int
    processor_key: str
    amount: Decimal
    currency: str
    payment_method: str
    token: str


def _claim_next(*, now: datetime, purchase_id: int | None = None) -> _Claim | None:
    """Claim the oldest due attempt that no one else holds, under a lease, and commit."""
    with transaction.atomic():
        queue = (
            PaymentAttempt.objects.select_for_update(skip_locked=True, of=("self", "purchase"))
            .select_related("purchase")
            .filter(status=AttemptStatus.SCHEDULED, next_attempt_at__lte=now)
            .order_by("next_attempt_at")
        )
        if purchase_id is not None:
            queue = queue.filter(purchase_id=purchase_id)
        for _ in range(5):
            attempt = queue.first()
            if attempt is None:
                return None
            purchase = attempt.purchase
            if purchase.status not in CHARGING:  # settled meanwhile (a webhook): nothing to send
                _attempt_move(attempt, AttemptStatus.CANCELLED, actor_label=SWEEP_ACTOR,
                              reason=f"purchase already {purchase.status}")
                continue
            _attempt_move(attempt, AttemptStatus.IN_FLIGHT, actor_label=SWEEP_ACTOR, reason="claimed by the sweep",
                          started_at=now, lease_until=now + attempt_lease())
            if purchase.status == Status.PENDING:
                _transition(purchase, Status.PROCESSING, reason="charging with the processor", actor_label=SWEEP_ACTOR)
            return _Claim(
                attempt_id=attempt.pk,
                purchase_id=purchase.pk,
                number=attempt.number,
                processor_key=str(purchase.processor_key),
                amount=purchase.amount,
                currency=purchase.currency,
                payment_method=purchase.payment_method,
                token=purchase.payment_token,
            )
    return None


def _locked_attempt(claim: _Claim) -> tuple[Purchase, PaymentAttempt]:
    purchase = _locked_purchase(claim.purchase_id)
    attempt = PaymentAttempt.objects.select_for_update().get(pk=claim.attempt_id)
    return purchase, attempt


def _record_answer(claim: _Claim, charge: Charge) -> str:
    with transaction.atomic():
        purchase, attempt = _locked_attempt(claim)
        if attempt.status in (AttemptStatus.IN_FLIGHT, AttemptStatus.ABANDONED):
            # ABANDONED too: a late answer from a call whose lease expired is still the truth.
            _attempt_move(
                attempt, AttemptStatus.SUCCEEDED if charge.succeeded else AttemptStatus.DECLINED,
                actor_label=SWEEP_ACTOR, reason="the processor answered", charge_id=charge.id,
                error="" if charge.succeeded else _decline_reason(charge), lease_until=None,
            )
        return _apply_processor_result(purchase, charge, via="the processor's answer", actor_label=SWEEP_ACTOR)


def _record_transient(claim: _Claim, exc: ProcessorUnavailable) -> None:
    now = timezone.now()
    with transaction.atomic():
        purchase, attempt = _locked_attempt(claim)
        if attempt.status != AttemptStatus.IN_FLIGHT:
            return  # the lease expired and the recovery already queued the next attempt
        _attempt_move(attempt, AttemptStatus.ERROR, actor_label=SWEEP_ACTOR, reason="transient processor failure",
                      error=str(exc)[:2000], may_have_charged=exc.may_have_charged, http_status=exc.http_status,
                      lease_until=None)
        if purchase.status in CHARGING:
            _retry_or_review(purchase, after=attempt, now=now, error=str(exc)[:200], actor_label=SWEEP_ACTOR)


def _record_rejected(claim: _Claim, exc: ProcessorRejected) -> None:
    with transaction.atomic():
        purchase, attempt = _locked_attempt(claim)
        if attempt.status in (AttemptStatus.IN_FLIGHT, AttemptStatus.ABANDONED):
            _attempt_move(attempt, AttemptStatus.REJECTED, actor_label=SWEEP_ACTOR, reason="the processor refused",
                          error=str(exc)[:2000], http_status=exc.http_status, lease_until=None)
        if purchase.status in CHARGING:
            _move_to_review(purchase, reason=f"the processor refused the charge request: {exc}",
                            actor_label=SWEEP_ACTOR)


def _charge_claim(claim: _Claim, processor: PaymentProcessor) -> str:
    """Call the processor outside any transaction, then record the answer."""
    try:
        charge = processor.charge(
            idempotency_key=claim.processor_key,
            amount=claim.amount,
            currency=claim.currency,
            payment_method=claim.payment_method,
            token=claim.token,
            description=f"TradeSense purchase {claim.purchase_id}",
        )
    except ProcessorUnavailable as exc:
        _record_transient(claim, exc)
        circuit.circuit_record_failure(error=str(exc)[:500])
        return "error"
    except ProcessorRejected as exc:
        _record_rejected(claim, exc)
        circuit.circuit_record_success()  # it answered: the processor itself is up
        return "rejected"
    _record_answer(claim, charge)
    circuit.circuit_record_success()
    return "succeeded" if charge.succeeded else "declined"


def _recover_expired_leases(*, now: datetime, limit: int = 100) -> int:
    """In-flight attempts whose worker vanished: mark them abandoned and queue the next
    attempt with the same key (the processor returns the first result if it charged)."""
    with transaction.atomic():
        expired = list(
            PaymentAttempt.objects.select_for_update(skip_locked=True, of=("self", "purchase"))
            .select_related("purchase")
            .filter(status=AttemptStatus.IN_FLIGHT, lease_until__lt=now)[:limit]
        )
        for attempt in expired:
            error = "lease expired: the worker was lost mid-call, outcome unknown"
            _attempt_move(attempt, AttemptStatus.ABANDONED, actor_label=SWEEP_ACTOR, reason=error,
                          error=error, may_have_charged=True, lease_until=None)
            if attempt.purchase.status in CHARGING:
                _retry_or_review(attempt.purchase, after=attempt, now=now, error=error, actor_label=SWEEP_ACTOR)
    return len(expired)


def _review_past_horizon(*, now: datetime, limit: int = 100) -> int:
    """Purchases still charging past the horizon (e.g. the circuit stayed open) go to
    reconciliation; ones with a call in flight wait for its answer or its lease."""
    policy = retry_policy()
    with transaction.atomic():
        stale = list(
            Purchase.objects.select_for_update(skip_locked=True, of=("self",))
            .filter(status__in=CHARGING, created_at__lt=now - policy.horizon)
            .exclude(attempts__status=AttemptStatus.IN_FLIGHT)
            .order_by("id")[:limit]
        )
        for purchase in stale:
            _move_to_review(
                purchase,
                reason=(
                    f"not settled within the {int(policy.horizon.total_seconds())} s retry horizon; "
                    "reconciling with the processor"
                ),
                actor_label=SWEEP_ACTOR,
            )
    return len(stale)


@dataclass
class SweepReport:
    calls: int = 0
    succeeded: int = 0
    declined: int = 0
    errors: int = 0
    rejected: int = 0
    recovered: int = 0
    reviewed: int = 0
    circuit_open: bool = False


def payments_sweep(
    *, processor: PaymentProcessor | None = None, max_calls: int = 500, time_budget: float = 20.0,
    purchase_id: int | None = None,
) -> SweepReport:
    """Charge due attempts one claim at a time until none is due, the circuit opens, or
    the budget runs out. Safe to run in any number of workers at once (SKIP LOCKED).

    One claim per transaction keeps each lease as short as one call; parallelism comes
    from several sweeps, not from batching inside one.
    """
    processor = processor or get_processor()
    report = SweepReport()
    if purchase_id is None:
        now = timezone.now()
        report.recovered = _recover_expired_leases(now=now)
        report.reviewed = _review_past_horizon(now=now)
    deadline = time.monotonic() + time_budget
    while report.calls < max_calls and time.monotonic() < deadline:
        permit = circuit.circuit_permit()
        if permit is None:
            report.circuit_open = True
            break
        claim = _claim_next(now=timezone.now(), purchase_id=purchase_id)
        if claim is None:
            if permit == circuit.PROBE:
                circuit.circuit_release_probe()
            break
        outcome = _charge_claim(claim, processor)
        report.calls += 1
        if outcome == "succeeded":
            report.succeeded += 1
        elif outcome == "declined":
            report.declined += 1
        elif outcome == "rejected":
            report.rejected += 1
        else:
            report.errors += 1
        if purchase_id is not None:
            break
    return report


def purchase_charge_now(*, purchase_id: int, processor: PaymentProcessor | None = None) -> SweepReport:
    """The on-commit nudge: charge this purchase's due attempt now if no one holds it."""
    return payments_sweep(processor=processor, purchase_id=purchase_id, max_calls=1)


# --- Reconciliation -----------------------------------------------------------------------------


def _note_reconcile(purchase_id: int, note: str) -> None:
    Purchase.objects.filter(pk=purchase_id).update(last_reconciled_at=timezone.now(), reconcile_note=note[:2000])


def purchase_reconcile(
    *, purchase: Purchase, actor=None, actor_label: str = RECONCILE_ACTOR, processor: PaymentProcessor | None = None
) -> str:
    """Ask the processor for the charge under this purchase's key, and settle a purchase
    that needs review by what it says. Returns the outcome (a short word).

    Found and succeeded: succeeded with its challenge. Found and declined: failed. Not
    found: failed, because the key's retention outlives the horizon and no call is in
    flight, so nothing was or will be charged under it.
    """
    processor = processor or get_processor()
    if purchase.status != Status.NEEDS_REVIEW:
        return "not_needed"
    label = actor_label if actor is None else actor_label_for(actor)
    try:
        charge = processor.charge_lookup(idempotency_key=str(purchase.processor_key))
    except ProcessorUnavailable as exc:
        circuit.circuit_record_failure(error=str(exc)[:500])
        _note_reconcile(purchase.pk, f"processor unavailable: {exc}")
        return "unavailable"
    except ProcessorRejected as exc:
        circuit.circuit_record_success()
        _note_reconcile(purchase.pk, f"look-up refused: {exc}")
        return "rejected"
    circuit.circuit_record_success()
    with transaction.atomic():
        locked = _locked_purchase(purchase.pk)
        if locked.status != Status.NEEDS_REVIEW:
            return "not_needed"
        locked.last_reconciled_at = timezone.now()
        if charge is None:
            if locked.attempts.filter(status=AttemptStatus.IN_FLIGHT).exists():
                locked.reconcile_note = "a call is still in flight; looking again later"
                locked.save(update_fields=["last_reconciled_at", "reconcile_note", "updated_at"])
                return "in_flight"
            locked.reconcile_note = "the processor has no charge under this purchase's key"
            _transition(
                locked, Status.FAILED, reason="reconciliation: the processor has no charge under this key",
                actor=actor, actor_label=label, resolved_at=timezone.now(),
                failure_reason="Not charged: the payment could not be completed and nothing was taken. You can buy again.",
            )
            return "failed"
        locked.reconcile_note = f"the processor reports {charge.id}: {charge.status}"
        outcome = _apply_processor_result(locked, charge, via="reconciliation", actor_label=label)
        if outcome == WebhookEvent.Outcome.CONTRADICTION:
            locked.save(update_fields=["last_reconciled_at", "reconcile_note", "updated_at"])
            return "contradiction"
        return Status.SUCCEEDED if charge.succeeded else Status.FAILED


def purchases_reconcile_due(*, limit: int = 50, processor: PaymentProcessor | None = None) -> dict[str, int]:
    """The reconciliation task: every purchase that needs review, least recently looked
    at first, while the circuit lets calls through."""
    processor = processor or get_processor()
    counts: dict[str, int] = {}
    due = Purchase.objects.filter(status=Status.NEEDS_REVIEW).order_by(F("last_reconciled_at").asc(nulls_first=True), "id")
    for purchase in due[:limit]:
        permit = circuit.circuit_permit()
        if permit is None:
            counts["circuit_open"] = counts.get("circuit_open", 0) + 1
            break
        outcome = purchase_reconcile(purchase=purchase, processor=processor)
        if outcome == "not_needed" and permit == circuit.PROBE:
            circuit.circuit_release_probe()  # no call was made: let the next one probe
        counts[outcome] = counts.get(outcome, 0) + 1
    return counts


# --- Webhooks -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class WebhookResult:
    event_id: str
    duplicate: bool
    outcome: str


def _webhook_charge(obj: dict, *, expected_status: str) -> Charge:
    problems = {}
    for name in ("id", "idempotency_key", "status", "amount", "currency"):
        if not isinstance(obj.get(name), str) or not obj.get(name):
            problems[f"data.object.{name}"] = ["Required string."]
    if problems:
        raise InvalidInput("The event's charge is incomplete.", fields=problems)
    if obj["status"] != expected_status:
        raise InvalidInput("The event type and the charge's status disagree.",
                           fields={"data.object.status": [f"Expected {expected_status}."]})
    try:
        amount = Decimal(obj["amount"])
    except InvalidOperation:
        raise InvalidInput("The charge amount is not a decimal.", fields={"data.object.amount": ["Not a decimal."]})
    return Charge(
        id=obj["id"], idempotency_key=obj["idempotency_key"], status=obj["status"], amount=amount,
        currency=obj["currency"], decline_code=str(obj.get("decline_code") or ""), message=str(obj.get("message") or ""),
    )


EVENT_STATUS = {"charge.succeeded": "succeeded", "charge.failed": "declined"}


def webhook_receive(*, body: bytes, signature: str | None, now: float | None = None) -> WebhookResult:
    """Verify, deduplicate by event id and apply a processor webhook, in one transaction.

    The event row and the purchase change commit together, so a delivery is either
    fully applied or not recorded (and the processor's redelivery applies it). Because
    settling is idempotent by state, the outcome is the same whether the event arrives
    before the worker's own answer, after it, or twice.
    """
    try:
        signed_at = verify_signature(
            secret=settings.PAYMENT_PROCESSOR_SECRET, body=body, header=signature,
            now=time.time() if now is None else now, tolerance=float(settings.WEBHOOK_TOLERANCE_SECONDS),
        )
    except SignatureError as exc:
        raise InvalidInput(str(exc), fields={"X-Signature": [str(exc)]}, code="invalid_signature")
    try:
        event = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise InvalidInput("The body is not JSON.", fields={"body": ["Not JSON."]}, code="malformed_json")
    if not isinstance(event, dict):
        raise InvalidInput("The event must be a JSON object.", fields={"body": ["Expected an object."]})
    event_id, event_type, data = event.get("id"), event.get("type"), event.get("data")
    problems = {}
    if not isinstance(event_id, str) or not 1 <= len(event_id) <= 100:
        problems["id"] = ["Required string of 1 to 100 characters."]
    if not isinstance(event_type, str) or not 1 <= len(event_type) <= 50:
        problems["type"] = ["Required string of 1 to 50 characters."]
    if not isinstance(data, dict) or not isinstance(data.get("object"), dict):
        problems["data.object"] = ["Required object."]
    if problems:
        raise InvalidInput("The event is incomplete.", fields=problems)

    with transaction.atomic():
        try:
            with transaction.atomic():
                record = WebhookEvent.objects.create(
                    event_id=event_id, type=event_type, payload=event,
                    signed_at=datetime.fromtimestamp(signed_at, tz=UTC), outcome=WebhookEvent.Outcome.IGNORED,
                )
        except IntegrityError:
            # Seen before (a concurrent twin waits on the unique index until the first
            # commits, then lands here): count it, change nothing else.
            WebhookEvent.objects.filter(event_id=event_id).update(duplicates=F("duplicates") + 1)
            first = WebhookEvent.objects.get(event_id=event_id)
            return WebhookResult(event_id=event_id, duplicate=True, outcome=first.outcome)

        if event_type not in EVENT_STATUS:
            return WebhookResult(event_id=event_id, duplicate=False, outcome=record.outcome)
        charge = _webhook_charge(data["object"], expected_status=EVENT_STATUS[event_type])
        try:
            key = uuid.UUID(charge.idempotency_key)
        except ValueError:
            key = None
        found = Purchase.objects.filter(processor_key=key).values_list("pk", flat=True).first() if key else None
        if found is None:
            record.outcome = WebhookEvent.Outcome.UNKNOWN_PURCHASE
        else:
            purchase = _locked_purchase(found)
            record.purchase = purchase
            record.outcome = _apply_processor_result(
                purchase, charge, via=f"webhook {event_id}", actor_label=WEBHOOK_ACTOR
            )
        record.save(update_fields=["outcome", "purchase"])
        return WebhookResult(event_id=event_id, duplicate=False, outcome=record.outcome)
