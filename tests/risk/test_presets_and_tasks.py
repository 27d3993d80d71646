"""Rule presets applied to plans, and the Celery tasks run in-process (task.apply)."""

from datetime import time
from decimal import Decimal

import pytest
from django.core.management import call_command

from challenges.models import Challenge, Plan
from risk.models import SweepTick
from risk.presets import RULE_PRESETS
from risk.rules import RuleSet
from risk.services import plan_apply_rule_preset
from risk.tasks import risk_daily_reset, risk_sweep, sweep_interval_seconds
from tests.risk.factories import Group, bulk_open_challenges
from tradesense.common.errors import InvalidInput
from tradesense.common.models import AuditEvent

pytestmark = pytest.mark.django_db


def test_presets_are_valid_rule_data():
    assert set(RULE_PRESETS) == {"tradesense", "ftmo_like", "fivers_like"}
    assert RULE_PRESETS["tradesense"]["rules"]["daily_reset_tz"] == "UTC"
    assert RULE_PRESETS["ftmo_like"]["rules"]["daily_reset_tz"] == "Europe/Prague"
    assert RULE_PRESETS["fivers_like"]["rules"]["daily_reset_time"] == time(17, 0)


def test_apply_preset_versions_the_plan_and_spares_sold_challenges(plans, make_challenge, trader, staff):
    plan = plans["pro"]
    sold = make_challenge(trader, plan)
    updated = plan_apply_rule_preset(plan=plan, preset="fivers_like", actor=staff)
    assert (updated.daily_reset_tz, updated.daily_reset_time, updated.daily_anchor) == (
        "America/New_York", time(17, 0), "higher",
    )
    assert updated.ruleset_version == 2
    rules = RuleSet.from_snapshot(Plan.objects.get(pk=plan.pk).rules_snapshot())
    assert rules.daily_reset_time == time(17, 0) and rules.ruleset_version == 2
    # The challenge sold before keeps the rule set it was bought with.
    sold.refresh_from_db()
    assert sold.rules["daily_reset_tz"] == "UTC" and sold.ruleset_version == 1
    event = AuditEvent.objects.get(action="plan.rules_preset_applied")
    assert event.actor_label == f"staff:{staff.pk}" and event.after["ruleset_version"] == 2
    # Applying it again changes nothing.
    assert plan_apply_rule_preset(plan=plan, preset="fivers_like", actor=staff).ruleset_version == 2
    assert AuditEvent.objects.filter(action="plan.rules_preset_applied").count() == 1


def test_unknown_preset_is_refused_naming_the_field(plans):
    with pytest.raises(InvalidInput) as err:
        plan_apply_rule_preset(plan=plans["pro"], preset="nope")
    assert err.value.fields == {"preset": ["Unknown preset."]}


def test_management_command(plans, capsys):
    call_command("risk_apply_preset", "elite", "ftmo_like")
    assert "ruleset v2" in capsys.readouterr().out
    assert Plan.objects.get(slug="elite").daily_reset_tz == "Europe/Prague"


def test_sweep_task_runs_once_per_tick(plans, instrument, set_price):
    ids = bulk_open_challenges(plan=plans["starter"], instrument=instrument, groups=[Group("x", 2, Decimal("2"))])
    set_price("RSKTEST", "700.00")
    first = risk_sweep.apply(kwargs={"tick": 123_000}).get()
    assert first == {"tick": 123_000, "evaluated": 2, "failed": 2, "warnings": 0}
    assert risk_sweep.apply(kwargs={"tick": 123_000}).get() is None
    assert set(Challenge.objects.filter(status="failed").values_list("id", flat=True)) == set(ids["x"])
    assert SweepTick.objects.count() == 1
    # Without a tick it takes now floored to the interval.
    assert risk_sweep.apply().get()["tick"] % int(sweep_interval_seconds() * 1000) == 0


def test_daily_reset_task(plans, instrument):
    assert risk_daily_reset.apply().get() == {"challenges": 0, "anchors": 0, "deadline_hit": False}


def test_tasks_are_acks_late_because_idempotent():
    assert risk_sweep.acks_late and risk_daily_reset.acks_late
