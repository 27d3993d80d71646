"""API tokens for operators: who holds one, since when, until when, from where. Never a
secret (only digests are stored); revoking goes through the audited service."""

from django.contrib import admin, messages

from accounts.models import ApiToken
from accounts.services import token_revoke
from tradesense.common.admin import ReadOnlyAdmin
from tradesense.common.errors import DomainError


@admin.register(ApiToken)
class ApiTokenAdmin(ReadOnlyAdmin):
    list_display = ("id", "user", "created_at", "expires_at", "created_from")
    list_select_related = ("user",)
    search_fields = ("=user__username", "=id")
    date_hierarchy = "created_at"
    fields = readonly_fields = ("user", "created_at", "expires_at", "created_from")
    actions = ["revoke_selected"]

    def has_revoke_permission(self, request):
        return request.user.has_perm("accounts.delete_apitoken")

    @admin.action(description="Revoke the selected tokens", permissions=["revoke"])
    def revoke_selected(self, request, queryset):
        revoked = 0
        for token in queryset.select_related("user"):
            try:
                token_revoke(user=token.user, token_id=token.pk, actor=request.user, reason="revoked by an operator")
                revoked += 1
            except DomainError:  # revoked meanwhile
                pass
        self.message_user(request, f"{revoked} token(s) revoked.", messages.SUCCESS)
