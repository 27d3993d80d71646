"""Health endpoints (django-health-check) and /metrics (Prometheus text format).

/health/live   the process answers; touches no dependency (container restarts)
/health/ready  the database answers (the load balancer's readiness)
/health/       every dependency: database, cache, broker, migrations, worker heartbeat;
               non-200 means degraded, which is not the same as down.

/health/live and /health/ready are open (load balancers probe them). /health/ and
/metrics describe our internals, so they answer only operators' machines
(METRICS_ALLOWED_NETWORKS, judged by the address our proxy saw) or a bearer
METRICS_TOKEN, and 404 to anyone else, as an unknown URL would (docs/security.md).
"""

import contextlib
import dataclasses
import functools
import hmac
import ipaddress
from concurrent.futures import ThreadPoolExecutor

from asgiref.sync import iscoroutinefunction
from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connections
from django.db.migrations.executor import MigrationExecutor
from django.http import Http404, HttpResponse
from health_check.base import HealthCheck
from health_check.exceptions import ServiceUnavailable
from health_check.views import HealthCheckView, MediaType
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from tradesense.common.clientip import client_address, is_trusted_proxy
from tradesense.metrics import publish_pool_use, register_collectors, scrape_registry


def _bearer_token_matches(request) -> bool:
    expected = settings.METRICS_TOKEN
    scheme, _, given = request.META.get("HTTP_AUTHORIZATION", "").partition(" ")
    return bool(expected) and scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), expected.encode())


def _from_allowed_network(request) -> bool:
    meta = request.META
    if not is_trusted_proxy(meta.get("REMOTE_ADDR") or "") and (
        meta.get("HTTP_X_FORWARDED_FOR") or meta.get("HTTP_FORWARDED")
    ):
        # Relayed by a proxy we do not trust (compose's nginx without TRUSTED_PROXIES, say):
        # the real client is unknown, and the relay's own private address proves nothing.
        return False
    try:
        address = ipaddress.ip_address(client_address(meta))
    except ValueError:  # no address (a unix socket): not provably ours
        return False
    address = getattr(address, "ipv4_mapped", None) or address  # ::ffff:10.0.0.5 is 10.0.0.5
    return any(address in ipaddress.ip_network(net, strict=False) for net in settings.METRICS_ALLOWED_NETWORKS)


def operations_access_allowed(request) -> bool:
    """May this request read /metrics and the full /health/?"""
    return _bearer_token_matches(request) or _from_allowed_network(request)


def operators_only(view):
    """404 (what an unknown URL answers) unless operations_access_allowed: nothing advertised."""
    if iscoroutinefunction(view):

        @functools.wraps(view)
        async def guarded_async(request, *args, **kwargs):
            if not operations_access_allowed(request):
                raise Http404()
            return await view(request, *args, **kwargs)

        return guarded_async

    @functools.wraps(view)
    def guarded(request, *args, **kwargs):
        if not operations_access_allowed(request):
            raise Http404()
        return view(request, *args, **kwargs)

    return guarded


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


class _ConnectionClosingExecutor(ThreadPoolExecutor):
    """Runs each synchronous check in a thread, then gives that thread's database
    connection back. With the loop's default executor (a new one per request under WSGI)
    every ORM-reading check kept a pooled connection in a thread that then ended: three
    /health/ calls emptied a worker's pool of 10, and the replica failed every request."""

    def submit(self, fn, /, *args, **kwargs):
        def run():
            try:
                return fn(*args, **kwargs)
            finally:
                connections.close_all()

        return super().submit(run)


class HealthView(HealthCheckView):
    """django-health-check's view, answering what a load balancer and API.md expect:
    503 (not 500) when a dependency is down, and a malformed Accept header read as */*
    (RFC 9110 lets a server ignore it) instead of its parser's ValueError, a 500."""

    async def get(self, request, *args, **kwargs):
        try:
            list(MediaType.parse_header(request.META.get("HTTP_ACCEPT", "*/*")))
        except ValueError:
            request.META["HTTP_ACCEPT"] = "*/*"
            request.__dict__.pop("headers", None)  # HttpRequest.headers is cached
        response = await super().get(request, *args, **kwargs)
        if response.status_code == 500:
            response.status_code = 503
        return response


class FullHealthCheckView(HealthView):
    @contextlib.contextmanager
    def get_executor(self):
        executor = _ConnectionClosingExecutor(max_workers=4, thread_name_prefix="health")
        try:
            yield executor
        finally:
            # A check past its timeout finishes (and closes) on its own; the answer does not wait.
            executor.shutdown(wait=False)


live = HealthView.as_view(checks=())
ready = HealthView.as_view(checks=("health_check.checks.Database",))
full = operators_only(
    FullHealthCheckView.as_view(
        checks=(
            "health_check.checks.Database",
            "health_check.checks.Cache",
            Migrations,
            *_broker_checks(),
            "risk.health.WorkerHeartbeatCheck",
            "risk.health.RiskSweepCheck",
        )
    )
)

register_collectors()


@operators_only
def metrics(request):
    """Prometheus text; the figures and the modes are explained in tradesense/metrics.py."""
    publish_pool_use()
    return HttpResponse(generate_latest(scrape_registry()), content_type=CONTENT_TYPE_LATEST)
