"""Health endpoints (django-health-check) and /metrics (Prometheus text format).

/health/live   the process answers; touches no dependency (container restarts)
/health/ready  the database answers (the load balancer's readiness)
/health/       every dependency: database, cache, broker, migrations, worker heartbeat;
               non-200 means degraded, which is not the same as down.
"""

import dataclasses

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connections
from django.db.migrations.executor import MigrationExecutor
from django.http import HttpResponse
from health_check.base import HealthCheck
from health_check.exceptions import ServiceUnavailable
from health_check.views import HealthCheckView
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from tradesense.metrics import publish_pool_use, register_collectors, scrape_registry


@dataclasses.dataclass
class Migrations(HealthCheck):
    """Every migration on disk is applied (a deploy that skipped migrate is degraded)."""

    def run(self):
        connection = connections[DEFAULT_DB_ALIAS]
        executor = MigrationExecutor(connection)
        plan = executor.migration_plan(executor.loader.graph.leaf_nodes())
        if plan:
            raise ServiceUnavailable(f"{len(plan)} unapplied migrations")


def _broker_checks() -> tuple:
    if not settings.REDIS_URL:
        return ()
    from redis.asyncio import Redis as RedisClient

    url = settings.REDIS_URL
    return (
        (
            "health_check.contrib.redis.Redis",
            {"client_factory": lambda: RedisClient.from_url(url, socket_connect_timeout=0.5, socket_timeout=0.5)},
        ),
    )


live = HealthCheckView.as_view(checks=())
ready = HealthCheckView.as_view(checks=("health_check.checks.Database",))
full = HealthCheckView.as_view(
    checks=(
        "health_check.checks.Database",
        "health_check.checks.Cache",
        Migrations,
        *_broker_checks(),
        "risk.health.WorkerHeartbeatCheck",
        "risk.health.RiskSweepCheck",
    )
)

register_collectors()


def metrics(request):
    """Prometheus text; the figures and the modes are explained in tradesense/metrics.py."""
    publish_pool_use()
    return HttpResponse(generate_latest(scrape_registry()), content_type=CONTENT_TYPE_LATEST)
