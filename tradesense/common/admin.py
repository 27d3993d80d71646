"""The audit trail and idempotency records: read-only in the admin (append-only data).

The Conflict admin lives in challenges/admin.py, beside the services that resolve them."""

from django.contrib import admin

from tradesense.common.models import AuditEvent, IdempotencyRecord


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
