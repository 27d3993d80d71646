"""Payments gauges for /metrics, read from the database at scrape time (so every web
replica reports the same, true figure)."""

import logging

from prometheus_client import Gauge

logger = logging.getLogger(__name__)

RETRY_QUEUE_DEPTH = Gauge(
    "tradesense_payment_retry_queue_depth", "Payment attempts queued in the database retry queue."
)
NEEDS_REVIEW = Gauge("tradesense_payment_needs_review", "Purchases waiting for reconciliation or an operator.")


def _read(selector) -> float:
    try:
        return float(selector())
    except Exception as exc:  # noqa: BLE001 - a scrape must not fail because the database blinked
        logger.warning("payments metric unavailable: %s", exc)
        return float("nan")


def register() -> None:
    from payments import selectors

    RETRY_QUEUE_DEPTH.set_function(lambda: _read(selectors.payment_retry_queue_depth))
    NEEDS_REVIEW.set_function(lambda: _read(selectors.purchases_needing_review_count))
