"""Reads of a trader's credentials."""

from __future__ import annotations

from django.db.models import QuerySet
from django.utils import timezone

from accounts.models import ApiToken


def token_list_for_user(*, user) -> QuerySet[ApiToken]:
    """The user's live tokens, newest first (expired ones are not credentials any more)."""
    return ApiToken.objects.filter(user=user, expires_at__gt=timezone.now()).order_by("-id")
