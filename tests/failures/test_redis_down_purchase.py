"""Seed failure 3 for purchases: with Redis stopped, a purchase still completes.

The real stack as separate processes, all on a private Redis (never the shared one):
the web server (uvicorn), a Celery worker and Celery beat, and the fake processor, which
sends its signed webhooks to the web server. Redis is killed: beat's ticks and the
on-commit nudge can no longer reach the worker, so what carries the purchase is the
database retry queue, swept by the worker's watchdog straight from Postgres.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import httpx
import pytest
from django.conf import settings

from accounts.services import token_issue
from challenges.models import Challenge
from payments.models import Purchase
from tests.payments.fixtures import SECRET, ProcessorAdmin, start_fake_processor
from tests.support.processes import app_env, celery, private_redis, wait_for, web_server
from tradesense.common.models import AuditEvent

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

PROCESSOR_PORT = 18104
WEB_PORT = 18120
REDIS_PORT = 18179


def test_database_url() -> str:
    db = settings.DATABASES["default"]  # inside pytest: the test database, test_ts_...
    auth = db["USER"] + (f":{db['PASSWORD']}" if db.get("PASSWORD") else "")
    return f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


test_database_url.__test__ = False  # a helper, not a test


def status_of(purchase_id: int) -> str:
    return Purchase.objects.get(pk=purchase_id).status


def test_a_purchase_completes_while_redis_is_down(plans, make_user):
    trader = make_user("redis-down-trader")
    token = token_issue(user=trader)
    tmp = Path(tempfile.mkdtemp(prefix="ts-pay-redis-"))
    processor = start_fake_processor(
        PROCESSOR_PORT, state=str(tmp / "processor.sqlite3"),
        webhook_url=f"http://127.0.0.1:{WEB_PORT}/api/v1/payments/webhook",
    )
    admin = ProcessorAdmin(f"http://127.0.0.1:{PROCESSOR_PORT}")
    procs = []
    try:
        with private_redis(REDIS_PORT) as (redis_url, redis):
            env = app_env(
                database_url=test_database_url(), redis_url=redis_url,
                PAYMENT_PROCESSOR_URL=admin.base_url, PAYMENT_PROCESSOR_SECRET=SECRET,
                PAYMENTS_SWEEP_SECONDS="1", TRADESENSE_VAR_DIR=str(tmp / "var"),
                WORKER_HEARTBEAT_FILE=str(tmp / "heartbeat"),
                # Other apps' beat entries: out of the way of this test.
                RISK_SWEEP_SECONDS="3600", MARKET_TICK_SECONDS="3600",
            )
            web = web_server(env, port=WEB_PORT).start()
            worker = celery("worker", env, "--pool=threads", "--concurrency=2", "--without-gossip",
                            "--without-mingle").start()
            beat = celery("beat", env, f"--schedule={tmp / 'beat-schedule'}").start()
            procs = [beat, worker, web]
            http = httpx.Client(base_url=f"http://127.0.0.1:{WEB_PORT}",
                                headers={"Authorization": f"Token {token}"}, timeout=20)

            def buy(key: str) -> tuple[int, float]:
                started = time.monotonic()
                response = http.post("/api/v1/purchases", headers={"Idempotency-Key": key},
                                     json={"plan": "starter", "payment_method": "card", "payment_token": "tok_visa"})
                assert response.status_code == 202, response.text
                return response.json()["id"], time.monotonic() - started

            # Redis up: the ordinary path (on-commit nudge or beat tick) charges it, and
            # beat's ticks reach the worker.
            first, _ = buy("redis-up")
            wait_for(lambda: status_of(first) == "succeeded", 60, interval=0.25, what="the first purchase")
            wait_for(lambda: "payments.tasks.payments_sweep" in worker.log_path.read_text(errors="replace"), 30, interval=0.25,
                     what="a beat tick to reach the worker")

            # Redis gone: the request still answers at once, and the purchase completes.
            redis.kill()
            second, took = buy("redis-down")
            assert took < 5, f"POST /purchases took {took:.1f}s with Redis down"
            assert status_of(second) in ("pending", "processing")
            wait_for(lambda: status_of(second) == "succeeded", 60, interval=0.25, what="the purchase made without Redis")
            assert "running it from the database" in worker.log_path.read_text(errors="replace")  # the watchdog, not a tick
            assert http.get(f"/api/v1/purchases/{second}").json()["status"] == "succeeded"

            # Redis back on the same port: everything recovers without a restart.
            redis.start()
            third, _ = buy("redis-back")
            wait_for(lambda: status_of(third) == "succeeded", 60, interval=0.25, what="the purchase after recovery")
            assert all(p.popen.poll() is None for p in procs), "a process died during the outage"
            charges = admin.charge_count()
            wait_for(lambda: admin.stats()["counters"].get("webhooks_delivered", 0) >= 3, 20,
                     what="the webhooks to reach the web server")
    finally:
        for proc in procs:
            proc.kill()
        processor.stop()

    purchases = Purchase.objects.filter(pk__in=[first, second, third])
    assert set(purchases.values_list("status", flat=True)) == {"succeeded"}
    assert charges == 3
    assert Challenge.objects.filter(source_ref__in=[f"purchase:{p}" for p in (first, second, third)]).count() == 3
    # Exactly once each, whoever said so first (the worker's answer or the webhook).
    for pk in (first, second, third):
        assert AuditEvent.objects.filter(action="purchase.succeeded", object_id=str(pk)).count() == 1
