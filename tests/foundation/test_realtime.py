"""A live event never fails or stalls the caller: a Redis that accepts connections but
never answers (a network partition) costs one short wait, then sends are skipped."""

import socket
import threading
import time

import pytest
from channels.layers import channel_layers

from tradesense.common import realtime
from tradesense.common.metrics import REALTIME_SEND_FAILURES

FRAME = {"type": "order.filled", "challenge": 1, "version": 2, "data": {}}


@pytest.fixture
def silent_redis():
    """A TCP server that accepts and then says nothing."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held = []
    stop = threading.Event()

    def accept():
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"redis://127.0.0.1:{server.getsockname()[1]}/0"
    stop.set()
    thread.join(2)
    for conn in held:
        conn.close()
    server.close()


@pytest.fixture
def layer_at(settings):
    def _point(url):
        settings.CHANNEL_LAYERS = {
            "default": {"BACKEND": "channels_redis.core.RedisChannelLayer", "CONFIG": {"hosts": [url]}}
        }
        channel_layers.backends.clear()

    yield _point
    channel_layers.backends.clear()
    realtime._paused_until = 0.0


def test_a_hung_channel_layer_costs_one_short_wait_then_sends_are_skipped(silent_redis, layer_at):
    layer_at(silent_redis)
    realtime._paused_until = 0.0
    failures = REALTIME_SEND_FAILURES._value.get()
    started = time.monotonic()
    results = [
        realtime.send_frames_now(group="challenge.1", frames=[FRAME])
        for _ in range(10)
    ]
    elapsed = time.monotonic() - started
    assert results == [False] * 10
    assert REALTIME_SEND_FAILURES._value.get() == failures + 10
    assert elapsed < 1.5, f"10 sends took {elapsed:.2f}s against a hung Redis"


def test_sends_resume_after_the_pause(layer_at, settings):
    layer_at(settings.REDIS_URL or "redis://127.0.0.1:6379/0")
    realtime._paused_until = time.monotonic() - 1  # the pause has run out
    assert realtime.send_frames_now(group="challenge.1", frames=[FRAME]) is True


def test_a_refused_connection_fails_fast_and_does_not_pause(layer_at):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    layer_at(f"redis://127.0.0.1:{port}/0")
    realtime._paused_until = 0.0
    started = time.monotonic()
    assert realtime.send_frames_now(group="challenge.1", frames=[FRAME]) is False
    assert time.monotonic() - started < 0.5
    assert realtime._paused_until == 0.0  # the next event is tried again at once (Redis may be back)
