"""One helper to append an audit event; services call it inside their transaction."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from tradesense.common.models import AuditEvent


def _jsonable(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


def actor_label_for(user) -> str:
    if user is None or not getattr(user, "is_authenticated", False):
        return "anonymous"
    return f"{'staff' if user.is_staff else 'trader'}:{user.pk}"


def audit_record(
    *,
    action: str,
    obj=None,
    object_type: str | None = None,
    object_id: Any = None,
    before: dict | None = None,
    after: dict | None = None,
    reason: str = "",
    actor=None,
    actor_label: str | None = None,
) -> AuditEvent:
    if obj is not None:
        object_type = object_type or obj._meta.label_lower
        object_id = obj.pk if object_id is None else object_id
    return AuditEvent.objects.create(
        actor=actor if getattr(actor, "is_authenticated", False) else None,
        actor_label=actor_label or actor_label_for(actor),
        action=action,
        object_type=object_type or "",
        object_id=str(object_id),
        before=_jsonable(before),
        after=_jsonable(after),
        reason=reason,
    )
