"""Seed failure 4, database restart: PostgreSQL restarts under load; the web server
recovers by itself (pooled, health-checked connections), answers 503 rather than 500
while the database is away, and no write is partial or lost."""

from __future__ import annotations

import threading
import time
import uuid
from decimal import Decimal

import httpx
import pytest

from tests.support.processes import app_env, wait_for, web_server
from tests.support.stack import seed_trader, sql

pytestmark = pytest.mark.slow


def test_web_rides_out_a_database_restart(postgres):
    env = app_env(database_url=postgres.url, MARKET_PRICE_MAX_AGE_SECONDS="100000", DB_POOL_TIMEOUT="1")
    seeded = seed_trader(env, n_challenges=4)
    web = web_server(env).start()
    base = f"http://127.0.0.1:{web.port}"
    headers = {"Authorization": f"Token {seeded['token']}"}
    statuses: list[int] = []
    acknowledged: list[str] = []
    lock = threading.Lock()
    stop_at = time.monotonic() + 9

    def trader_loop(challenge_id: int):
        with httpx.Client(base_url=base, headers=headers, timeout=10) as client:
            n = 0
            while time.monotonic() < stop_at:
                n += 1
                client_order_id = uuid.uuid4().hex
                side = "buy" if n % 2 else "sell"  # stays inside the margin limit
                body = {"symbol": "EURUSD", "side": side, "qty": "0.1", "type": "market", "client_order_id": client_order_id}
                # A client retries with the same Idempotency-Key until it gets an answer.
                key = uuid.uuid4().hex
                for _ in range(200):
                    try:
                        response = client.post(
                            f"/api/v1/challenges/{challenge_id}/orders", json=body, headers={"Idempotency-Key": key}
                        )
                    except httpx.TransportError:
                        time.sleep(0.1)
                        continue
                    with lock:
                        statuses.append(response.status_code)
                    if response.status_code == 201:
                        with lock:
                            acknowledged.append(client_order_id)
                        break
                    if response.status_code != 503:  # only "retry later" is expected; checked below
                        break
                    time.sleep(0.1)

    threads = [threading.Thread(target=trader_loop, args=(cid,)) for cid in seeded["challenges"]]
    try:
        for t in threads:
            t.start()
        time.sleep(3)
        postgres.stop(mode="immediate")  # a crash-restart, as when the container dies
        time.sleep(2)
        postgres.start()
        for t in threads:
            t.join(60)
        # The same web process recovered without a restart.
        assert web.popen.poll() is None
        wait_for(lambda: httpx.get(f"{base}/health/ready", headers={"Accept": "application/json"}).status_code == 200,
                 15, what="readiness after the restart")
    finally:
        web.kill()

    assert set(statuses) <= {201, 503}, (sorted(set(statuses)), web.logs())
    assert 503 in statuses, "the outage was not observed; the test proved nothing"
    assert len(acknowledged) > 10
    rows = sql(postgres.url, "SELECT client_order_id FROM challenges_order")
    stored = [r[0] for r in rows]
    assert len(stored) == len(set(stored)), "an order was stored twice"
    assert set(acknowledged) <= set(stored), "an acknowledged order was lost"
    # Nothing half-written: each challenge's balance is its start plus its ledger.
    for challenge_id, starting, balance, ledger_sum in sql(
        postgres.url,
        "SELECT c.id, c.starting_balance, c.balance, COALESCE(SUM(l.amount), 0) "
        "FROM challenges_challenge c LEFT JOIN challenges_ledgerentry l ON l.challenge_id = c.id "
        "GROUP BY c.id",
    ):
        assert Decimal(balance) == Decimal(starting) + Decimal(ledger_sum), challenge_id
    # Every stored order has its audit event (same transaction).
    audited = sql(postgres.url, "SELECT count(*) FROM common_auditevent WHERE action LIKE 'order.%%'")[0][0]
    assert audited >= len(stored)
