"""Fixtures for the live-stream tests: a WebSocket client on the real ASGI application
(origin check, session/token auth, routing) and the real channel layer (Redis)."""

from __future__ import annotations

import asyncio

import pytest
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.db import connections
from django.test import Client
from rest_framework.authtoken.models import Token

from tests.live.fixtures import catalogue  # noqa: F401 - shared with tests/failures and tests/e2e

ORIGIN = b"http://127.0.0.1"


@pytest.fixture
def aloop():
    """One event loop per test: every communicator and the consumers it runs live on it.
    The test drives it with run_until_complete, so plain (sync) test code can commit
    transactions between the steps and see exactly when frames arrive."""
    loop = asyncio.new_event_loop()
    try:
        yield loop
    finally:
        layer = get_channel_layer()
        if hasattr(layer, "close_pools"):
            loop.run_until_complete(layer.close_pools())
        # Consumers ran their queries in asgiref's executor thread; hand that thread's
        # connection back to the pool so the test database can be dropped at the end.
        loop.run_until_complete(database_sync_to_async(connections.close_all)())
        loop.close()


class Ws:
    """A WebsocketCommunicator on tradesense.asgi.application, driven synchronously."""

    def __init__(self, loop, *, token=None, session=None, origin=ORIGIN, path="/ws/v1/stream"):
        from tradesense.asgi import application

        headers = [(b"host", b"127.0.0.1")]
        if origin:
            headers.append((b"origin", origin))
        if session:
            headers.append((b"cookie", f"sessionid={session}".encode()))
        if token:
            path = f"{path}?token={token}"
        self.loop = loop
        self.comm = WebsocketCommunicator(application, path, headers=headers)
        self.connected = False

    def run(self, coro):
        return self.loop.run_until_complete(coro)

    def connect(self):
        self.connected, detail = self.run(self.comm.connect(timeout=10))
        return self.connected, detail

    def receive(self, timeout: float = 5) -> dict:
        return self.run(self.comm.receive_json_from(timeout=timeout))

    def nothing(self, timeout: float = 0.5) -> bool:
        return self.run(self.comm.receive_nothing(timeout=timeout, interval=0.02))

    def send(self, obj) -> None:
        self.run(self.comm.send_json_to(obj))

    def send_text(self, text: str) -> None:
        self.run(self.comm.send_to(text_data=text))

    def drain(self, timeout: float = 0.6) -> list[dict]:
        """Every frame that arrives until `timeout` passes without one."""
        frames = []
        while not self.nothing(timeout):
            frames.append(self.receive())
        return frames

    def close(self) -> None:
        if self.connected:
            self.run(self.comm.disconnect())
            self.connected = False


@pytest.fixture
def ws(aloop):
    opened: list[Ws] = []

    def _open(**kwargs) -> Ws:
        client = Ws(aloop, **kwargs)
        opened.append(client)
        return client

    yield _open
    for client in opened:
        try:
            client.close()
        except Exception:  # noqa: BLE001 - a socket the test already saw closed
            pass


@pytest.fixture
def token_for(db):
    def _token(user) -> str:
        return Token.objects.get_or_create(user=user)[0].key

    return _token


@pytest.fixture
def session_for(db):
    def _session(user) -> str:
        client = Client()
        client.force_login(user)
        return client.cookies["sessionid"].value

    return _session
