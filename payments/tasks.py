"""Celery tasks for payments: thin, ids in, a service call, nothing else.

Beat sends `payments_sweep` every PAYMENTS_SWEEP_SECONDS and `payments_reconcile` every
30 s; a new purchase also sends `purchase_charge` on commit. All three only *nudge*: the
work itself is rows in the database, claimed with SKIP LOCKED, so a lost message costs
a delay, never a purchase.

The sweep and the reconciliation are periodic jobs (tradesense.common.periodic): beat's
task claims the interval in the database first, and every worker's watchdog runs them
straight from the database once beat's tasks are overdue. With Redis down neither
beat's tick nor the on-commit nudge arrives, and a purchase made meanwhile still
completes (tests/failures/test_redis_down_purchase.py).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from celery import shared_task

from payments import services
from tradesense.common.periodic import periodic_job_register, periodic_run, periodic_task_runner


def _payments_sweep_job(*, now: datetime, interval: timedelta, runner: str) -> dict:
    return services.payments_sweep().__dict__


def _payments_reconcile_job(*, now: datetime, interval: timedelta, runner: str) -> dict:
    return services.purchases_reconcile_due()


periodic_job_register(name="payments-sweep", run=_payments_sweep_job, default_interval=timedelta(seconds=2))
periodic_job_register(name="payments-reconcile", run=_payments_reconcile_job, default_interval=timedelta(seconds=30))


# expires: ticks that queued up while no worker ran are dropped instead of replayed
# in a burst; the next tick does the same work.
@shared_task(name="payments.tasks.payments_sweep", bind=True, ignore_result=True, expires=60)
def payments_sweep(self) -> dict | None:
    return periodic_run(name="payments-sweep", runner=periodic_task_runner(self))


@shared_task(name="payments.tasks.payments_reconcile", bind=True, ignore_result=True, expires=120)
def payments_reconcile(self) -> dict | None:
    return periodic_run(name="payments-reconcile", runner=periodic_task_runner(self))


# acks_late: idempotent by construction (the claim is a SKIP LOCKED row update), so a
# redelivery after a worker crash is harmless.
@shared_task(name="payments.tasks.purchase_charge", ignore_result=True, acks_late=True, expires=300)
def purchase_charge(purchase_id: int) -> dict:
    return services.purchase_charge_now(purchase_id=purchase_id).__dict__
