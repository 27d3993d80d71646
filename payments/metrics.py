"""Payments figures for /metrics, read from the database at scrape time (so every web
replica reports the same, true figure). A scrape-time reading, not a Gauge with
set_function: prometheus-client's multiprocess mode (gunicorn) cannot serve those."""

import logging
import math

from prometheus_client.core import GaugeMetricFamily

logger = logging.getLogger(__name__)


def _read(selector) -> float:
    try:
        return float(selector())
    except Exception as exc:  # noqa: BLE001 - a scrape must not fail because the database blinked
        logger.warning("payments metric unavailable: %s", exc)
        return math.nan


def payments_reading(*, database_reachable: bool):
    from payments import selectors

    depth = GaugeMetricFamily(
        "tradesense_payment_retry_queue_depth", "Payment attempts queued in the database retry queue (NaN: unknown)."
    )
    depth.add_metric([], _read(selectors.payment_retry_queue_depth) if database_reachable else math.nan)
    yield depth
    review = GaugeMetricFamily(
        "tradesense_payment_needs_review", "Purchases waiting for reconciliation or an operator (NaN: unknown)."
    )
    review.add_metric([], _read(selectors.purchases_needing_review_count) if database_reachable else math.nan)
    yield review


def register() -> None:
    """Add the payments figures to /metrics (PaymentsConfig.ready; idempotent)."""
    from tradesense.metrics import register_reading

    register_reading("payments", payments_reading)
