"""The live stream (/ws/v1/stream): auth, group join/leave, group event -> client frame.

A frame is a hint carrying the challenge's version (docs/realtime.md): the client
re-reads the REST snapshot on every (re)connect and on a version gap, so nothing here
has to be reliable, only cheap and owner-scoped.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from challenges.selectors import challenge_list_for_trader
from tradesense.common.errors import InvalidInput
from tradesense.common.metrics import WEBSOCKET_CONNECTIONS, WEBSOCKET_CONNECTS
from tradesense.common.parsers import MalformedJson, json_loads_strict
from tradesense.common.parsing import BIGINT_MAX, parse_id
from tradesense.common.realtime import challenge_group, user_group

logger = logging.getLogger(__name__)

# Close codes (4000-4999 are the application's): the client reconnects on every code
# except CLOSE_UNAUTHENTICATED, which sends it to the login page instead.
CLOSE_UNAUTHENTICATED = 4401
CLOSE_LAYER_DOWN = 4503

# A trader with more challenges than this is auto-joined to the newest ones only; the
# page they look at subscribes explicitly, so nothing they can see goes quiet.
AUTO_JOIN_LIMIT = 50
MAX_SUBSCRIPTIONS = 200


class EquityCoalescer:
    """At most one equity.updated frame per challenge per `interval` seconds.

    The first frame after a quiet period goes out at once; frames arriving sooner are
    held and replaced by newer ones, and the newest is sent when the interval is up.
    A forwarded frame that replaced others says so with `coalesced_from` (the version of
    the first frame it replaced), so the client does not mistake the skipped versions
    for lost events. Any other frame for the challenge flushes the held one first, so
    the order of events per challenge is kept.
    """

    def __init__(self, *, send: Callable[[dict], Awaitable[None]], interval: float):
        self._send = send
        self._interval = interval
        self._last_sent: dict[Any, float] = {}
        self._pending: dict[Any, dict] = {}
        self._timers: dict[Any, asyncio.Task] = {}

    async def offer(self, frame: dict) -> None:
        key = frame.get("challenge")
        loop = asyncio.get_running_loop()
        now = loop.time()
        last = self._last_sent.get(key)
        if key not in self._pending and (last is None or now - last >= self._interval):
            await self._emit(key, frame)
            return
        held = self._pending.get(key)
        if held is not None:
            first = held.get("coalesced_from", held.get("version"))
            frame = {**frame, "coalesced_from": first} if first is not None else frame
        self._pending[key] = frame
        if key not in self._timers:
            delay = max(0.0, (last or now) + self._interval - now)
            self._timers[key] = loop.create_task(self._flush_later(key, delay))

    async def flush(self, key: Any) -> None:
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        frame = self._pending.pop(key, None)
        if frame is not None:
            await self._emit(key, frame)

    def close(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        self._pending.clear()

    async def _flush_later(self, key: Any, delay: float) -> None:
        await asyncio.sleep(delay)
        self._timers.pop(key, None)
        frame = self._pending.pop(key, None)
        if frame is not None:
            await self._emit(key, frame)

    async def _emit(self, key: Any, frame: dict) -> None:
        self._last_sent[key] = asyncio.get_running_loop().time()
        await self._send(frame)


@database_sync_to_async
def _owned_challenge_ids(*, user, limit: int) -> list[int]:
    return list(challenge_list_for_trader(trader=user).values_list("pk", flat=True)[:limit])


@database_sync_to_async
def _owns_challenge(*, user, challenge_id: int) -> bool:
    return challenge_list_for_trader(trader=user).filter(pk=challenge_id).exists()


class StreamConsumer(AsyncJsonWebsocketConsumer):
    """One socket per browser tab or bot. Server frames are API.md's
    {type, challenge, version, data}; control frames are typed `stream.*`.

    Client messages: {"action": "subscribe" | "unsubscribe", "challenge": <id>} and
    {"action": "ping"}.
    """

    # ~4 equity frames per second per challenge: smooth enough for a meter, and a
    # burst of fills or a fast price cannot flood a phone.
    equity_interval = 0.25

    async def __call__(self, scope, receive, send):
        # The channel layer (Redis) may be down. The HTTP side does not care; here it
        # would crash the consumer with a traceback, so close the socket cleanly instead:
        # the client polls the REST snapshot until a reconnect succeeds.
        self._counted = False
        try:
            await super().__call__(scope, receive, send)
        except Exception as exc:
            if not (isinstance(exc, OSError) or _is_layer_error(exc)):
                raise
            await self._layer_down(exc, send)
        finally:
            if self._counted:
                WEBSOCKET_CONNECTIONS.dec()
                self._counted = False

    async def _layer_down(self, exc: BaseException, send) -> None:
        logger.warning("live stream closed: channel layer unavailable (%s)", exc)
        try:
            await send({"type": "websocket.close", "code": CLOSE_LAYER_DOWN})
        except Exception:  # noqa: BLE001 - the socket may already be gone
            pass

    async def connect(self):
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            # Closing before accept refuses the handshake (HTTP 403).
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        self.user = user
        self.challenges: set[int] = set()
        self.coalescer = EquityCoalescer(send=self.send_json, interval=self.equity_interval)
        await self.channel_layer.group_add(user_group(user.pk), self.channel_name)
        for challenge_id in await _owned_challenge_ids(user=user, limit=AUTO_JOIN_LIMIT):
            await self._join(challenge_id)
        await self.accept()
        WEBSOCKET_CONNECTS.inc()
        WEBSOCKET_CONNECTIONS.inc()
        self._counted = True
        await self.send_json({"type": "stream.ready", "user": user.pk, "challenges": sorted(self.challenges)})

    async def disconnect(self, code):
        if not hasattr(self, "user"):
            return
        self.coalescer.close()
        try:
            await self.channel_layer.group_discard(user_group(self.user.pk), self.channel_name)
            for challenge_id in list(self.challenges):
                await self.channel_layer.group_discard(challenge_group(challenge_id), self.channel_name)
        except Exception as exc:  # noqa: BLE001 - stale memberships expire by themselves
            logger.info("group discard on disconnect failed: %s", exc)

    async def receive(self, text_data=None, bytes_data=None, **kwargs):
        try:
            # The HTTP API's strict parser: nesting, NUL and huge numbers are refused the same way.
            content = json_loads_strict(text_data) if text_data else None
        except (MalformedJson, ValueError):
            content = None
        if not isinstance(content, dict):
            await self._error("malformed", "Send a JSON object such as {\"action\": \"ping\"}.")
            return
        await self.receive_json(content)

    async def receive_json(self, content, **kwargs):
        action = content.get("action")
        if action == "ping":
            await self.send_json({"type": "stream.pong"})
            return
        if action not in ("subscribe", "unsubscribe"):
            await self._error("unknown_action", "action must be subscribe, unsubscribe or ping.")
            return
        challenge_id = _as_id(content.get("challenge"))
        if challenge_id is None:
            await self._error("invalid", "challenge must be a challenge id.", challenge=content.get("challenge"))
            return
        if action == "unsubscribe":
            await self._leave(challenge_id)
            await self.send_json({"type": "stream.unsubscribed", "challenge": challenge_id})
            return
        if challenge_id not in self.challenges:
            if len(self.challenges) >= MAX_SUBSCRIPTIONS:
                await self._error("too_many_subscriptions", "Unsubscribe from a challenge first.", challenge=challenge_id)
                return
            # Someone else's challenge answers exactly like a missing one (API.md: 404).
            if not await _owns_challenge(user=self.user, challenge_id=challenge_id):
                await self._error("not_found", "Not found.", challenge=challenge_id)
                return
            await self._join(challenge_id)
        await self.send_json({"type": "stream.subscribed", "challenge": challenge_id})

    async def stream_event(self, event):
        """A group message from tradesense.common.realtime: forward its frames in order.
        One message carries all the frames of one change (`frames`); a lone `frame` is
        what a web process of the previous release sends during a rolling deploy."""
        frames = event.get("frames")
        if not isinstance(frames, list):
            frames = [event.get("frame")]
        for frame in frames:
            if isinstance(frame, dict):
                await self._forward(frame)

    async def _forward(self, frame: dict) -> None:
        challenge_id = frame.get("challenge")
        if frame.get("type") == "equity.updated" and challenge_id is not None:
            await self.coalescer.offer(frame)
            return
        if challenge_id is not None:
            await self.coalescer.flush(challenge_id)
        if frame.get("type") == "purchase.updated":
            # A purchase that opened a challenge: join its group now, so the new
            # challenge's first events reach this socket without a reconnect.
            new_id = _as_id((frame.get("data") or {}).get("challenge"))
            if new_id is not None and new_id not in self.challenges:
                if await _owns_challenge(user=self.user, challenge_id=new_id):
                    await self._join(new_id)
        await self.send_json(frame)

    async def _join(self, challenge_id: int) -> None:
        await self.channel_layer.group_add(challenge_group(challenge_id), self.channel_name)
        self.challenges.add(challenge_id)

    async def _leave(self, challenge_id: int) -> None:
        if challenge_id in self.challenges:
            await self.coalescer.flush(challenge_id)
            await self.channel_layer.group_discard(challenge_group(challenge_id), self.channel_name)
            self.challenges.discard(challenge_id)

    async def _error(self, code: str, message: str, **extra) -> None:
        await self.send_json({"type": "stream.error", "code": code, "message": message, **extra})


def _as_id(value) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if 0 < value <= BIGINT_MAX else None
    if isinstance(value, str):
        try:
            return parse_id(value, name="challenge")  # ASCII digits only, within bigint
        except InvalidInput:
            return None
    return None


def _is_layer_error(exc: BaseException) -> bool:
    """redis-py's errors do not subclass OSError; recognise them without importing
    redis (the embedded default runs without it)."""
    return any(cls.__module__.startswith("redis") for cls in type(exc).__mro__)
