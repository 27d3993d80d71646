"""WebSocket auth: the session cookie (dashboard) or ?token=<key> (bots), and the origin
check that keeps another site's page from using a trader's cookie."""

from urllib.parse import parse_qs

from channels.auth import AuthMiddleware
from channels.db import database_sync_to_async
from channels.security.websocket import AllowedHostsOriginValidator
from channels.sessions import CookieMiddleware, SessionMiddleware
from django.contrib.auth.models import AnonymousUser


def _query_token(scope) -> str | None:
    query = parse_qs(scope.get("query_string", b"").decode())
    return (query.get("token") or [None])[0]


@database_sync_to_async
def _user_for_token(key: str):
    from rest_framework.authtoken.models import Token

    try:
        return Token.objects.select_related("user").get(key=key).user
    except Token.DoesNotExist:
        return AnonymousUser()


class _TokenAuthMiddleware(AuthMiddleware):
    async def resolve_scope(self, scope):
        await super().resolve_scope(scope)
        token = _query_token(scope)
        if token:
            user = await _user_for_token(token)
            if user.is_authenticated:
                scope["user"]._wrapped = user


def TokenOrSessionAuthMiddleware(inner):
    return CookieMiddleware(SessionMiddleware(_TokenAuthMiddleware(inner)))


class BrowserOriginValidator:
    """Browsers always send Origin, and it must be one of ALLOWED_HOSTS (cross-site
    WebSocket hijacking rides on the victim's cookie). Bots usually send no Origin: they
    may connect with ?token=, and their cookies are dropped, so a missing Origin can never
    authenticate by session."""

    def __init__(self, application):
        self.application = application
        self.checked = AllowedHostsOriginValidator(application)

    async def __call__(self, scope, receive, send):
        headers = scope.get("headers", [])
        if any(name == b"origin" for name, _ in headers) or not _query_token(scope):
            return await self.checked(scope, receive, send)
        scope = dict(scope, headers=[(name, value) for name, value in headers if name != b"cookie"])
        return await self.application(scope, receive, send)
