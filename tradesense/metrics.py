"""/metrics: the seed's monitoring list, correct however many processes serve a replica.

Two modes, chosen by the environment:
- PROMETHEUS_MULTIPROC_DIR set (gunicorn; ops/gunicorn.conf.py wipes it at start and
  marks exited workers dead): prometheus-client's multiprocess mode. Every worker writes
  its counters and gauges to files there, and the worker that answers a scrape adds them
  all up (MultiProcessCollector), so counters no longer jump with the worker that
  answers. process_start_time_seconds is the gunicorn master's, recorded by on_starting
  in REPLICA_STARTED_ENV: it describes the replica, flat across requests, changing once
  per restart (the ContainerRestartingOften alert counts those changes).
- Otherwise (uvicorn, `make run`, tests): the default registry, with its process collector.

Either way, figures read from the database (DatabaseReadings) are computed at scrape time
by the answering process on a fresh registry; they are the same from every process.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import threading
import weakref
from collections.abc import Callable, Iterable

from prometheus_client import REGISTRY, CollectorRegistry, ProcessCollector, multiprocess
from prometheus_client.core import GaugeMetricFamily, Metric

from tradesense.common.metrics import DB_POOL_IN_USE, DB_POOL_MAX

logger = logging.getLogger(__name__)

MULTIPROC_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"
REPLICA_STARTED_ENV = "TRADESENSE_REPLICA_STARTED_AT"

# A reading yields metric families; `database_reachable` is False when the probe that
# precedes the readings failed, so a reading reports "unknown" without waiting on the
# pool again (one pool timeout per scrape, not one per figure).
Reading = Callable[..., Iterable[Metric]]
_readings: dict[str, Reading] = {}


def register_reading(name: str, reading: Reading) -> None:
    """Add a scrape-time database reading to /metrics (idempotent by name)."""
    _readings[name] = reading


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROC_DIR_ENV) or None


def database_reachable() -> bool:
    from django.db import connection

    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return True
    except Exception as exc:  # noqa: BLE001 - a scrape must not fail because the database did (pool timeouts too)
        logger.warning("metrics: database unreachable: %s", exc)
        return False


class DatabaseReadings:
    """tradesense_database_reachable, then every registered reading."""

    def collect(self):
        reachable = database_reachable()
        family = GaugeMetricFamily(
            "tradesense_database_reachable", "1 when this process reached the database during the scrape."
        )
        family.add_metric([], 1.0 if reachable else 0.0)
        yield family
        for reading in list(_readings.values()):
            yield from reading(database_reachable=reachable)


def conflicts_reading(*, database_reachable: bool):
    from tradesense.common.models import Conflict

    value = math.nan
    if database_reachable:
        try:
            value = float(Conflict.objects.filter(status=Conflict.Status.OPEN).count())
        except Exception as exc:  # noqa: BLE001 - a scrape must not fail because the database blinked
            logger.warning("metrics: open conflicts unavailable: %s", exc)
    family = GaugeMetricFamily(
        "tradesense_conflicts_open", "Stale-version writes waiting for an operator's decision (NaN: unknown)."
    )
    family.add_metric([], value)
    yield family


class ReplicaStartCollector:
    """process_start_time_seconds of the replica: the gunicorn master's start."""

    def __init__(self, started_at: float):
        self.started_at = started_at

    def collect(self):
        family = GaugeMetricFamily(
            "process_start_time_seconds", "Start time of the replica (its gunicorn master) since the epoch, in seconds."
        )
        family.add_metric([], self.started_at)
        yield family


@functools.cache
def _replica_start_collector():
    raw = os.environ.get(REPLICA_STARTED_ENV)
    if raw:
        return ReplicaStartCollector(float(raw))
    # Served without ops/gunicorn.conf.py's on_starting: this process's own start is the
    # best we know (per worker under gunicorn, so restarts would be overcounted).
    logger.warning("metrics: %s is not set; process_start_time_seconds is this worker's", REPLICA_STARTED_ENV)
    return ProcessCollector(registry=None)


def scrape_registry() -> CollectorRegistry:
    """What one scrape of /metrics serves (built per scrape, as prometheus-client advises
    for multiprocess mode, so no module-level metric registers itself into it twice)."""
    registry = CollectorRegistry()
    # First: its database probe takes this worker's connection, so the pool figures
    # collected next include the scrape's own use.
    registry.register(DatabaseReadings())
    if multiprocess_dir():
        multiprocess.MultiProcessCollector(registry)
        registry.register(_replica_start_collector())
    else:
        registry.register(REGISTRY)
    return registry


# --- The database pool -----------------------------------------------------------------------------

# This process's database wrappers (one per thread) that took a pooled connection. The
# pool's own figures cannot say "in use": its size counts connections still being
# opened in the background, so an idle worker would report phantom use.
_pool_users: weakref.WeakSet = weakref.WeakSet()
_pool_users_lock = threading.Lock()
_tracking = False


def publish_pool_use(connection=None, **kwargs) -> None:
    """Set this process's in-use gauge: its database wrappers now holding a pooled
    connection. Called when a wrapper takes one (connection_created), after a request
    gave its back (request_finished) and before a scrape, so every worker's figure is
    current whichever worker answers, and the replica's is their (livesum) total."""
    if not _tracking:
        return
    with _pool_users_lock:
        if connection is not None:
            _pool_users.add(connection)
        in_use = sum(1 for wrapper in _pool_users if wrapper.connection is not None)
    DB_POOL_IN_USE.set(in_use)


def _after_request(**kwargs) -> None:
    publish_pool_use()


def track_database_pool() -> None:
    """Start publishing this process's pool figures (idempotent). The maximum comes from
    the settings, so a worker that has not served a request yet counts towards the
    replica's maximum too."""
    global _tracking
    if _tracking:
        return
    from django.conf import settings
    from django.core.signals import request_finished
    from django.db.backends.signals import connection_created

    pool_options = settings.DATABASES["default"].get("OPTIONS", {}).get("pool")
    if not pool_options:
        return  # no pool (SQLite): no figures rather than a made-up maximum
    _tracking = True
    options = pool_options if isinstance(pool_options, dict) else {}  # True: psycopg_pool's defaults
    # psycopg_pool: max_size defaults to min_size, which defaults to 4.
    DB_POOL_MAX.set(options.get("max_size") or options.get("min_size", 4))
    DB_POOL_IN_USE.set(0)
    connection_created.connect(publish_pool_use, dispatch_uid="tradesense.metrics.pool.taken")
    # Connected after Django's close_old_connections, so it runs once the connection is back.
    request_finished.connect(_after_request, dispatch_uid="tradesense.metrics.pool.returned")


def register_collectors() -> None:
    """The scrape-time readings and the pool tracking of a process serving /metrics."""
    from payments import metrics as payments_metrics
    from risk.health import worker_heartbeat_reading

    register_reading("conflicts", conflicts_reading)
    register_reading("worker_heartbeat", worker_heartbeat_reading)
    payments_metrics.register()
    track_database_pool()
