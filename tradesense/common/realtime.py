"""Live events: sent after commit through one helper that never raises into the caller.

A WebSocket frame is a hint carrying the challenge's version; a client that misses one
re-reads the REST snapshot, so a failed send is logged and counted, and trading goes on.
"""

from __future__ import annotations

import logging
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction

from tradesense.common.metrics import REALTIME_EVENTS_SENT, REALTIME_SEND_FAILURES

logger = logging.getLogger(__name__)


def challenge_group(challenge_id: int) -> str:
    return f"challenge.{challenge_id}"


def user_group(user_id: int) -> str:
    return f"user.{user_id}"


def send_event_now(*, group: str, type: str, challenge: int | None, version: int | None, data: dict[str, Any]) -> bool:
    frame = {"type": type, "challenge": challenge, "version": version, "data": data}
    try:
        layer = get_channel_layer()
        if layer is None:
            return False
        async_to_sync(layer.group_send)(group, {"type": "stream.event", "frame": frame})
    except Exception as exc:  # noqa: BLE001 - a live event must never fail the caller
        REALTIME_SEND_FAILURES.inc()
        logger.warning("live event %s to %s not sent: %s", type, group, exc)
        return False
    REALTIME_EVENTS_SENT.inc()
    return True


def send_event_on_commit(
    *, type: str, data: dict[str, Any], challenge: int | None = None, version: int | None = None, user: int | None = None
) -> None:
    """Queue a frame for the challenge's group (or a user's) once the transaction commits."""
    group = challenge_group(challenge) if challenge is not None else user_group(user)

    def _send():
        send_event_now(group=group, type=type, challenge=challenge, version=version, data=data)

    transaction.on_commit(_send)


def enqueue_on_commit(task, *args, **kwargs) -> None:
    """Best-effort Celery enqueue after commit: a broker outage only delays the work,
    because every task's work is also found by a database sweep."""
    from tradesense.common.metrics import ENQUEUE_FAILURES

    def _enqueue():
        try:
            task.apply_async(args=args, kwargs=kwargs, retry=False)
        except Exception as exc:  # noqa: BLE001
            ENQUEUE_FAILURES.inc()
            logger.warning("enqueue of %s failed (the sweep will pick it up): %s", task.name, exc)

    transaction.on_commit(_enqueue)
