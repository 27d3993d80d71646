"""Token authentication in one raw statement, against hashed, expiring tokens.

`Authorization: Token <secret>` (DRF's header format). The database holds only the
SHA-256 digest of each token (accounts.models.ApiToken), so the look-up is by the digest
of the presented secret: one indexed statement that also reads the user, as DRF's
`select_related("user").get(key=...)` did, through the cursor (about 0.1 ms of Python CPU
against the ORM's 0.7 ms; every order pays it: docs/performance.md). Nothing is cached: a
revoked or expired token, or a deactivated user, is refused on the very next request.
"""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from rest_framework import exceptions
from rest_framework.authentication import TokenAuthentication

from accounts.models import ApiToken, secret_digest
from tradesense.common import rawsql


class FastTokenAuthentication(TokenAuthentication):
    """`Authorization: Token <secret>`; request.auth is the ApiToken."""

    def authenticate_credentials(self, key):
        user_model = get_user_model()
        sql = (
            f'SELECT {rawsql.select_list(ApiToken, "t")}, {rawsql.select_list(user_model, "u")} '  # nosec B608
            f'FROM "{ApiToken._meta.db_table}" t JOIN "{user_model._meta.db_table}" u ON u."id" = t."user_id" '
            'WHERE t."digest" = %s'
        )
        with rawsql.cursor() as cursor:
            cursor.execute(sql, [secret_digest(key)])
            row = cursor.fetchone()
        if row is None:
            raise exceptions.AuthenticationFailed(_("Invalid token."))
        width = rawsql.width(ApiToken)
        token = rawsql.load(ApiToken, row[:width])
        if token.expires_at <= timezone.now():
            raise exceptions.AuthenticationFailed(_("Token expired; ask POST /api/v1/auth/token for a new one."))
        user = rawsql.load(user_model, row[width:])
        if not user.is_active:
            raise exceptions.AuthenticationFailed(_("User inactive or deleted."))
        token.user = user
        return (user, token)
