"""Celery tasks for payments: thin, ids in, a service call, nothing else.

Beat sends `payments_sweep` every PAYMENTS_SWEEP_SECONDS and `payments_reconcile` every
30 s; a new purchase also sends `purchase_charge` on commit. All three only *nudge*: the
work itself is rows in the database, claimed with SKIP LOCKED, so a lost message costs
a delay, never a purchase.

Beat and the worker both talk through the broker, so with Redis down no tick arrives.
The worker therefore also runs a small watchdog thread that sweeps straight from the
database when no sweep has run in this process for three intervals: a purchase made
while Redis is down still completes (tests/failures/test_redis_down_purchase.py).
"""

from __future__ import annotations

import logging
import threading
import time

from celery import shared_task
from celery.signals import worker_init, worker_process_init, worker_shutdown
from django.conf import settings
from django.db import close_old_connections, connections

from payments import services

logger = logging.getLogger(__name__)

# Monotonic time of the last sweep / reconciliation run in this process.
_last_run = {"sweep": time.monotonic(), "reconcile": time.monotonic()}


def _interval(entry: str, default: float) -> float:
    try:
        return settings.CELERY_BEAT_SCHEDULE[entry]["schedule"].total_seconds()
    except (KeyError, AttributeError):
        return default


# expires: ticks that queued up while no worker ran are dropped instead of replayed
# in a burst; the next tick does the same work.
@shared_task(name="payments.tasks.payments_sweep", ignore_result=True, expires=60)
def payments_sweep() -> dict:
    _last_run["sweep"] = time.monotonic()
    report = services.payments_sweep()
    return report.__dict__


@shared_task(name="payments.tasks.payments_reconcile", ignore_result=True, expires=120)
def payments_reconcile() -> dict:
    _last_run["reconcile"] = time.monotonic()
    return services.purchases_reconcile_due()


# acks_late: idempotent by construction (the claim is a SKIP LOCKED row update), so a
# redelivery after a worker crash is harmless.
@shared_task(name="payments.tasks.purchase_charge", ignore_result=True, acks_late=True, expires=300)
def purchase_charge(purchase_id: int) -> dict:
    return services.purchase_charge_now(purchase_id=purchase_id).__dict__


class SweepWatchdog(threading.Thread):
    """Runs the database sweeps itself when beat's ticks stop arriving (broker down)."""

    daemon = True

    def __init__(self):
        super().__init__(name="payments-sweep-watchdog")
        self.stopping = threading.Event()
        self.jobs = [
            ("sweep", _interval("payments-sweep", 2.0), services.payments_sweep),
            ("reconcile", _interval("payments-reconcile", 30.0), services.purchases_reconcile_due),
        ]

    def run(self):
        tick = min(interval for _, interval, _ in self.jobs)
        while not self.stopping.wait(tick):
            for name, interval, job in self.jobs:
                silent_for = time.monotonic() - _last_run[name]
                if silent_for < 3 * interval:
                    continue
                _last_run[name] = time.monotonic()
                logger.warning("no %s tick for %.0f s (broker down?): running it from the database", name, silent_for)
                try:
                    close_old_connections()
                    job()
                except Exception:  # noqa: BLE001 - the watchdog must outlive a database blip
                    logger.exception("watchdog %s failed; trying again next tick", name)
                finally:
                    connections.close_all()


_watchdog: SweepWatchdog | None = None


def _start_watchdog() -> None:
    global _watchdog
    if _watchdog is None or not _watchdog.is_alive():
        now = time.monotonic()
        _last_run.update(sweep=now, reconcile=now)
        _watchdog = SweepWatchdog()
        _watchdog.start()


@worker_init.connect
def _watchdog_in_worker(sender=None, **kwargs):
    # Thread and solo pools run tasks in this process; a prefork pool gets one watchdog
    # per child instead (below), so no thread holds database connections across a fork.
    pool = getattr(sender, "pool_cls", "")
    pool_name = pool if isinstance(pool, str) else getattr(pool, "__module__", "")
    if "prefork" not in pool_name:
        _start_watchdog()


@worker_process_init.connect
def _watchdog_in_child(**kwargs):
    _start_watchdog()


@worker_shutdown.connect
def _stop_watchdog(**kwargs):
    if _watchdog is not None:
        _watchdog.stopping.set()
