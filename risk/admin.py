"""Read-only admin for what the risk engine recorded, and the preset actions for plans.

The Plan admin lives in challenges/admin.py; the risk engine extends it here with its
rule presets (the allowed direction: risk imports challenges, never the reverse), declared
in `actions` so that Django filters them by their allowed_permissions (the plan change
permission). Every write goes through risk.services.plan_apply_rule_preset, so it is audited.
"""

from django.contrib import admin, messages

from challenges.admin import PlanAdmin
from challenges.models import Plan
from risk.models import RiskWarning, SweepTick, WorkerHeartbeat
from risk.presets import RULE_PRESETS
from risk.services import plan_apply_rule_preset
from tradesense.common.admin import ReadOnlyAdmin


@admin.register(RiskWarning)
class RiskWarningAdmin(ReadOnlyAdmin):
    list_display = ("id", "challenge", "rule", "level", "trading_day", "used_pct", "equity", "floor", "created_at")
    list_filter = ("rule", "level", "detected_by")
    search_fields = ("challenge__id",)
    date_hierarchy = "created_at"


@admin.register(SweepTick)
class SweepTickAdmin(ReadOnlyAdmin):
    list_display = (
        "tick", "started_at", "duration_ms", "evaluated", "marked", "locked", "failed", "passed", "warnings",
        "deadline_hit", "worker",
    )
    list_filter = ("deadline_hit",)


@admin.register(WorkerHeartbeat)
class WorkerHeartbeatAdmin(ReadOnlyAdmin):
    list_display = ("worker", "pid", "started_at", "beat_at")


def _make_preset_action(preset: str):
    def action(modeladmin, request, queryset):
        for plan in queryset:
            plan_apply_rule_preset(plan=plan, preset=preset, actor=request.user)
        modeladmin.message_user(
            request, f"Preset {preset} applied to {queryset.count()} plan(s).", level=messages.SUCCESS
        )

    action.__name__ = f"apply_rule_preset_{preset}"
    action.short_description = f"Apply preset: {RULE_PRESETS[preset]['label']}"
    # A preset rewrites the plan's rules: only for those who may change plans (the
    # ModelAdmin's has_change_permission), never for a view-only operator.
    action.allowed_permissions = ("change",)
    return action


def rule_preset_actions() -> list:
    return [_make_preset_action(name) for name in RULE_PRESETS]


class PlanWithPresetsAdmin(PlanAdmin):
    actions = [*PlanAdmin.actions, *rule_preset_actions()]


admin.site.unregister(Plan)
admin.site.register(Plan, PlanWithPresetsAdmin)
