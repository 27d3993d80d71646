"""Live events: sent after commit through one helper that never raises into the caller.

A WebSocket frame is a hint carrying the challenge's version; a client that misses one
re-reads the REST snapshot, so a failed send is logged and counted, and trading goes on.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
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


# Why a long-lived loop: async_to_sync called from a thread with no event loop (a WSGI
# worker, a Celery task) builds a new loop in a new thread per call, and channels_redis a
# new Redis connection per loop: ~6 ms per event, three events per order. One loop per
# process, with a layer instance of its own (so nobody closes its connections from
# another loop), keeps them. The in-memory layer (no Redis) keeps async_to_sync: its
# queues belong to the server's own loop. A send waits at most SEND_TIMEOUT_SECONDS
# (a healthy one takes about a millisecond). A failure that took long (a hung Redis, a
# cut network) pauses sends for PAUSE_AFTER_FAILURE_SECONDS, so it costs one order one
# wait, not every order three; a fast failure (connection refused) does not pause, so
# events flow again the moment Redis is back. Skipped sends count as failures; clients
# resync from REST.
SEND_TIMEOUT_SECONDS = 0.5
PAUSE_AFTER_FAILURE_SECONDS = 5.0
SLOW_FAILURE_SECONDS = 0.1
_paused_until = 0.0
_sender_lock = threading.Lock()
_sender: dict[str, Any] = {}


def _sender_for(layer) -> tuple[asyncio.AbstractEventLoop, Any]:
    with _sender_lock:
        if _sender.get("pid") != os.getpid():  # none yet, or inherited through fork
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="realtime-sender", daemon=True).start()
            _sender.clear()
            _sender.update(pid=os.getpid(), loop=loop)
        if _sender.get("source") is not layer:  # first use, or the settings changed
            from channels.layers import DEFAULT_CHANNEL_LAYER, channel_layers

            _sender.update(source=layer, layer=channel_layers.make_backend(DEFAULT_CHANNEL_LAYER))
        return _sender["loop"], _sender["layer"]


def send_frames_now(*, group: str, frames: list[dict[str, Any]]) -> bool:
    """Hand frames to the channel layer as one group message (the consumer forwards them
    one by one, in order). One message per order, not one per frame: each send is a
    Redis round trip and a hand-off to the sender loop (docs/performance.md)."""
    global _paused_until
    if time.monotonic() < _paused_until:
        REALTIME_SEND_FAILURES.inc(len(frames))
        return False
    started = time.monotonic()
    try:
        layer = get_channel_layer()
        if layer is None:
            return False
        message = {"type": "stream.event", "frames": frames}
        if layer.__class__.__name__ == "InMemoryChannelLayer":
            async_to_sync(layer.group_send)(group, message)
        else:
            loop, own_layer = _sender_for(layer)
            future = asyncio.run_coroutine_threadsafe(own_layer.group_send(group, message), loop)
            try:
                future.result(timeout=SEND_TIMEOUT_SECONDS)
            except BaseException:
                future.cancel()
                raise
    except Exception as exc:  # noqa: BLE001 - a live event must never fail the caller
        REALTIME_SEND_FAILURES.inc(len(frames))
        if time.monotonic() - started > SLOW_FAILURE_SECONDS:
            _paused_until = time.monotonic() + PAUSE_AFTER_FAILURE_SECONDS
        logger.warning("live events %s to %s not sent: %r", [f["type"] for f in frames], group, exc)
        return False
    REALTIME_EVENTS_SENT.inc(len(frames))
    return True


def _frame(type: str, challenge: int | None, version: int | None, data: dict[str, Any]) -> dict[str, Any]:
    return {"type": type, "challenge": challenge, "version": version, "data": data}


def send_events_on_commit(
    *,
    events: list[tuple[str, dict[str, Any]]],
    challenge: int | None = None,
    version: int | None = None,
    user: int | None = None,
) -> None:
    """Queue (type, data) frames for the challenge's group (or a user's), sent as one
    message once the transaction commits. Nothing is sent for an empty list."""
    if not events:
        return
    group = challenge_group(challenge) if challenge is not None else user_group(user)
    frames = [_frame(type, challenge, version, data) for type, data in events]
    transaction.on_commit(lambda: send_frames_now(group=group, frames=frames))


def send_event_on_commit(
    *, type: str, data: dict[str, Any], challenge: int | None = None, version: int | None = None, user: int | None = None
) -> None:
    """Queue a frame for the challenge's group (or a user's) once the transaction commits."""
    send_events_on_commit(events=[(type, data)], challenge=challenge, version=version, user=user)


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
