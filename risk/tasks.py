"""Celery tasks of the risk engine: thin, no arguments but ids/ticks, the work in services.

The sweep and the daily reset are periodic jobs (tradesense.common.periodic): beat's
task claims the interval's slot in the database before it runs, and every worker's
watchdog runs the job from the database when beat's tasks stop arriving (broker or
beat down), so equity is evaluated against the rules with or without Redis. A sweep
slot is exactly a SweepTick tick (both are the interval floored from the epoch), and
the unique tick stays the last word on "this tick already ran".

Both tasks are idempotent by construction (a unique sweep tick, unique anchors,
warnings and breaches), so they are acks_late: a worker killed mid-run leaves its
message to be redelivered, and the redelivery finds the work done or does the rest.
Beat only nudges; a lost message costs one interval, never an evaluation.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal

from celery import shared_task
from django.conf import settings
from django.utils import timezone

from risk.services import risk_daily_reset_run, risk_history_prune, risk_sweep_run
from tradesense.common.periodic import (
    EPOCH,
    periodic_interval,
    periodic_job_register,
    periodic_run,
    periodic_slot_start,
    periodic_task_runner,
)


def sweep_interval_seconds() -> Decimal:
    seconds = periodic_interval(name="risk-sweep").total_seconds()
    return Decimal(str(round(seconds, 3)))


def _sweep(*, tick: int, now: datetime, worker: str) -> dict | None:
    sweep = risk_sweep_run(
        tick=tick,
        interval_seconds=sweep_interval_seconds(),
        now=now,
        batch_size=getattr(settings, "RISK_SWEEP_BATCH_SIZE", 2000),
        deadline_seconds=getattr(settings, "RISK_SWEEP_DEADLINE_SECONDS", 20.0),
        worker=worker,
    )
    if sweep is None:
        return None
    return {"tick": sweep.tick, "evaluated": sweep.evaluated, "failed": sweep.failed, "warnings": sweep.warnings}


def _risk_sweep_job(*, now: datetime, interval: timedelta, runner: str) -> dict | None:
    # The tick is the claimed slot's start in ms: the same number risk_sweep_tick_for
    # gives, computed exactly, so one claimed slot is one SweepTick.
    tick = (periodic_slot_start(now=now, interval=interval) - EPOCH) // timedelta(milliseconds=1)
    return _sweep(tick=tick, now=now, worker=runner)


def _risk_daily_reset_job(*, now: datetime, interval: timedelta, runner: str) -> dict:
    stats = risk_daily_reset_run(now=now)
    risk_history_prune(now=now)
    return {"challenges": stats.challenges, "anchors": stats.anchors, "deadline_hit": stats.deadline_hit}


periodic_job_register(name="risk-sweep", run=_risk_sweep_job, default_interval=timedelta(seconds=3))
periodic_job_register(name="risk-daily-reset", run=_risk_daily_reset_job, default_interval=timedelta(seconds=30))


# `expires`: sweeps that sat in a backlog (worker down, broker outage) are dropped on
# delivery instead of replayed as a burst; the next fresh one does all their work.
@shared_task(name="risk.tasks.risk_sweep", acks_late=True, ignore_result=True, bind=True, expires=30)
def risk_sweep(self, tick: int | None = None) -> dict | None:
    """One sweep tick. Without `tick` (beat's task) it claims the current interval and
    sweeps its tick, so beat, redeliveries and the watchdogs sweep each interval once.
    An explicit `tick` (an operator's or a test's re-run) skips the claim: the SweepTick
    row alone decides whether that tick already ran."""
    if tick is not None:
        return _sweep(tick=tick, now=timezone.now(), worker=self.request.hostname or "")
    return periodic_run(name="risk-sweep", runner=periodic_task_runner(self))


@shared_task(name="risk.tasks.risk_daily_reset", acks_late=True, ignore_result=True, bind=True, expires=120)
def risk_daily_reset(self) -> dict | None:
    return periodic_run(name="risk-daily-reset", runner=periodic_task_runner(self))
