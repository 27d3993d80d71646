"""Token authentication in one raw statement (DRF's TokenAuthentication, same answers).

Why: DRF looks the token up with `Token.objects.select_related("user").get(key=...)`,
about 0.7 ms of Python CPU per request for the ORM to compile the join and build two
instances; every order pays it (docs/performance.md). This is the same query through the
cursor (about 0.1 ms). Nothing is cached: a deleted token or a deactivated user is
refused on the very next request, as with DRF's class.
"""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.utils.translation import gettext_lazy as _
from rest_framework import exceptions
from rest_framework.authentication import TokenAuthentication
from rest_framework.authtoken.models import Token

from tradesense.common import rawsql


class FastTokenAuthentication(TokenAuthentication):
    """`Authorization: Token <key>`, as rest_framework.authentication.TokenAuthentication."""

    def authenticate_credentials(self, key):
        if self.get_model() is not Token:  # a custom token model: DRF's own lookup
            return super().authenticate_credentials(key)
        user_model = get_user_model()
        sql = (
            f'SELECT {rawsql.select_list(Token, "t")}, {rawsql.select_list(user_model, "u")} '
            f'FROM "{Token._meta.db_table}" t JOIN "{user_model._meta.db_table}" u ON u."id" = t."user_id" '
            'WHERE t."key" = %s'
        )
        with rawsql.cursor() as cursor:
            cursor.execute(sql, [key])
            row = cursor.fetchone()
        if row is None:
            raise exceptions.AuthenticationFailed(_("Invalid token."))
        width = rawsql.width(Token)
        user = rawsql.load(user_model, row[width:])
        if not user.is_active:
            raise exceptions.AuthenticationFailed(_("User inactive or deleted."))
        token = rawsql.load(Token, row[:width])
        token.user = user
        return (user, token)
