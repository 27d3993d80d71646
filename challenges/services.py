"""Every write to challenges goes through here (HackSoft style: services own transactions)."""

from __future__ import annotations

from django.db import IntegrityError, transaction
from django.utils import timezone

from challenges.models import Challenge, Plan
from tradesense.common.audit import audit_record
from tradesense.common.realtime import send_event_on_commit


def challenge_activate(*, trader, plan: Plan, source_ref: str, actor_label: str = "system:payments") -> Challenge:
    """Open a challenge for a paid purchase. Idempotent on `source_ref`: a second call
    for the same purchase returns the first challenge and creates nothing.

    The caller (the purchase flow) may hold its own transaction; this joins it.
    """
    existing = Challenge.objects.filter(source_ref=source_ref).first()
    if existing is not None:
        return existing
    rules = plan.rules_snapshot()
    try:
        with transaction.atomic():
            challenge = Challenge.objects.create(
                trader=trader,
                plan=plan,
                source_ref=source_ref,
                status=Challenge.Status.ACTIVE,
                currency=plan.account_currency,
                starting_balance=plan.starting_balance,
                balance=plan.starting_balance,
                equity=plan.starting_balance,
                rules=rules,
                ruleset_version=plan.ruleset_version,
                intraday_high_equity=plan.starting_balance,
                eod_high=plan.starting_balance,
                marked_at=timezone.now(),
            )
            audit_record(
                action="challenge.activated",
                obj=challenge,
                actor_label=actor_label,
                before=None,
                after={
                    "status": challenge.status,
                    "plan": plan.slug,
                    "starting_balance": challenge.starting_balance,
                    "ruleset_version": challenge.ruleset_version,
                    "source_ref": source_ref,
                },
                reason="purchase confirmed by the processor",
            )
    except IntegrityError:
        # A concurrent activation for the same purchase won the unique index.
        return Challenge.objects.get(source_ref=source_ref)
    send_event_on_commit(
        type="challenge.status",
        challenge=challenge.pk,
        version=challenge.version,
        data={"status": challenge.status},
    )
    return challenge
