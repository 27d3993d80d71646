"""Prometheus metrics named in the seed's monitoring section (served at /metrics)."""

from prometheus_client import Counter, Gauge

REALTIME_SEND_FAILURES = Counter(
    "tradesense_realtime_send_failures_total", "Live events that could not be sent (channel layer down)."
)
REALTIME_EVENTS_SENT = Counter("tradesense_realtime_events_sent_total", "Live events sent to the channel layer.")
WEBSOCKET_CONNECTIONS = Gauge("tradesense_websocket_connections", "Open WebSocket connections in this process.")
WEBSOCKET_CONNECTS = Counter("tradesense_websocket_connects_total", "WebSocket connections accepted (reconnections count).")
CACHE_REQUESTS = Counter("tradesense_cache_requests_total", "Cache look-ups by result.", ["result"])
ENQUEUE_FAILURES = Counter("tradesense_enqueue_failures_total", "Best-effort task enqueues that failed (broker down).")
