"""Seed failure 3, Redis unavailable: trading over HTTP keeps working (cache calls are
no-ops within 250 ms, sessions live in the database, live events fail soft), health
says degraded, and everything returns when Redis does, without a restart."""

from __future__ import annotations

import time
import uuid

import httpx
import pytest

from tests.support.processes import app_env, private_redis, wait_for, web_server
from tests.support.stack import seed_trader, sql

pytestmark = pytest.mark.slow


def place(client: httpx.Client, challenge_id: int) -> httpx.Response:
    # 0.1 lot: 22 buys stay far inside the Elite plan's margin.
    body = {"symbol": "EURUSD", "side": "buy", "qty": "0.1", "type": "market", "client_order_id": uuid.uuid4().hex}
    return client.post(f"/api/v1/challenges/{challenge_id}/orders", json=body, headers={"Idempotency-Key": uuid.uuid4().hex})


def dependency_health(base: str) -> dict[str, bool]:
    """/health/ per check: {"Cache": True, "Redis": False, ...}. No worker runs in this
    test, so the heartbeat check is down throughout; only Redis' checks are asserted."""
    body = httpx.get(f"{base}/health/", headers={"Accept": "application/json"}, timeout=15).json()
    return {name.split("(")[0]: status == "OK" for name, status in body.items()}


def test_trading_goes_on_while_redis_is_down(postgres):
    with private_redis() as (redis_url, redis):
        env = app_env(database_url=postgres.url, redis_url=redis_url, MARKET_PRICE_MAX_AGE_SECONDS="100000")
        seeded = seed_trader(env, n_challenges=1)
        challenge_id = seeded["challenges"][0]
        web = web_server(env).start()
        base = f"http://127.0.0.1:{web.port}"
        try:
            with httpx.Client(base_url=base, headers={"Authorization": f"Token {seeded['token']}"}, timeout=10) as client:
                assert place(client, challenge_id).status_code == 201
                before = dependency_health(base)
                assert before["Cache"] and before["Redis"] and before["Database"]

                redis.kill()  # Redis goes away
                started = time.monotonic()
                outage = [place(client, challenge_id) for _ in range(20)]
                elapsed = time.monotonic() - started
                assert [r.status_code for r in outage] == [201] * 20, outage[-1].text
                assert elapsed < 20, f"20 orders took {elapsed:.1f}s with Redis down"
                snapshot = client.get(f"/api/v1/challenges/{challenge_id}")
                assert snapshot.status_code == 200
                # Health says degraded (cache and broker checks fail) while readiness holds.
                during = dependency_health(base)
                assert not during["Cache"] and not during["Redis"] and during["Database"]
                assert httpx.get(f"{base}/health/ready", headers={"Accept": "application/json"}).status_code == 200

                redis.start()  # Redis comes back on the same port: no web restart
                wait_for(lambda: all(dependency_health(base)[k] for k in ("Cache", "Redis")), 20, what="health to recover")
                assert place(client, challenge_id).status_code == 201
                assert web.popen.poll() is None
        finally:
            web.kill()
    orders = sql(postgres.url, "SELECT count(*) FROM challenges_order WHERE challenge_id = %s", challenge_id)[0][0]
    assert orders == 22
