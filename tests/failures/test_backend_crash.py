"""Seed failure 1, backend crash: kill -9 the web server under order load, restart it,
and retry every request that got no answer with its same Idempotency-Key.

Guarantees checked: every order the server acknowledged is in the database; the
retries create no duplicate (each request ends as exactly one order); the ledger
invariant and the version count hold for every challenge."""

from __future__ import annotations

import threading
import time
import uuid
from decimal import Decimal

import httpx
import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.utils import timezone

from accounts.services import token_issue
from challenges import netting
from challenges.catalogue import install_catalogue
from challenges.management.commands.seed_demo import seed_plans
from challenges.models import Challenge, Instrument, LedgerEntry, Order, Position, PriceTick
from challenges.services import challenge_activate
from tests.support.processes import app_env, web_server

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

PORT = 18011  # the trading engineer's range: 18000-18099
N_CHALLENGES = 4
THREADS = 8


def _test_database_url() -> str:
    db = settings.DATABASES["default"]
    return f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"


@pytest.fixture
def seeded():
    install_catalogue(Instrument=Instrument, PriceTick=PriceTick)
    Instrument.objects.update(price_at=timezone.now())
    plans = {p.slug: p for p in seed_plans()}
    user = get_user_model().objects.create_user("crashtrader", "c@example.com", "pass-123-secure")
    token = token_issue(user=user)
    challenges = [
        challenge_activate(trader=user, plan=plans["elite"], source_ref=f"crash:{i}").pk for i in range(N_CHALLENGES)
    ]
    return token, challenges


def test_kill_9_under_load_loses_no_acknowledged_order_and_duplicates_none(seeded):
    token, challenge_ids = seeded
    env = app_env(
        database_url=_test_database_url(),
        redis_url=settings.REDIS_URL or None,
        MARKET_PRICE_MAX_AGE_SECONDS="100000",
        DB_POOL_TIMEOUT="2",
    )
    web = web_server(env, port=PORT)
    base = f"http://127.0.0.1:{PORT}"
    headers = {"Authorization": f"Token {token}"}
    lock = threading.Lock()
    acknowledged: dict[str, dict] = {}  # Idempotency-Key -> the order the server answered
    replayed: list[str] = []  # retried keys whose first attempt had committed before the kill
    pending: dict[str, tuple[int, dict]] = {}  # sent, no answer: (challenge, body)
    refused: list[tuple[int, str]] = []
    killed = threading.Event()
    stop = threading.Event()

    def load(worker: int):
        with httpx.Client(base_url=base, headers=headers, timeout=5) as client:
            n = 0
            while not stop.is_set():
                n += 1
                challenge_id = challenge_ids[(worker + n) % len(challenge_ids)]
                side = "buy" if (worker + n) % 3 else "sell"
                body = {"symbol": "EURUSD", "side": side, "qty": "0.01", "client_order_id": f"w{worker}-{n}"}
                key = uuid.uuid4().hex
                with lock:
                    pending[key] = (challenge_id, body)
                try:
                    response = client.post(
                        f"/api/v1/challenges/{challenge_id}/orders", json=body, headers={"Idempotency-Key": key}
                    )
                except httpx.TransportError:
                    time.sleep(0.05)  # no answer: stays pending, retried after the restart
                    continue
                with lock:
                    if response.status_code == 201:
                        acknowledged[key] = response.json()
                        del pending[key]
                    elif response.status_code < 500:
                        refused.append((response.status_code, response.text))
                        del pending[key]

    try:
        web.start()
        threads = [threading.Thread(target=load, args=(i,)) for i in range(THREADS)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 20
        while len(acknowledged) < 60 and time.monotonic() < deadline:
            time.sleep(0.05)
        web.kill()  # SIGKILL to the process group, mid-load
        killed.set()
        time.sleep(0.5)  # requests keep failing against the dead port
        stop.set()
        for t in threads:
            t.join(30)
        assert not any(t.is_alive() for t in threads)
        before_restart = len(acknowledged)
        assert before_restart >= 60, web.logs()
        assert pending, "the kill left no request unanswered; nothing was tested"

        web.start()
        # The client's side of the guarantee: retry each unanswered request, same key, same body.
        with httpx.Client(base_url=base, headers=headers, timeout=10) as client:
            for key, (challenge_id, body) in list(pending.items()):
                for _attempt in range(20):
                    try:
                        response = client.post(
                            f"/api/v1/challenges/{challenge_id}/orders", json=body, headers={"Idempotency-Key": key}
                        )
                    except httpx.TransportError:
                        time.sleep(0.2)
                        continue
                    assert response.status_code == 201, response.text
                    if response.headers.get("Idempotent-Replayed") == "true":
                        replayed.append(key)
                    acknowledged[key] = response.json()
                    del pending[key]
                    break
        assert not pending
        assert not refused, refused[:3]
        print(f"acknowledged before the kill: {before_restart}, retried: {len(acknowledged) - before_restart}, "
              f"of which committed before the kill (replayed): {len(replayed)}")
    finally:
        stop.set()
        web.kill()

    orders = list(Order.objects.filter(challenge_id__in=challenge_ids).select_related("instrument").order_by("id"))
    by_client_id = {(o.challenge_id, o.client_order_id): o for o in orders}
    # Every acknowledged order is in the database, exactly as acknowledged.
    for key, answer in acknowledged.items():
        match = [o for o in orders if o.pk == answer["id"]]
        assert len(match) == 1, key
        assert match[0].client_order_id == answer["client_order_id"]
    # No duplicates: each request became exactly one order.
    assert len(orders) == len(acknowledged) == len(by_client_id)
    assert len({a["id"] for a in acknowledged.values()}) == len(acknowledged)
    for challenge_id in challenge_ids:
        challenge = Challenge.objects.get(pk=challenge_id)
        mine = [o for o in orders if o.challenge_id == challenge_id]
        assert challenge.version == 1 + len(mine)
        ledger = LedgerEntry.objects.filter(challenge=challenge).values_list("amount", flat=True)
        assert challenge.balance == challenge.starting_balance + sum(ledger, Decimal("0"))
        qty = Decimal("0")
        for order in mine:
            qty = netting.net_fill(
                qty=qty, avg_entry_price=order.filled_avg_price, side=order.side, fill_qty=order.filled_qty,
                price=order.filled_avg_price, contract_size=order.instrument.contract_size,
            ).qty
        stored = Position.objects.filter(challenge=challenge).values_list("qty", flat=True).first() or Decimal("0")
        assert stored == qty
