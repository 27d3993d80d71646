"""Gauges read at scrape time for the seed's monitoring list: database pool use, worker
heartbeat age and the payment retry queue depth. Counters live in common/metrics.py."""

from __future__ import annotations

import logging

from prometheus_client import REGISTRY
from prometheus_client.core import GaugeMetricFamily

import tradesense.common.metrics  # noqa: F401 - registers the counters

logger = logging.getLogger(__name__)


class TradeSenseCollector:
    def collect(self):
        yield from self._pool()
        yield from self._from_database()

    def _pool(self):
        from django.db import connection

        pool = getattr(connection, "pool", None)
        if pool is None:
            return
        stats = pool.get_stats()
        in_use = GaugeMetricFamily("tradesense_db_pool_connections_in_use", "Pooled database connections checked out.")
        in_use.add_metric([], stats.get("pool_size", 0) - stats.get("pool_available", 0))
        yield in_use
        size = GaugeMetricFamily("tradesense_db_pool_connections_max", "Largest size of the database connection pool.")
        size.add_metric([], pool.max_size)
        yield size

    def _from_database(self):
        try:
            from payments.selectors import payment_retry_queue_depth
            from risk.selectors import worker_heartbeat_age_seconds
        except ImportError:
            return
        try:
            age = worker_heartbeat_age_seconds()
            depth = payment_retry_queue_depth()
        except Exception as exc:  # noqa: BLE001 - a scrape must not fail when the database is away
            logger.warning("metrics: database gauges unavailable: %s", exc)
            return
        heartbeat = GaugeMetricFamily(
            "tradesense_worker_heartbeat_age_seconds", "Seconds since the newest Celery worker heartbeat."
        )
        heartbeat.add_metric([], age if age is not None else float("inf"))
        yield heartbeat
        queue = GaugeMetricFamily("tradesense_payment_retry_queue_depth", "Purchases waiting for a charge attempt.")
        queue.add_metric([], depth)
        yield queue


_registered = False


def register_collector() -> None:
    global _registered
    if not _registered:
        REGISTRY.register(TradeSenseCollector())
        _registered = True
