"""Health checks (django-health-check) and a /metrics reading for the risk engine.

Wire into /health/ with
    "risk.health.WorkerHeartbeatCheck"   -- a worker wrote its heartbeat row recently
    "risk.health.RiskSweepCheck"         -- a sweep finished recently (beat + broker + worker)
Both read the database only; a stale heartbeat is ServiceUnavailable, a slow sweep a
ServiceWarning (the web still serves and trades; risk monitoring lags).
"""

from __future__ import annotations

import dataclasses
import datetime

from django.utils import timezone
from health_check.base import HealthCheck
from health_check.exceptions import ServiceUnavailable, ServiceWarning
from prometheus_client.core import GaugeMetricFamily

from risk.selectors import sweep_tick_last_finished, worker_heartbeat_latest_at

# Heartbeats are written every 5 s (risk.heartbeat.HEARTBEAT_SECONDS): 30 s is six missed.
HEARTBEAT_MAX_AGE = datetime.timedelta(seconds=30)
SWEEP_MAX_AGE = datetime.timedelta(seconds=60)


def worker_heartbeat_age_seconds(*, now: datetime.datetime | None = None) -> float | None:
    latest = worker_heartbeat_latest_at()
    if latest is None:
        return None
    return max(0.0, ((now or timezone.now()) - latest).total_seconds())


@dataclasses.dataclass
class WorkerHeartbeatCheck(HealthCheck):
    """The newest worker heartbeat row is younger than `max_age`."""

    max_age: datetime.timedelta = HEARTBEAT_MAX_AGE

    def run(self):
        age = worker_heartbeat_age_seconds()
        if age is None:
            raise ServiceUnavailable("No Celery worker has ever reported a heartbeat.")
        if age > self.max_age.total_seconds():
            raise ServiceUnavailable(f"The newest Celery worker heartbeat is {age:.0f} s old.")


@dataclasses.dataclass
class RiskSweepCheck(HealthCheck):
    """A risk sweep finished within `max_age` (beat scheduled it, a worker ran it)."""

    max_age: datetime.timedelta = SWEEP_MAX_AGE

    def run(self):
        last = sweep_tick_last_finished()
        if last is None:
            raise ServiceWarning("No risk sweep has finished yet.")
        age = (timezone.now() - last.finished_at).total_seconds()
        if age > self.max_age.total_seconds():
            raise ServiceWarning(f"The last risk sweep finished {age:.0f} s ago.")


def worker_heartbeat_reading(*, database_reachable: bool):
    """tradesense_worker_heartbeat_age_seconds for /metrics, read at scrape time; -1 when
    unknown (no row, or no database), so an alert can tell "never reported" from "fresh"."""
    age = None
    if database_reachable:
        try:
            age = worker_heartbeat_age_seconds()
        except Exception:  # noqa: BLE001 - a scrape must not fail because the database did
            age = None
    family = GaugeMetricFamily(
        "tradesense_worker_heartbeat_age_seconds",
        "Seconds since the newest Celery worker heartbeat row (-1: none or unknown).",
    )
    family.add_metric([], -1.0 if age is None else age)
    yield family
