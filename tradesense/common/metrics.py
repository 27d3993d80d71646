"""Prometheus metrics named in the seed's monitoring section (served at /metrics).

Each is updated by the process that does the work. Under gunicorn, prometheus-client's
multiprocess mode (PROMETHEUS_MULTIPROC_DIR, see tradesense/metrics.py) adds the
workers' values up at scrape time; a gauge's `multiprocess_mode` says how.
"""

from prometheus_client import Counter, Gauge

REALTIME_SEND_FAILURES = Counter(
    "tradesense_realtime_send_failures_total", "Live events that could not be sent (channel layer down)."
)
REALTIME_EVENTS_SENT = Counter("tradesense_realtime_events_sent_total", "Live events sent to the channel layer.")
# livesum: the replica's open connections, those of exited processes dropped.
WEBSOCKET_CONNECTIONS = Gauge(
    "tradesense_websocket_connections", "Open WebSocket connections.", multiprocess_mode="livesum"
)
WEBSOCKET_CONNECTS = Counter("tradesense_websocket_connects_total", "WebSocket connections accepted (reconnections count).")
CACHE_REQUESTS = Counter(
    "tradesense_cache_requests_total", "Look-ups of the cached reads (tradesense.common.cache.CachedRead).",
    ["cache", "result"],
)
ENQUEUE_FAILURES = Counter("tradesense_enqueue_failures_total", "Best-effort task enqueues that failed (broker down).")
# Each process's own pool, summed over the replica's live processes (tradesense.metrics
# updates them as connections are taken and given back).
DB_POOL_IN_USE = Gauge(
    "tradesense_db_pool_connections_in_use", "Pooled database connections checked out.", multiprocess_mode="livesum"
)
DB_POOL_MAX = Gauge(
    "tradesense_db_pool_connections_max", "Most connections the database pools may open.", multiprocess_mode="livesum"
)
