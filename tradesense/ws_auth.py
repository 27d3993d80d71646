"""WebSocket auth: the session cookie (browsers) or `?ticket=<ticket>` (bots), and the
origin check that keeps another site's page from using a trader's cookie.

A ticket comes from POST /api/v1/auth/ws-ticket (token or session auth): single use,
valid for seconds (accounts.services.ws_ticket_redeem). A long-lived API token is not
accepted in the URL any more: URLs end up in access logs and proxies' histories.
Whatever the path, only an active user gets through.
"""

from urllib.parse import parse_qs

from channels.auth import AuthMiddleware
from channels.db import database_sync_to_async
from channels.security.websocket import AllowedHostsOriginValidator
from channels.sessions import CookieMiddleware, SessionMiddleware
from django.contrib.auth.models import AnonymousUser


def _query_ticket(scope) -> str | None:
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    return (query.get("ticket") or [None])[0]


@database_sync_to_async
def _user_for_ticket(ticket: str):
    from accounts.services import ws_ticket_redeem

    return ws_ticket_redeem(ticket=ticket) or AnonymousUser()


class _TicketAuthMiddleware(AuthMiddleware):
    async def resolve_scope(self, scope):
        await super().resolve_scope(scope)  # the session's user (ModelBackend refuses inactive ones)
        ticket = _query_ticket(scope)
        if ticket:
            # A ticket decides alone: a bad one is anonymous, never the cookie's user.
            scope["user"]._wrapped = await _user_for_ticket(ticket)
        elif not getattr(scope["user"], "is_active", False):
            scope["user"]._wrapped = AnonymousUser()


def TicketOrSessionAuthMiddleware(inner):
    return CookieMiddleware(SessionMiddleware(_TicketAuthMiddleware(inner)))


# The name tradesense/asgi.py imports.
TokenOrSessionAuthMiddleware = TicketOrSessionAuthMiddleware


class BrowserOriginValidator:
    """Browsers always send Origin, and it must be one of ALLOWED_HOSTS (cross-site
    WebSocket hijacking rides on the victim's cookie). Bots usually send no Origin: they
    may connect with ?ticket=, and their cookies are dropped, so a missing Origin can never
    authenticate by session."""

    def __init__(self, application):
        self.application = application
        self.checked = AllowedHostsOriginValidator(application)

    async def __call__(self, scope, receive, send):
        headers = scope.get("headers", [])
        if any(name == b"origin" for name, _ in headers) or not _query_ticket(scope):
            return await self.checked(scope, receive, send)
        scope = dict(scope, headers=[(name, value) for name, value in headers if name != b"cookie"])
        return await self.application(scope, receive, send)
