"""Celery tasks of the risk engine: thin, no arguments but ids/ticks, the work in services.

Both tasks are idempotent by construction (a unique sweep tick, unique anchors,
warnings and breaches), so they are acks_late: a worker killed mid-run leaves its
message to be redelivered, and the redelivery finds the work done or does the rest.
Beat only nudges; a lost message costs one interval, never an evaluation.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from celery import shared_task
from django.conf import settings
from django.utils import timezone

from risk.services import risk_daily_reset_run, risk_history_prune, risk_sweep_run, risk_sweep_tick_for


def sweep_interval_seconds() -> Decimal:
    schedule = settings.CELERY_BEAT_SCHEDULE.get("risk-sweep", {}).get("schedule", timedelta(seconds=3))
    seconds = schedule.total_seconds() if isinstance(schedule, timedelta) else float(schedule)
    return Decimal(str(round(seconds, 3)))


# `expires`: sweeps that sat in a backlog (worker down, broker outage) are dropped on
# delivery instead of replayed as a burst; the next fresh one does all their work.
@shared_task(name="risk.tasks.risk_sweep", acks_late=True, ignore_result=True, bind=True, expires=30)
def risk_sweep(self, tick: int | None = None) -> dict | None:
    """One sweep tick; `tick` defaults to now floored to the interval, so the copies of
    one beat tick (two beats, a redelivery within the interval) run once."""
    interval = sweep_interval_seconds()
    now = timezone.now()
    tick = tick if tick is not None else risk_sweep_tick_for(now=now, interval_seconds=interval)
    sweep = risk_sweep_run(
        tick=tick,
        interval_seconds=interval,
        now=now,
        batch_size=getattr(settings, "RISK_SWEEP_BATCH_SIZE", 2000),
        deadline_seconds=getattr(settings, "RISK_SWEEP_DEADLINE_SECONDS", 20.0),
        worker=self.request.hostname or "",
    )
    if sweep is None:
        return None
    return {"tick": sweep.tick, "evaluated": sweep.evaluated, "failed": sweep.failed, "warnings": sweep.warnings}


@shared_task(name="risk.tasks.risk_daily_reset", acks_late=True, ignore_result=True, expires=120)
def risk_daily_reset() -> dict:
    now = timezone.now()
    stats = risk_daily_reset_run(now=now)
    risk_history_prune(now=now)
    return {"challenges": stats.challenges, "anchors": stats.anchors, "deadline_hit": stats.deadline_hit}
