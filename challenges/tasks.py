"""Celery tasks of the challenges app: thin, they call a service.

The market tick is a periodic job (tradesense.common.periodic): beat's task claims the
interval's slot before it ticks, and every worker's watchdog ticks from the database
when beat's tasks stop arriving (broker down), so prices keep moving, and the risk sweep
keeps meeting them, without Redis. One claim per slot: never two ticks in an interval.
"""

from datetime import datetime, timedelta

from celery import shared_task

from challenges.market import market_tick as market_tick_service
from tradesense.common.periodic import periodic_job_register, periodic_run, periodic_task_runner


def _market_tick_job(*, now: datetime, interval: timedelta, runner: str) -> int:
    # Stamped with the claim's instant, so every tick lies in the slot that was claimed.
    return len(market_tick_service(now=now))


periodic_job_register(name="market-tick", run=_market_tick_job, default_interval=timedelta(seconds=1))


# Not acks_late: a tick lost with a killed worker is replaced by the next one a second
# later; a redelivered stale tick would only add a step. `expires` drops ticks that sat
# in a backlog (broker outage) instead of replaying a burst of them.
@shared_task(name="challenges.tasks.market_tick", bind=True, expires=10, ignore_result=True)
def market_tick(self) -> int:
    return periodic_run(name="market-tick", runner=periodic_task_runner(self)) or 0


# Idempotent (a second run finds nothing to thin), so a redelivery is harmless.
@shared_task(name="challenges.tasks.market_history_compact", acks_late=True, ignore_result=True)
def market_history_compact() -> int:
    from challenges.market import market_history_compact as compact

    return compact()
