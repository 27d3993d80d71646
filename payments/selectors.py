"""Every non-trivial read of payments (HackSoft style: selectors.py reads)."""

from __future__ import annotations

from django.db.models import Count, OuterRef, QuerySet, Subquery

from challenges.models import Plan
from payments.models import PaymentAttempt, Purchase


def plan_get_purchasable(*, slug: str) -> Plan | None:
    return Plan.objects.filter(slug=slug, is_active=True).first()


def _with_display(queryset: QuerySet) -> QuerySet:
    next_due = (
        PaymentAttempt.objects.filter(purchase=OuterRef("pk"), status=PaymentAttempt.Status.SCHEDULED)
        .order_by("next_attempt_at")
        .values("next_attempt_at")[:1]
    )
    return queryset.select_related("plan").annotate(
        attempt_count=Count("attempts"), next_attempt_at=Subquery(next_due)
    )


def purchase_list_for_trader(*, trader, before: int | None = None) -> QuerySet[Purchase]:
    """The trader's purchases, newest first; `before` is the id cursor of the next page."""
    queryset = Purchase.objects.filter(trader=trader)
    if before is not None:
        queryset = queryset.filter(pk__lt=before)
    return _with_display(queryset).order_by("-id")


def purchase_get_for_trader(*, trader, purchase_id: int) -> Purchase | None:
    """The trader's own purchase, or None (someone else's is indistinguishable from none)."""
    return _with_display(Purchase.objects.filter(trader=trader, pk=purchase_id)).first()


def payment_retry_queue_depth() -> int:
    """Attempts waiting in the retry queue (the seed's payment retry queue depth metric)."""
    return PaymentAttempt.objects.filter(status=PaymentAttempt.Status.SCHEDULED).count()


def purchases_needing_review_count() -> int:
    return Purchase.objects.filter(status=Purchase.Status.NEEDS_REVIEW).count()
