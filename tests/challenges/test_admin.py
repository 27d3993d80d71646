"""The operator admin: plans editable (rule edits bump the version), the rest read-only,
conflicts resolved through the service."""

from decimal import Decimal as D

import pytest
from django.contrib.admin.sites import site
from django.forms.models import model_to_dict
from django.urls import reverse

from challenges.models import Challenge, Order, Plan
from challenges.services import order_place
from tradesense.common.models import AuditEvent, Conflict


@pytest.fixture
def admin_client(client, make_user):
    user = make_user("root", is_staff=True)
    user.is_superuser = True
    user.save()
    client.force_login(user)
    return client


def plan_form(plan: Plan, **changes) -> dict:
    data = {k: ("" if v is None else v) for k, v in model_to_dict(plan).items() if k != "id"}
    data["daily_reset_time"] = plan.daily_reset_time.strftime("%H:%M:%S")
    data.update(changes)
    return {k: v for k, v in data.items() if not (isinstance(v, bool) and v is False)}


def test_editing_a_rule_bumps_the_ruleset_version_and_keeps_sold_challenges(admin_client, plans, make_challenge, trader):
    starter = plans["starter"]
    sold = make_challenge(trader, starter)
    url = reverse("admin:challenges_plan_change", args=[starter.pk])
    response = admin_client.post(url, plan_form(starter, max_daily_loss_pct="4.0000"))
    assert response.status_code == 302, response.content.decode()[:2000]
    starter.refresh_from_db()
    assert (starter.max_daily_loss_pct, starter.ruleset_version) == (D("4"), 2)
    event = AuditEvent.objects.get(action="plan.updated", object_id=str(starter.pk))
    assert event.before["max_daily_loss_pct"] == "5.0000" and event.after["max_daily_loss_pct"] == "4.0000"
    assert event.after["ruleset_version"] == 2
    sold.refresh_from_db()
    assert D(sold.rules["max_daily_loss_pct"]) == D("5") and sold.ruleset_version == 1
    assert D(make_challenge(trader, starter).rules["max_daily_loss_pct"]) == D("4")

    # A non-rule edit (the name) does not bump the version.
    response = admin_client.post(url, plan_form(starter, name="Starter+"))
    assert response.status_code == 302
    starter.refresh_from_db()
    assert (starter.name, starter.ruleset_version) == ("Starter+", 2)


def test_a_rule_set_the_engine_cannot_read_is_refused(admin_client, plans):
    starter = plans["starter"]
    url = reverse("admin:challenges_plan_change", args=[starter.pk])
    response = admin_client.post(url, plan_form(starter, daily_reset_tz="Mars/Olympus_Mons"))
    assert response.status_code == 200  # the form again, with the error
    assert "unknown IANA time zone" in response.content.decode()
    starter.refresh_from_db()
    assert (starter.daily_reset_tz, starter.ruleset_version) == ("UTC", 1)


def test_every_trading_admin_page_renders(admin_client, challenge, trader):
    order_place(challenge_id=challenge.pk, trader=trader, symbol="AAPL", side="buy", qty=D("1"))
    for model in ["plan", "challenge", "order", "ledgerentry", "instrument"]:
        assert admin_client.get(reverse(f"admin:challenges_{model}_changelist")).status_code == 200, model
    assert admin_client.get(reverse("admin:challenges_challenge_change", args=[challenge.pk])).status_code == 200
    assert admin_client.get(reverse("admin:common_auditevent_changelist")).status_code == 200
    assert admin_client.get(reverse("admin:common_conflict_changelist")).status_code == 200
    assert admin_client.get(reverse("admin:common_idempotencyrecord_changelist")).status_code == 200
    for model in [Challenge, Order]:
        assert not site._registry[model].has_change_permission(None)
        assert not site._registry[model].has_delete_permission(None)


def test_a_conflict_is_reapplied_or_discarded_from_the_admin(admin_client, challenge, place):
    assert place(challenge, headers={"If-Match": '"1"'}).status_code == 201
    assert place(challenge, "AAPL", "buy", "2", headers={"If-Match": '"1"'}, client_order_id="late").status_code == 409
    assert place(challenge, "AAPL", "buy", "3", headers={"If-Match": '"1"'}).status_code == 409
    late, other = Conflict.objects.order_by("id")
    url = reverse("admin:common_conflict_changelist")
    response = admin_client.post(url, {"action": "reapply", "_selected_action": [late.pk]})
    assert response.status_code == 302
    late.refresh_from_db()
    assert late.status == "resolved" and "re-applied as order" in late.resolution
    applied = Order.objects.get(challenge=challenge, client_order_id="late")
    assert applied.qty == D("2")
    challenge.refresh_from_db()
    assert challenge.version == 3

    admin_client.post(url, {"action": "discard", "_selected_action": [other.pk]})
    other.refresh_from_db()
    assert other.status == "resolved" and other.resolution.startswith("discarded")
    assert Order.objects.filter(challenge=challenge).count() == 2  # nothing applied for the discarded one
    assert AuditEvent.objects.filter(action="conflict.resolved").count() == 2
    # Resolving twice is refused: the decision stands.
    admin_client.post(url, {"action": "reapply", "_selected_action": [other.pk]})
    assert Order.objects.filter(challenge=challenge).count() == 2


def test_a_conflict_that_can_no_longer_apply_stays_open(admin_client, challenge, place):
    place(challenge, headers={"If-Match": '"1"'})
    place(challenge, "AAPL", "buy", "2", headers={"If-Match": '"1"'})
    Challenge.objects.filter(pk=challenge.pk).update(status="failed")
    conflict = Conflict.objects.get()
    admin_client.post(reverse("admin:common_conflict_changelist"), {"action": "reapply", "_selected_action": [conflict.pk]})
    conflict.refresh_from_db()
    assert conflict.status == "open"
    assert Order.objects.filter(challenge=challenge).count() == 1


def test_evaluate_now_action(admin_client, challenge, trader, market):
    order_place(challenge_id=challenge.pk, trader=trader, symbol="BTCUSD", side="buy", qty=D("1"))
    market("BTCUSD", D("49000.00"))  # -1,000: below both floors
    admin_client.post(
        reverse("admin:challenges_challenge_changelist"), {"action": "evaluate_now", "_selected_action": [challenge.pk]}
    )
    challenge.refresh_from_db()
    assert challenge.status == "failed" and challenge.breach.detected_by == "admin"
