"""/metrics: the seed's monitoring list. Counters live in tradesense/common/metrics.py;
the apps register gauges read at scrape time (risk.health: worker heartbeat age,
payments.metrics: retry queue depth); this module adds the database pool's use."""

from __future__ import annotations

from prometheus_client import REGISTRY
from prometheus_client.core import GaugeMetricFamily

import tradesense.common.metrics  # noqa: F401 - registers the counters


class DatabasePoolCollector:
    def collect(self):
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


_registered = False


def register_collectors() -> None:
    global _registered
    if _registered:
        return
    _registered = True
    import risk.health  # noqa: F401 - registers tradesense_worker_heartbeat_age_seconds
    from payments import metrics as payments_metrics

    payments_metrics.register()
    REGISTRY.register(DatabasePoolCollector())
