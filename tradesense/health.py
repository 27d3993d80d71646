"""Health endpoints (django-health-check) and /metrics (Prometheus text format)."""

from django.http import HttpResponse
from health_check.views import HealthCheckView
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

import tradesense.common.metrics  # noqa: F401 - registers the counters

# The process answers: no dependency is touched (liveness for restarts).
live = HealthCheckView.as_view(checks=())
# The database answers (readiness for the load balancer).
ready = HealthCheckView.as_view(checks=("health_check.checks.Database",))
# Every dependency: database, cache; the apps add broker, heartbeat and migrations.
full = HealthCheckView.as_view(
    checks=(
        "health_check.checks.Database",
        "health_check.checks.Cache",
    )
)


def metrics(request):
    return HttpResponse(generate_latest(), content_type=CONTENT_TYPE_LATEST)
