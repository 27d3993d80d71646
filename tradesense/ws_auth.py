"""WebSocket auth: the session cookie (dashboard) or ?token=<key> (bots)."""

from urllib.parse import parse_qs

from channels.auth import AuthMiddleware
from channels.db import database_sync_to_async
from channels.sessions import CookieMiddleware, SessionMiddleware
from django.contrib.auth.models import AnonymousUser


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
        query = parse_qs(scope.get("query_string", b"").decode())
        token = (query.get("token") or [None])[0]
        if token:
            user = await _user_for_token(token)
            if user.is_authenticated:
                scope["user"]._wrapped = user


def TokenOrSessionAuthMiddleware(inner):
    return CookieMiddleware(SessionMiddleware(_TokenAuthMiddleware(inner)))
