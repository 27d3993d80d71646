"""Fixtures for the live-stream tests: a WebSocket client on the real ASGI application
(origin check, session/ticket auth, routing) and the real channel layer (Redis)."""

from __future__ import annotations

import asyncio

import pytest
from channels.db import database_sync_to_async
from channels.layers import DEFAULT_CHANNEL_LAYER, channel_layers, get_channel_layer
from channels.testing import WebsocketCommunicator
from django.db import connections
from django.test import Client
from rest_framework.test import APIClient

from accounts.services import token_issue
from tests.live.fixtures import catalogue  # noqa: F401 - shared with tests/failures and tests/e2e

ORIGIN = b"http://127.0.0.1"


async def _settle(tasks) -> None:
    await asyncio.gather(*tasks, return_exceptions=True)


@pytest.fixture
def aloop():
    """One event loop per test: every communicator and the consumers it runs live on it.
    The test drives it with run_until_complete, so plain (sync) test code can commit
    transactions between the steps and see exactly when frames arrive."""
    # A fresh channel layer per test: channels-redis ties a layer's receive lock to the
    # event loop that first receives, and a loop closed with a receive pending (a refused
    # socket) would leave "Two event loops are trying to receive()" for the next test.
    channel_layers.backends.pop(DEFAULT_CHANNEL_LAYER, None)
    loop = asyncio.new_event_loop()
    try:
        yield loop
    finally:
        # Consumers' pending receives end here, on their own loop, so their locks are freed.
        pending = [task for task in asyncio.all_tasks(loop) if not task.done()]
        for task in pending:
            task.cancel()
        loop.run_until_complete(_settle(pending))
        layer = get_channel_layer()
        if hasattr(layer, "close_pools"):
            loop.run_until_complete(layer.close_pools())
        # Consumers ran their queries in asgiref's executor thread; hand that thread's
        # connection back to the pool so the test database can be dropped at the end.
        loop.run_until_complete(database_sync_to_async(connections.close_all)())
        loop.close()
        channel_layers.backends.pop(DEFAULT_CHANNEL_LAYER, None)


def ticket_for_token(token: str) -> str:
    """What a bot does before connecting: POST /auth/ws-ticket with its API token. A token
    the API refuses yields a ticket that cannot work, so the socket is still tried."""
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    response = client.post("/api/v1/auth/ws-ticket")
    return response.json()["ticket"] if response.status_code == 201 else f"refused-{token}"


class Ws:
    """A WebsocketCommunicator on tradesense.asgi.application, driven synchronously.
    `token=`: the bot's way in, a ticket bought with that API token (`?ticket=`)."""

    def __init__(self, loop, *, token=None, ticket=None, session=None, origin=ORIGIN, path="/ws/v1/stream"):
        from tradesense.asgi import application

        headers = [(b"host", b"127.0.0.1")]
        if origin:
            headers.append((b"origin", origin))
        if session:
            headers.append((b"cookie", f"sessionid={session}".encode()))
        if token:
            ticket = ticket_for_token(token)
        if ticket:
            path = f"{path}?ticket={ticket}"
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
        return token_issue(user=user)

    return _token


@pytest.fixture
def session_for(db):
    def _session(user) -> str:
        client = Client()
        client.force_login(user)
        return client.cookies["sessionid"].value

    return _session
