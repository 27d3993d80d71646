"""Seed failure 5, network partition. There is one PostgreSQL primary, so a cut-off
writer fails instead of splitting the state; what remains are stale writers -- two
clients acting on the same version, a client retrying after a timeout -- and they meet
versioned writes and idempotency keys:

- two writers on one challenge with the same (soon stale) version: one wins, the other
  gets 409 stale_version and a Conflict row for an operator, and nothing it would have
  written is applied;
- a request whose answer was lost in the partition (the client timed out) and that is
  retried with the same Idempotency-Key creates nothing twice.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from decimal import Decimal

import httpx
import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import connection
from django.utils import timezone
from rest_framework.test import APIClient

from accounts.services import token_issue
from challenges.catalogue import install_catalogue
from challenges.management.commands.seed_demo import seed_plans
from challenges.models import Challenge, Instrument, LedgerEntry, Order, Position, PriceTick
from challenges.services import challenge_activate
from tests.support.processes import app_env, web_server
from tradesense.common.models import AuditEvent, Conflict

pytestmark = pytest.mark.django_db(transaction=True)

WEB_PORT = 18021  # the trading engineer's range: 18000-18099
PROXY_PORT = 18022


@pytest.fixture
def account():
    install_catalogue(Instrument=Instrument, PriceTick=PriceTick)
    Instrument.objects.update(price_at=timezone.now())
    plans = {p.slug: p for p in seed_plans()}
    user = get_user_model().objects.create_user("partitioned", "p@example.com", "pass-123-secure")
    token = token_issue(user=user)
    challenge = challenge_activate(trader=user, plan=plans["pro"], source_ref="partition:1")
    return user, token, challenge


def api(token: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    return client


def snapshot(challenge_id: int):
    challenge = Challenge.objects.get(pk=challenge_id)
    return (
        challenge.version,
        challenge.balance,
        list(Order.objects.filter(challenge=challenge).values_list("client_order_id", "side", "qty")),
        list(Position.objects.filter(challenge=challenge).values_list("instrument__symbol", "qty")),
        LedgerEntry.objects.filter(challenge=challenge).count(),
    )


def test_two_stale_writers_one_wins_the_other_gets_409_and_a_conflict(account):
    _user, token, challenge = account
    # Both writers read the challenge (version 1) before either writes.
    etags = {api(token).get(f"/api/v1/challenges/{challenge.pk}")["ETag"] for _ in range(2)}
    assert etags == {'"1"'}
    barrier = threading.Barrier(2)
    answers = {}

    def writer(name, side, qty):
        try:
            barrier.wait(timeout=10)
            response = api(token).post(
                f"/api/v1/challenges/{challenge.pk}/orders",
                {"symbol": "XAUUSD", "side": side, "qty": qty, "client_order_id": name},
                format="json",
                headers={"If-Match": '"1"'},
            )
            answers[name] = (response.status_code, response.json())
        finally:
            connection.close()

    threads = [
        threading.Thread(target=writer, args=("writer-a", "buy", "0.50")),
        threading.Thread(target=writer, args=("writer-b", "sell", "0.30")),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)

    codes = sorted(code for code, _ in answers.values())
    assert codes == [201, 409], answers
    winner = next(name for name, (code, _) in answers.items() if code == 201)
    loser = next(name for name, (code, _) in answers.items() if code == 409)
    assert answers[loser][1]["error"]["code"] == "stale_version"

    version, balance, orders, positions, ledger_rows = snapshot(challenge.pk)
    won_side, won_qty = ("buy", Decimal("0.5")) if winner == "writer-a" else ("sell", Decimal("0.3"))
    assert version == 2
    assert orders == [(winner, won_side, won_qty)]  # the loser's order does not exist
    assert positions == [("XAUUSD", won_qty if won_side == "buy" else -won_qty)]
    assert balance == Decimal("15000.00") and ledger_rows == 0

    conflict = Conflict.objects.get()
    assert (conflict.object_type, conflict.object_id) == ("challenges.challenge", str(challenge.pk))
    assert (conflict.expected_version, conflict.actual_version, conflict.status) == (1, 2, "open")
    assert conflict.attempted_change["client_order_id"] == loser
    assert conflict.attempted_by.startswith("trader:")
    assert AuditEvent.objects.filter(action="conflict.recorded", object_id=str(conflict.pk)).count() == 1

    # The loser re-reads, sees the winner's write, and decides again on the new version.
    fresh = api(token).get(f"/api/v1/challenges/{challenge.pk}")
    assert fresh["ETag"] == '"2"'
    retry = api(token).post(
        f"/api/v1/challenges/{challenge.pk}/orders",
        {"symbol": "XAUUSD", "side": "sell", "qty": "0.10", "client_order_id": f"{loser}-2"},
        format="json",
        headers={"If-Match": fresh["ETag"]},
    )
    assert retry.status_code == 201
    assert Conflict.objects.count() == 1


def test_a_stale_close_does_not_close_a_position_it_did_not_see(account):
    _user, token, challenge = account
    client = api(token)
    assert client.post(
        f"/api/v1/challenges/{challenge.pk}/orders", {"symbol": "AAPL", "side": "buy", "qty": "5"}, format="json"
    ).status_code == 201
    seen = client.get(f"/api/v1/challenges/{challenge.pk}")["ETag"]  # "2": long 5
    # Another writer adds to the position meanwhile.
    assert client.post(
        f"/api/v1/challenges/{challenge.pk}/orders", {"symbol": "AAPL", "side": "buy", "qty": "20"}, format="json"
    ).status_code == 201
    stale_close = client.delete(f"/api/v1/challenges/{challenge.pk}/positions/AAPL", headers={"If-Match": seen})
    assert stale_close.status_code == 409
    assert Position.objects.get(challenge=challenge).qty == Decimal("25")
    assert Conflict.objects.get().attempted_change == {"action": "position.close", "symbol": "AAPL", "qty": "25.00000000"}


class BlackholeProxy:
    """A TCP proxy to the web server that can swallow the server's answers: the request
    goes through and is processed, the client never hears back (a partition after send)."""

    def __init__(self, listen_port: int, target_port: int):
        self.listen_port, self.target_port = listen_port, target_port
        self.blackhole = threading.Event()
        self.closing = threading.Event()
        self.server = socket.create_server(("127.0.0.1", listen_port), reuse_port=False)
        self.server.settimeout(0.2)
        self.thread = threading.Thread(target=self._accept, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.closing.set()
        self.thread.join(5)
        self.server.close()

    def _accept(self):
        while not self.closing.is_set():
            try:
                client, _ = self.server.accept()
            except (TimeoutError, OSError):
                continue
            upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=10)
            threading.Thread(target=self._pipe, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, True), daemon=True).start()

    def _pipe(self, source, sink, is_answer: bool):
        source.settimeout(0.5)
        deadline = time.monotonic() + 30
        try:
            while not self.closing.is_set() and time.monotonic() < deadline:
                try:
                    data = source.recv(65536)
                except TimeoutError:
                    continue
                if not data:
                    break
                if is_answer and self.blackhole.is_set():
                    continue  # dropped on the floor
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)


@pytest.mark.slow
def test_a_timed_out_request_retried_with_its_key_creates_nothing_twice(account):
    _user, token, challenge = account
    db = settings.DATABASES["default"]
    env = app_env(
        database_url=f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        redis_url=settings.REDIS_URL or None,
        MARKET_PRICE_MAX_AGE_SECONDS="100000",
    )
    web = web_server(env, port=WEB_PORT)
    headers = {"Authorization": f"Token {token}", "Idempotency-Key": "partition-order-1"}
    body = {"symbol": "ETHUSD", "side": "buy", "qty": "1.5"}  # no client_order_id: only the key protects it
    url = f"http://127.0.0.1:{PROXY_PORT}/api/v1/challenges/{challenge.pk}/orders"
    try:
        web.start()
        with BlackholeProxy(PROXY_PORT, WEB_PORT) as proxy:
            proxy.blackhole.set()
            with pytest.raises(httpx.TimeoutException):
                httpx.post(url, json=body, headers=headers, timeout=2.0)
            # The server did the work; the client does not know.
            deadline = time.monotonic() + 10
            while not Order.objects.filter(challenge=challenge).exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            assert Order.objects.filter(challenge=challenge).count() == 1
            proxy.blackhole.clear()  # the partition heals; the client retries, same key and body
            retry = httpx.post(url, json=body, headers=headers, timeout=10)
            again = httpx.post(url, json=body, headers=headers, timeout=10)
    finally:
        web.kill()
    assert retry.status_code == again.status_code == 201
    assert retry.headers["Idempotent-Replayed"] == "true"
    order = Order.objects.get(challenge=challenge)
    assert retry.json()["id"] == again.json()["id"] == order.pk
    assert order.qty == Decimal("1.5")
    assert Position.objects.get(challenge=challenge).qty == Decimal("1.5")
    assert Challenge.objects.get(pk=challenge.pk).version == 2
