"""Operator admin for plans, challenges, orders, the ledger, instruments and conflicts.

Read-mostly: the only writes are plan edits and conflict decisions, and both go through
services (plan_save, conflict_resolve), so they are audited like any other change."""

from django import forms
from django.contrib import admin, messages
from django.db import transaction
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html

from challenges.models import Breach, Challenge, DailyAnchor, Instrument, LedgerEntry, Order, Plan, Position
from challenges.services import (
    ConflictDecision,
    challenge_evaluate_locked,
    conflict_resolve,
    plan_save,
)
from tradesense.common.admin import ReadOnlyAdmin, ReadOnlyInline, user_has_model_permission
from tradesense.common.errors import DomainError
from tradesense.common.models import Conflict


class PlanForm(forms.ModelForm):
    class Meta:
        model = Plan
        fields = (
            "slug", "name", "description", "is_active", "sort_order", "price", "currency", "starting_balance",
            "account_currency", *Plan.RULE_FIELDS,
        )

    def clean(self):
        cleaned = super().clean()
        # The rules are evaluated on every fill: a rule set the risk engine cannot read
        # (an unknown time zone, say) is refused here, not discovered by a trader's order.
        from risk.rules import RuleSet, RuleSetError

        candidate = Plan(**{name: cleaned.get(name) for name in Plan.RULE_FIELDS})
        try:
            RuleSet.from_snapshot(candidate.rules_snapshot())
        except RuleSetError as exc:
            raise forms.ValidationError(str(exc)) from None
        return cleaned


@admin.register(Plan)
class PlanAdmin(admin.ModelAdmin):
    form = PlanForm
    list_display = (
        "slug", "name", "price", "currency", "starting_balance", "profit_target_pct", "max_daily_loss_pct",
        "max_total_loss_pct", "min_trading_days", "daily_reset_tz", "ruleset_version", "is_active",
    )
    list_filter = ("is_active", "currency", "max_loss_mode", "daily_anchor")
    search_fields = ("slug", "name")
    readonly_fields = ("ruleset_version", "created_at", "updated_at")
    fieldsets = (
        (None, {"fields": ("slug", "name", "description", "is_active", "sort_order")}),
        ("Price", {"fields": ("price", "currency", "starting_balance", "account_currency")}),
        (
            "Rules (editing any of these bumps the rule-set version; challenges keep the version they bought)",
            {"fields": Plan.RULE_FIELDS},
        ),
        ("Record", {"fields": ("ruleset_version", "created_at", "updated_at")}),
    )
    # The risk engine adds its rule-preset actions to this admin from risk/admin.py
    # (PlanWithPresetsAdmin): trading does not import the monitor (docs/design.md).

    def save_model(self, request, obj, form, change):
        plan_save(plan=obj, actor=request.user)

    def has_delete_permission(self, request, obj=None):
        return False  # challenges reference plans; retire one with is_active instead


class PositionInline(ReadOnlyInline):
    model = Position
    fields = ("instrument", "qty", "avg_entry_price", "opened_at")
    readonly_fields = fields


class BreachInline(admin.StackedInline):
    model = Breach
    extra = 0
    can_delete = False
    readonly_fields = (
        "rule", "threshold", "observed", "message", "prices", "at", "ruleset_version", "detected_by", "inputs",
    )
    fields = readonly_fields

    def has_add_permission(self, request, obj=None):
        return False


class AnchorInline(ReadOnlyInline):
    model = DailyAnchor
    fields = ("day", "reset_at", "balance", "equity", "anchor")
    readonly_fields = fields
    show_change_link = False
    max_num = 0


@admin.register(Challenge)
class ChallengeAdmin(ReadOnlyAdmin):
    list_display = (
        "id", "trader", "plan", "status", "balance", "equity", "trading_days", "version", "created_at", "ended_at",
    )
    list_filter = ("status", "plan")
    search_fields = ("=id", "trader__username", "source_ref")
    date_hierarchy = "created_at"
    list_select_related = ("trader", "plan")
    inlines = (BreachInline, PositionInline, AnchorInline)
    readonly_fields = ("orders_link", "ledger_link", "audit_link")
    actions = ("evaluate_now",)

    def has_change_permission(self, request, obj=None):
        # Viewing, not editing: the change form is rendered read-only (view permission).
        return False

    def has_evaluate_permission(self, request):
        # An evaluation can fail a trader: those who may change challenges, not viewers.
        return user_has_model_permission(request, Challenge, "change")

    @admin.display(description="Orders")
    def orders_link(self, obj):
        return format_html('<a href="{}?challenge__id__exact={}">orders</a>', reverse("admin:challenges_order_changelist"), obj.pk)

    @admin.display(description="Ledger")
    def ledger_link(self, obj):
        return format_html(
            '<a href="{}?challenge__id__exact={}">ledger</a>', reverse("admin:challenges_ledgerentry_changelist"), obj.pk
        )

    @admin.display(description="Audit trail")
    def audit_link(self, obj):
        return format_html(
            '<a href="{}?object_type=challenges.challenge&object_id={}">audit events</a>',
            reverse("admin:common_auditevent_changelist"),
            obj.pk,
        )

    @admin.action(description="Evaluate now at current prices (the risk rules, as the sweep does)",
                  permissions=["evaluate"])
    def evaluate_now(self, request, queryset):
        outcomes = []
        for challenge_id in queryset.filter(status=Challenge.Status.ACTIVE).values_list("pk", flat=True):
            with transaction.atomic():
                challenge = Challenge.objects.select_for_update().get(pk=challenge_id)
                verdict = challenge_evaluate_locked(
                    challenge=challenge, prices={}, now=timezone.now(), detected_by="admin"
                )
            outcomes.append(f"#{challenge_id}: {verdict.outcome}")
        self.message_user(request, "; ".join(outcomes) or "No active challenge selected.")


@admin.register(Order)
class OrderAdmin(ReadOnlyAdmin):
    list_display = (
        "id", "challenge", "client_order_id", "instrument", "side", "qty", "filled_avg_price", "realized_pl", "reason",
        "filled_at",
    )
    list_filter = ("side", "reason", "instrument")
    search_fields = ("=challenge__id", "client_order_id")
    list_select_related = ("instrument",)
    date_hierarchy = "filled_at"


@admin.register(LedgerEntry)
class LedgerEntryAdmin(ReadOnlyAdmin):
    list_display = ("id", "challenge", "kind", "amount", "balance_after", "order", "memo", "created_at")
    list_filter = ("kind",)
    search_fields = ("=challenge__id", "memo")
    date_hierarchy = "created_at"


@admin.register(Instrument)
class InstrumentAdmin(ReadOnlyAdmin):
    list_display = ("symbol", "name", "asset_class", "price", "price_at", "contract_size", "qty_step", "sim_step", "is_active")
    list_filter = ("asset_class", "is_active")


@admin.register(Conflict)
class ConflictAdmin(ReadOnlyAdmin):
    """Writes that met a newer version and were refused. An operator re-applies the
    attempted change on the current state (through the same service and checks) or
    discards it; either way the decision is audited."""

    list_display = (
        "id", "created_at", "object_type", "object_id", "expected_version", "actual_version", "attempted_by", "status",
        "resolved_at",
    )
    list_filter = ("status", "object_type")
    search_fields = ("object_id", "attempted_by")
    readonly_fields = (
        "created_at", "object_type", "object_id", "expected_version", "actual_version", "attempted_by",
        "attempted_change", "status", "resolution", "resolved_at",
    )
    actions = ("reapply", "discard")

    def has_resolve_permission(self, request):
        return user_has_model_permission(request, Conflict, "change")

    def _decide(self, request, queryset, decision: str):
        done, refused = 0, []
        for conflict_id in queryset.filter(status=Conflict.Status.OPEN).values_list("pk", flat=True):
            try:
                conflict_resolve(
                    conflict_id=conflict_id,
                    decision=decision,
                    actor=request.user,
                    note=f"by {request.user.get_username()} in the admin",
                )
                done += 1
            except DomainError as exc:
                refused.append(f"#{conflict_id}: {exc.message}")
        if done:
            self.message_user(request, f"{done} conflict(s) resolved ({decision}).", level=messages.SUCCESS)
        if refused:
            self.message_user(request, "Not resolved: " + " ".join(refused), level=messages.ERROR)

    @admin.action(description="Re-apply the attempted change on the current version", permissions=["resolve"])
    def reapply(self, request, queryset):
        self._decide(request, queryset, ConflictDecision.REAPPLY)

    @admin.action(description="Discard the attempted change", permissions=["resolve"])
    def discard(self, request, queryset):
        self._decide(request, queryset, ConflictDecision.DISCARD)
