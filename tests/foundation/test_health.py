import math
from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from prometheus_client.parser import text_string_to_metric_families

from challenges.models import Plan
from tradesense.common.models import Conflict


def sample(body: str, name: str, **labels) -> float:
    """The value of one sample in a /metrics body."""
    for family in text_string_to_metric_families(body):
        for s in family.samples:
            if s.name == name and s.labels == labels:
                return s.value
    raise AssertionError(f"{name}{labels} not in /metrics")


def test_liveness_answers_without_touching_dependencies(client):
    # No django_db mark: any database access here would raise instead of answering.
    response = client.get("/health/live", HTTP_ACCEPT="application/json")
    assert response.status_code == 200


@pytest.mark.django_db
def test_readiness_checks_the_database(client):
    response = client.get("/health/ready", HTTP_ACCEPT="application/json")
    assert response.status_code == 200
    assert "Database" in response.content.decode()


def test_metrics_are_prometheus_text_and_answer_without_the_database(client):
    # No django_db mark: the database is unreachable, as in a partition; the scrape
    # still answers and says so instead of failing.
    response = client.get("/metrics")
    assert response.status_code == 200
    body = response.content.decode()
    assert "tradesense_realtime_send_failures_total" in body
    assert sample(body, "tradesense_database_reachable") == 0
    assert math.isnan(sample(body, "tradesense_conflicts_open"))
    assert sample(body, "tradesense_worker_heartbeat_age_seconds") == -1


def test_api_schema_and_docs_are_served(client):
    schema = client.get("/api/v1/schema")
    assert schema.status_code == 200
    assert b"openapi" in schema.content
    assert client.get("/api/v1/docs").status_code == 200


@pytest.mark.django_db
def test_seed_demo_creates_the_three_tiers_and_users_idempotently():
    call_command("seed_demo")
    call_command("seed_demo")
    plans = {p.slug: p for p in Plan.objects.all()}
    assert set(plans) == {"starter", "pro", "elite"}
    assert (plans["starter"].price, plans["starter"].currency, plans["starter"].starting_balance) == (
        Decimal("200.00"),
        "MAD",
        Decimal("5000.00"),
    )
    assert (plans["pro"].price, plans["pro"].starting_balance) == (Decimal("500.00"), Decimal("15000.00"))
    assert (plans["elite"].price, plans["elite"].starting_balance) == (Decimal("1000.00"), Decimal("50000.00"))
    for plan in plans.values():
        assert (plan.max_daily_loss_pct, plan.max_total_loss_pct, plan.profit_target_pct) == (
            Decimal("5"),
            Decimal("10"),
            Decimal("10"),
        )
    User = get_user_model()
    assert User.objects.get(username="demo").check_password("demo-pass-123")
    admin = User.objects.get(username="admin")
    assert admin.is_staff and admin.check_password("admin-pass-123")
    assert User.objects.count() == 2


@pytest.mark.django_db
def test_admin_login_page_renders_with_static(client):
    response = client.get("/admin/login/")
    assert response.status_code == 200
    assert b"/static/admin/css/" in response.content
    css = client.get("/static/admin/css/base.css")
    assert css.status_code == 200


def test_api_docs_need_no_cdn(client):
    page = client.get("/api/v1/docs").content.decode()
    assert "cdn.jsdelivr" not in page
    assert "swagger-ui-bundle.js" in page


@pytest.mark.django_db
def test_metrics_carry_the_seeds_monitoring_list(client):
    body = client.get("/metrics").content.decode()
    for name in (
        "process_start_time_seconds",  # restarts
        "tradesense_db_pool_connections_in_use",
        "tradesense_db_pool_connections_max",
        "tradesense_cache_requests_total",
        "tradesense_websocket_connections",
        "tradesense_websocket_connects_total",
        "tradesense_worker_heartbeat_age_seconds",
        "tradesense_payment_retry_queue_depth",
        "tradesense_conflicts_open",
        "tradesense_database_reachable",
    ):
        assert f"# TYPE {name} " in body, name
    assert sample(body, "tradesense_database_reachable") == 1


@pytest.mark.django_db
def test_open_conflicts_are_read_at_scrape_time(client):
    assert sample(client.get("/metrics").content.decode(), "tradesense_conflicts_open") == 0
    common = dict(object_type="challenge", object_id="1", expected_version=1, actual_version=2,
                  attempted_by="alice", attempted_change={})
    Conflict.objects.create(**common)
    Conflict.objects.create(**common)
    Conflict.objects.create(**common, status=Conflict.Status.RESOLVED)
    assert sample(client.get("/metrics").content.decode(), "tradesense_conflicts_open") == 2
