"""Operators' view of payments: read-only rows; the only writes are actions that go
through a service (so they are audited like everything else)."""

from django.contrib import admin, messages

from payments import circuit, services
from payments.models import PaymentAttempt, ProcessorCircuit, Purchase, WebhookEvent
from tradesense.common.admin import ReadOnlyAdmin, user_has_model_permission


class PaymentAttemptInline(admin.TabularInline):
    model = PaymentAttempt
    extra = 0
    can_delete = False
    ordering = ["number"]
    fields = ["number", "status", "next_attempt_at", "started_at", "finished_at", "error", "may_have_charged", "charge_id"]
    readonly_fields = fields

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(Purchase)
class PurchaseAdmin(ReadOnlyAdmin):
    list_display = ["id", "trader", "plan", "amount", "currency", "status", "charge_id", "created_at", "updated_at"]
    list_filter = ["status", "payment_method", "plan"]
    search_fields = ["=id", "trader__username", "charge_id", "=processor_key"]
    list_select_related = ["trader", "plan"]
    date_hierarchy = "created_at"
    inlines = [PaymentAttemptInline]
    actions = ["reconcile_now"]

    def has_reconcile_permission(self, request):
        # Reconciling can open a challenge: those who may change purchases, not viewers.
        return user_has_model_permission(request, Purchase, "change")

    @admin.action(description="Re-run reconciliation with the processor (purchases needing review)",
                  permissions=["reconcile"])
    def reconcile_now(self, request, queryset):
        outcomes: dict[str, int] = {}
        for purchase in queryset.filter(status=Purchase.Status.NEEDS_REVIEW).order_by("id"):
            outcome = services.purchase_reconcile(purchase=purchase, actor=request.user)
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
        if not outcomes:
            self.message_user(request, "None of the selected purchases needs review.", messages.WARNING)
            return
        summary = ", ".join(f"{count} {outcome}" for outcome, count in sorted(outcomes.items()))
        self.message_user(request, f"Reconciled: {summary}.", messages.SUCCESS)


@admin.register(PaymentAttempt)
class PaymentAttemptAdmin(ReadOnlyAdmin):
    list_display = ["id", "purchase", "number", "status", "next_attempt_at", "finished_at", "may_have_charged", "error"]
    list_filter = ["status"]
    search_fields = ["=purchase__id"]
    list_select_related = ["purchase"]


@admin.register(WebhookEvent)
class WebhookEventAdmin(ReadOnlyAdmin):
    list_display = ["event_id", "type", "outcome", "purchase", "duplicates", "signed_at", "received_at"]
    list_filter = ["type", "outcome"]
    search_fields = ["event_id", "=purchase__id"]


@admin.register(ProcessorCircuit)
class ProcessorCircuitAdmin(ReadOnlyAdmin):
    list_display = ["name", "state", "consecutive_failures", "opened_at", "retry_at", "last_error", "updated_at"]
    actions = ["close_circuit"]

    def has_reset_permission(self, request):
        # Closing the circuit sends traffic to the processor again: a change, not a view.
        return user_has_model_permission(request, ProcessorCircuit, "change")

    @admin.action(description="Close the circuit now (the processor is known to be back)", permissions=["reset"])
    def close_circuit(self, request, queryset):
        circuit.circuit_reset(actor=request.user)
        self.message_user(request, "The circuit is closed.", messages.SUCCESS)
