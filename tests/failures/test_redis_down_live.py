"""Seed failure 3 (Redis unavailable), seen from the live stream: with the real web
server and a private Redis that is killed mid-session, an open socket is closed cleanly
(code 4503, so the client polls and retries), trades keep answering 201 at once, the
lost events are counted in /metrics, and when Redis returns the same server process
serves live events again without a restart."""

from __future__ import annotations

import json
import re
import time

import httpx
import pytest
from django.conf import settings
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from accounts.services import token_issue
from challenges.consumers import CLOSE_LAYER_DOWN
from challenges.models import Order
from tests.live.fixtures import catalogue  # noqa: F401 - the instrument catalogue at fresh prices
from tests.support.processes import app_env, private_redis, web_server

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("catalogue")]

REDIS_PORT = 18390
WEB_PORT = 18391


def _db_url() -> str:
    db = settings.DATABASES["default"]
    return f"postgres://{db['USER'] or 'postgres'}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


def _failures(base: str) -> float:
    text = httpx.get(f"{base}/metrics", timeout=5).text
    match = re.search(r"^tradesense_realtime_send_failures_total (\S+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


def _place(client: httpx.Client, challenge_id: int, coid: str) -> httpx.Response:
    body = {"symbol": "EURUSD", "side": "buy", "qty": "0.01", "type": "market", "client_order_id": coid}
    return client.post(f"/api/v1/challenges/{challenge_id}/orders", json=body, headers={"Idempotency-Key": coid})


def _open(base: str, token: str):
    # A bot's way in: a single-use ticket for its API token (the ticket lives in the
    # database, so it is issued with Redis down too).
    ticket = httpx.post(f"{base}/api/v1/auth/ws-ticket", headers={"Authorization": f"Token {token}"}, timeout=10)
    assert ticket.status_code == 201, ticket.text
    ws = connect(
        f"ws://127.0.0.1:{WEB_PORT}/ws/v1/stream?ticket={ticket.json()['ticket']}",
        additional_headers={"Origin": base},
        open_timeout=10,
        close_timeout=2,
    )
    ready = json.loads(ws.recv(timeout=10))
    assert ready["type"] == "stream.ready"
    return ws


def _wait_frame(ws, type_: str, timeout: float = 10.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        frame = json.loads(ws.recv(timeout=max(0.1, deadline - time.monotonic())))
        if frame["type"] == type_:
            return frame


def test_live_events_fail_soft_while_redis_is_down_and_recover_without_restart(trader, make_challenge):
    challenge = make_challenge(trader)
    token = token_issue(user=trader)
    base = f"http://127.0.0.1:{WEB_PORT}"
    with private_redis(port=REDIS_PORT) as (redis_url, redis):
        env = app_env(database_url=_db_url(), redis_url=redis_url, MARKET_PRICE_MAX_AGE_SECONDS="100000")
        web = web_server(env, port=WEB_PORT).start()
        web_pid = web.popen.pid
        try:
            with httpx.Client(base_url=base, headers={"Authorization": f"Token {token}"}, timeout=15) as client:
                # Live before the outage.
                ws = _open(base, token)
                assert _place(client, challenge.pk, "before").status_code == 201
                assert _wait_frame(ws, "order.filled")["data"]["client_order_id"] == "before"

                redis.kill()
                # The open socket is closed by the server with "layer down", not left hanging.
                with pytest.raises(ConnectionClosed) as closed:
                    while True:
                        ws.recv(timeout=15)
                assert closed.value.rcvd is not None and closed.value.rcvd.code == CLOSE_LAYER_DOWN

                failures_before = _failures(base)
                timings = []
                for i in range(5):
                    started = time.monotonic()
                    response = _place(client, challenge.pk, f"during-{i}")
                    timings.append(time.monotonic() - started)
                    assert response.status_code == 201, response.text
                assert max(timings) < 2.0, f"a trade waited on the dead channel layer: {timings}"
                assert Order.objects.filter(challenge=challenge, client_order_id__startswith="during-").count() == 5
                # Each fill's events were attempted, failed and counted (at least two per fill).
                assert _failures(base) - failures_before >= 10

                # A new socket is refused promptly while Redis is down (the client polls).
                started = time.monotonic()
                with pytest.raises((InvalidStatus, ConnectionClosed)):
                    _open(base, token)
                assert time.monotonic() - started < 5

                # Redis returns on the same port: the same server process is live again.
                redis.start()
                deadline = time.monotonic() + 20
                while True:
                    try:
                        ws = _open(base, token)
                        break
                    except (InvalidStatus, ConnectionClosed, OSError):
                        if time.monotonic() > deadline:
                            raise
                        time.sleep(0.3)
                assert _place(client, challenge.pk, "after").status_code == 201
                assert _wait_frame(ws, "order.filled")["data"]["client_order_id"] == "after"
                ws.close()
                assert web.popen.poll() is None and web.popen.pid == web_pid
        except Exception:
            print(web.logs())
            raise
        finally:
            web.kill()
