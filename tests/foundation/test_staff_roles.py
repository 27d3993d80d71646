"""Staff roles (issue 11): being staff lets an operator read; each write is a permission of
its own. Setting a price needs challenges.set_price; every admin action needs a model
permission, so a view-only operator sees no action and cannot post one."""

from __future__ import annotations

from decimal import Decimal as D

import pytest
from django.contrib.admin.sites import site
from django.contrib.auth.models import Permission
from django.test import Client, RequestFactory
from django.urls import reverse

from challenges.models import Challenge, Instrument, Plan
from challenges.services import order_place
from payments.models import ProcessorCircuit, Purchase
from tests.live.fixtures import catalogue  # noqa: F401 - the instrument catalogue, EURUSD fresh
from tradesense.common.models import AuditEvent, Conflict

pytestmark = pytest.mark.django_db

OUR_APPS = {"challenges", "payments", "risk", "common"}


def grant(user, *perms: str):
    for perm in perms:
        app_label, codename = perm.split(".")
        user.user_permissions.add(Permission.objects.get(content_type__app_label=app_label, codename=codename))
    return type(user).objects.get(pk=user.pk)  # a fresh instance: has_perm caches


def view_permissions() -> list[str]:
    return [
        f"{p.content_type.app_label}.{p.codename}"
        for p in Permission.objects.filter(content_type__app_label__in=OUR_APPS, codename__startswith="view_")
    ]


@pytest.fixture
def viewer(make_user):
    """An operator who may read every page of our apps and change nothing."""
    return grant(make_user("viewer", is_staff=True), *view_permissions())


def request_by(user):
    request = RequestFactory().get("/admin/")
    request.user = user
    return request


def logged_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def our_model_admins():
    return [(model, admin) for model, admin in site._registry.items() if model._meta.app_label in OUR_APPS]


# --- the price-setting API -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "is_staff, perms, expected",
    [
        (True, (), 403),  # staff alone no longer moves markets
        (True, ("challenges.view_instrument", "challenges.change_instrument"), 403),  # nor does editing instruments
        (False, ("challenges.set_price",), 200),  # the role, not the staff flag, is what counts
        (True, ("challenges.set_price",), 200),
    ],
)
def test_setting_a_price_needs_the_set_price_permission(client_for, make_user, catalogue, is_staff, perms, expected):  # noqa: F811
    user = grant(make_user("mover", is_staff=is_staff), *perms)
    before = Instrument.objects.get(symbol="EURUSD").price
    response = client_for(user).put("/api/v1/market/prices/EURUSD", {"price": "1.23456"}, format="json")
    assert response.status_code == expected, response.content
    price = Instrument.objects.get(symbol="EURUSD").price
    moved = AuditEvent.objects.filter(action="market.price_set", actor=user)
    if expected == 200:
        assert price == D("1.23456") and moved.count() == 1
    else:
        assert price == before and not moved.exists()


def test_other_write_methods_on_a_price_are_refused_before_they_are_unknown(client_for, make_user, catalogue):  # noqa: F811
    # Only those allowed to write learn that POST does not exist (405); others get 403.
    mover = grant(make_user("mover", is_staff=True), "challenges.set_price")
    plain = make_user("plainstaff", is_staff=True)
    assert client_for(plain).post("/api/v1/market/prices/EURUSD", {"price": "1"}, format="json").status_code == 403
    assert client_for(mover).post("/api/v1/market/prices/EURUSD", {"price": "1"}, format="json").status_code == 405


# --- admin actions ----------------------------------------------------------------------------------------


def test_every_admin_action_of_our_apps_declares_a_permission():
    """A new action without allowed_permissions would run for anyone who can see its list."""
    missing = []
    for model, admin in our_model_admins():
        for func, name, _ in admin._get_base_actions():
            allowed = getattr(func, "allowed_permissions", ())
            if not allowed or "view" in allowed:
                missing.append(f"{model._meta.label}.{name}")
            for perm in allowed:
                assert callable(getattr(admin, f"has_{perm}_permission", None)), f"{model._meta.label}.{name}: {perm}"
    assert not missing, f"actions without a write permission: {missing}"


def test_a_view_only_operator_sees_every_list_and_no_action(viewer, make_challenge, trader):
    make_challenge(trader, "starter")
    client = logged_in(viewer)
    request = request_by(viewer)
    checked = 0
    for model, admin in our_model_admins():
        opts = model._meta
        response = client.get(reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist"))
        assert response.status_code == 200, opts.label
        assert admin.get_actions(request) == {}, opts.label
        assert 'name="action"' not in response.content.decode(), opts.label
        checked += 1
    assert checked >= 10  # plans, challenges, orders, ledger, instruments, conflicts, payments, risk...


@pytest.fixture
def losing_challenge(make_challenge, trader, catalogue):  # noqa: F811
    """An active challenge whose open position is through its daily floor at current prices."""
    challenge = make_challenge(trader, "starter")  # 5,000.00; daily floor 4,750.00
    order_place(challenge_id=challenge.pk, trader=trader, symbol="EURUSD", side="buy", qty=D("1"))
    catalogue("EURUSD", "1.09000")  # -0.01 x 100,000 = -1,000.00
    return challenge


def post_action(client: Client, model, action: str, pks: list[int]):
    opts = model._meta
    return client.post(
        reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist"), {"action": action, "_selected_action": pks}
    )


def test_evaluate_now_is_refused_to_a_viewer_and_runs_for_a_challenge_changer(viewer, make_user, losing_challenge):
    response = post_action(logged_in(viewer), Challenge, "evaluate_now", [losing_challenge.pk])
    assert response.status_code == 200  # the list again: no action ran
    losing_challenge.refresh_from_db()
    assert losing_challenge.status == "active"

    evaluator = grant(make_user("evaluator", is_staff=True), "challenges.view_challenge", "challenges.change_challenge")
    response = post_action(logged_in(evaluator), Challenge, "evaluate_now", [losing_challenge.pk])
    assert response.status_code == 302
    losing_challenge.refresh_from_db()
    assert losing_challenge.status == "failed" and losing_challenge.breach.detected_by == "admin"


def open_conflict() -> Conflict:
    return Conflict.objects.create(
        object_type="challenges.challenge", object_id="1", expected_version=1, actual_version=2,
        attempted_by="alice", attempted_change={},
    )


@pytest.mark.parametrize("action", ["reapply", "discard"])
def test_resolving_a_conflict_needs_the_conflict_change_permission(viewer, make_user, action):
    conflict = open_conflict()
    post_action(logged_in(viewer), Conflict, action, [conflict.pk])
    conflict.refresh_from_db()
    assert conflict.status == "open" and not AuditEvent.objects.filter(action="conflict.resolved").exists()

    resolver = grant(make_user("resolver", is_staff=True), "common.view_conflict", "common.change_conflict")
    post_action(logged_in(resolver), Conflict, "discard", [conflict.pk])
    conflict.refresh_from_db()
    assert conflict.status == "resolved"
    assert AuditEvent.objects.get(action="conflict.resolved").actor == resolver


def test_closing_the_processor_circuit_needs_its_change_permission(viewer, make_user):
    circuit = ProcessorCircuit.objects.create(name="processor", state="open", consecutive_failures=7)
    post_action(logged_in(viewer), ProcessorCircuit, "close_circuit", [circuit.pk])
    circuit.refresh_from_db()
    assert circuit.state == "open"

    operator = grant(
        make_user("payops", is_staff=True), "payments.view_processorcircuit", "payments.change_processorcircuit"
    )
    response = post_action(logged_in(operator), ProcessorCircuit, "close_circuit", [circuit.pk])
    assert response.status_code == 302
    circuit.refresh_from_db()
    assert circuit.state == "closed"
    assert AuditEvent.objects.get(action="processor_circuit.closed").actor == operator


def test_reconciling_needs_the_purchase_change_permission(viewer, make_user):
    # The action itself runs against the processor: tests/payments/test_admin.py runs it
    # end to end for an operator with this permission.
    purchases = site._registry[Purchase]
    assert "reconcile_now" not in purchases.get_actions(request_by(viewer))
    reconciler = grant(make_user("reconciler", is_staff=True), "payments.view_purchase", "payments.change_purchase")
    assert "reconcile_now" in purchases.get_actions(request_by(reconciler))


def test_a_rule_preset_needs_the_plan_change_permission(viewer, make_user, plans):
    editor = grant(make_user("planner", is_staff=True), "challenges.view_plan", "challenges.change_plan")
    preset = "apply_rule_preset_fivers_like"  # differs from the seeded plans' rules: it changes them
    assert preset in site._registry[Plan].get_actions(request_by(editor))
    assert not site._registry[Plan].get_actions(request_by(viewer))
    starter = plans["starter"]
    post_action(logged_in(viewer), Plan, preset, [starter.pk])
    starter.refresh_from_db()
    assert starter.ruleset_version == 1

    assert post_action(logged_in(editor), Plan, preset, [starter.pk]).status_code == 302
    starter.refresh_from_db()
    assert starter.ruleset_version == 2
    assert AuditEvent.objects.filter(object_id=str(starter.pk), actor=editor).exists()

