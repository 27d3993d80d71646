"""Celery tasks of the challenges app: thin, they call a service."""

from celery import shared_task

from challenges.market import market_tick as market_tick_service


# Not acks_late: a tick lost with a killed worker is replaced by the next one a second
# later; a redelivered stale tick would only add a step. `expires` drops ticks that sat
# in a backlog (broker outage) instead of replaying a burst of them.
@shared_task(name="challenges.tasks.market_tick", expires=10, ignore_result=True)
def market_tick() -> int:
    return len(market_tick_service())


# Idempotent (a second run finds nothing to thin), so a redelivery is harmless.
@shared_task(name="challenges.tasks.market_history_compact", acks_late=True, ignore_result=True)
def market_history_compact() -> int:
    from challenges.market import market_history_compact as compact

    return compact()
