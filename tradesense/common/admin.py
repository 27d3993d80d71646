"""The audit trail and idempotency records: read-only in the admin (append-only data).

The Conflict admin lives in challenges/admin.py, beside the services that resolve them."""

from django.contrib import admin
from django.contrib.auth import get_permission_codename

from tradesense.common.models import AuditEvent, IdempotencyRecord


def user_has_model_permission(request, model, action: str) -> bool:
    """Whether the operator holds Django's `<action>_<model>` permission (change, say).

    Admin actions check this rather than ModelAdmin.has_change_permission, which the
    read-only admins answer False for everybody: the permission names the role (who may
    resolve a conflict, reconcile a purchase), the read-only page says how it is done."""
    opts = model._meta
    return request.user.has_perm(f"{opts.app_label}.{get_permission_codename(action, opts)}")


class ReadOnlyAdmin(admin.ModelAdmin):
    """View-only pages: operators change data only through actions that call a service,
    so every write is audited like any other."""

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class ReadOnlyInline(admin.TabularInline):
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    list_display = ("id", "created_at", "action", "object_type", "object_id", "actor_label", "reason")
    list_filter = ("action", "object_type")
    search_fields = ("=object_id", "actor_label", "action")
    date_hierarchy = "created_at"
    readonly_fields = ("created_at", "actor", "actor_label", "action", "object_type", "object_id", "before", "after", "reason")
    # The table grows without bound: no full COUNT(*) on every page.
    show_full_result_count = False


@admin.register(IdempotencyRecord)
class IdempotencyRecordAdmin(ReadOnlyAdmin):
    list_display = ("id", "created_at", "scope", "key", "status_code")
    search_fields = ("=key", "scope")
    date_hierarchy = "created_at"
    show_full_result_count = False
