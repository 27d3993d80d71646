"""The operators' admin: read-only pages, and reconciliation as an audited service call."""

from datetime import timedelta

import pytest
from django.utils import timezone

from payments import services
from payments.models import Purchase
from tradesense.common.models import AuditEvent

pytestmark = pytest.mark.django_db


@pytest.fixture
def operator(make_user, client):
    user = make_user("root", is_staff=True)
    user.is_superuser = True
    user.save()
    client.force_login(user)
    return user


@pytest.fixture
def stuck_purchase(trader, plans, processor, settings):
    """A purchase whose charge went through behind a dropped connection, past the horizon."""
    settings.PAYMENT_RETRY_HORIZON_SECONDS = 0.5
    purchase = services.purchase_create(trader=trader, plan=plans["starter"], payment_method="card",
                                        payment_token="tok_visa")
    processor.faults(drop_after_charge=True)
    services.payments_sweep()
    processor.faults(drop_after_charge=False)
    Purchase.objects.filter(pk=purchase.pk).update(created_at=timezone.now() - timedelta(seconds=10))
    services.payments_sweep()
    purchase.refresh_from_db()
    assert purchase.status == "needs_review"
    return purchase


def test_pages_render_read_only(client, operator, stuck_purchase):
    for url in ["/admin/payments/purchase/", f"/admin/payments/purchase/{stuck_purchase.pk}/change/",
                "/admin/payments/paymentattempt/", "/admin/payments/webhookevent/",
                "/admin/payments/processorcircuit/"]:
        response = client.get(url)
        assert response.status_code == 200, url
    assert client.get("/admin/payments/purchase/add/").status_code == 403
    page = client.get(f"/admin/payments/purchase/{stuck_purchase.pk}/change/").content.decode()
    assert "needs_review" in page and 'name="_save"' not in page


def test_reconcile_action_goes_through_the_service_under_the_operators_name(client, operator, stuck_purchase,
                                                                               processor):
    response = client.post("/admin/payments/purchase/", {
        "action": "reconcile_now", "_selected_action": [stuck_purchase.pk],
    }, follow=True)
    assert response.status_code == 200
    assert "Reconciled: 1 succeeded." in response.content.decode()

    stuck_purchase.refresh_from_db()
    assert stuck_purchase.status == "succeeded" and stuck_purchase.challenge is not None
    assert processor.charge_count() == 1
    event = AuditEvent.objects.get(action="purchase.succeeded", object_id=str(stuck_purchase.pk))
    assert event.actor_label == f"staff:{operator.pk}"


def test_a_trader_cannot_reach_the_admin(client, trader):
    client.force_login(trader)
    assert client.get("/admin/payments/purchase/").status_code == 302
