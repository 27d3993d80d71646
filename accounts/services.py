"""Every write to a trader's credentials: the password (changed by its owner), API tokens
(issue, revoke, revoke all) and WebSocket tickets (issue, redeem). docs/security.md
"Accounts and tokens" says why each works as it does."""

from __future__ import annotations

import ipaddress
import secrets
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from accounts.models import ApiToken, WsTicket, secret_digest
from tradesense.common.audit import audit_record
from tradesense.common.errors import NotFound

# 256 random bits, URL-safe (43 characters): nothing to guess, so a fast hash at rest.
SECRET_BYTES = 32


def _address_or_none(address: str | None) -> str | None:
    try:
        return str(ipaddress.ip_address(address)) if address else None
    except ValueError:
        return None


class TokenNotFound(NotFound):
    code = "token_not_found"
    message = "No such token."


@dataclass(frozen=True)
class IssuedToken:
    token: ApiToken
    secret: str  # shown once, in the answer that creates it; never stored


def token_create(*, user, created_from: str | None = None) -> IssuedToken:
    """A new API token for `user`, valid for API_TOKEN_TTL. Expired tokens of the user go
    first; past API_TOKENS_PER_USER the oldest are revoked (a bot that logs in at every
    start must not pile up live credentials)."""
    now = timezone.now()
    secret = secrets.token_urlsafe(SECRET_BYTES)
    with transaction.atomic():
        ApiToken.objects.filter(user=user, expires_at__lte=now).delete()  # dead already: housekeeping
        surplus = list(
            ApiToken.objects.filter(user=user).order_by("-id").values_list("pk", flat=True)[
                settings.API_TOKENS_PER_USER - 1 :
            ]
        )
        if surplus:
            ApiToken.objects.filter(pk__in=surplus).delete()
            audit_record(
                action="token.revoked", object_type=user._meta.label_lower, object_id=user.pk, actor=user,
                before={"tokens": surplus}, reason=f"more than {settings.API_TOKENS_PER_USER} tokens: oldest revoked",
            )
        token = ApiToken.objects.create(
            user=user, digest=secret_digest(secret), created_at=now, expires_at=now + settings.API_TOKEN_TTL,
            created_from=_address_or_none(created_from),
        )
        audit_record(
            action="token.issued", obj=token, actor=user,
            after={"expires_at": token.expires_at, "created_from": token.created_from},
        )
    return IssuedToken(token=token, secret=secret)


def token_issue(*, user, created_from: str | None = None) -> str:
    """A new API token's secret (what `Authorization: Token <secret>` carries)."""
    return token_create(user=user, created_from=created_from).secret


def token_revoke(*, user, token_id: int, actor=None, reason: str = "revoked by its owner") -> None:
    """Revoke one of `user`'s tokens (the owner, or an operator as `actor`); a token of
    anyone else is a 404, like a missing one."""
    with transaction.atomic():
        deleted, _ = ApiToken.objects.filter(pk=token_id, user=user).delete()
        if not deleted:
            raise TokenNotFound()
        audit_record(
            action="token.revoked", object_type=ApiToken._meta.label_lower, object_id=token_id,
            actor=actor or user, after={"user": user.pk}, reason=reason,
        )


def tokens_revoke_all(*, user, reason: str, actor=None) -> int:
    """Every token and unused ticket of `user`, gone (password changed, account
    deactivated). Returns how many tokens were revoked; audited when there were any."""
    with transaction.atomic():
        ids = list(ApiToken.objects.filter(user=user).values_list("pk", flat=True))
        WsTicket.objects.filter(user=user).delete()
        if not ids:
            return 0
        ApiToken.objects.filter(pk__in=ids).delete()
        audit_record(
            action="token.revoked", object_type=user._meta.label_lower, object_id=user.pk, actor=actor,
            actor_label=None if actor is not None else "system:credentials", before={"tokens": ids}, reason=reason,
        )
    return len(ids)


def password_change(*, user, new_password: str, actor=None) -> None:
    """Set a new password (already checked against the current one and the validators by
    the caller). Saving it revokes every API token and unused ticket of the user
    (accounts.receivers), each audited; this writes the change's own audit event."""
    with transaction.atomic():
        user.set_password(new_password)
        user.save(update_fields=["password"])
        audit_record(
            action="account.password_changed", object_type=user._meta.label_lower, object_id=user.pk,
            actor=actor or user, reason="changed by the account's owner",
        )


# --- WebSocket tickets -----------------------------------------------------------------------


def ws_ticket_issue(*, user) -> tuple[str, datetime]:
    """A single-use ticket for one WebSocket connection, valid WS_TICKET_TTL. Not audited:
    it only exchanges a credential the caller already presented, and it lives seconds."""
    now = timezone.now()
    secret = secrets.token_urlsafe(SECRET_BYTES)
    expires_at = now + settings.WS_TICKET_TTL
    with transaction.atomic():
        WsTicket.objects.filter(expires_at__lte=now).delete()  # unused ones, anyone's
        WsTicket.objects.create(user=user, digest=secret_digest(secret), expires_at=expires_at)
    return secret, expires_at


def ws_ticket_redeem(*, ticket: str):
    """The active user a ticket was issued to, or None (unknown, used, expired, or the
    user deactivated since). Redeeming deletes it, so a second use finds nothing: of two
    concurrent uses, the row lock lets one through."""
    if not ticket or len(ticket) > 100:
        return None
    now = timezone.now()
    with transaction.atomic():
        row = (
            WsTicket.objects.select_for_update().select_related("user")
            .filter(digest=secret_digest(ticket), expires_at__gt=now).first()
        )
        if row is None:
            return None
        deleted, _ = WsTicket.objects.filter(pk=row.pk).delete()
    if not deleted or not row.user.is_active:
        return None
    return row.user
