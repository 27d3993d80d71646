"""The production topology, run and broken: nginx in front of two gunicorn and two
uvicorn replicas, the worker, beat, the processor and Prometheus, all under supervisord
with DEBUG=0 (`make prod`). Each test restores what it breaks (supervisord restarts a
killed process; a stopped one is started again in `finally`)."""

from __future__ import annotations

import threading
import time
import uuid
from decimal import Decimal

import httpx
import pytest

from tests.support.stack import seed_trader, sql

pytestmark = pytest.mark.slow


def test_every_process_is_scraped_and_up(prod):
    expected = {
        ("tradesense-web", 2), ("tradesense-ws", 2), ("tradesense-worker", 1), ("tradesense-beat", 1),
        ("tradesense-processor", 1), ("tradesense-lb", 1), ("prometheus", 1),
    }

    def all_up() -> bool:
        targets = prod.targets()
        jobs = {}
        for t in targets:
            jobs.setdefault(t["labels"]["job"], []).append(t["health"])
        return {(job, len(h)) for job, h in jobs.items()} == expected and all(
            h == "up" for hs in jobs.values() for h in hs
        )

    deadline = time.monotonic() + 60
    while not all_up() and time.monotonic() < deadline:
        time.sleep(1)
    bad = [(t["labels"]["job"], t["scrapeUrl"], t["health"], t["lastError"]) for t in prod.targets() if t["health"] != "up"]
    assert all_up(), bad
    # The same answer from the query API: up == 1 for every target.
    assert {r["value"][1] for r in prod.query("up")} == {"1"}


def test_production_settings_and_no_demo_users(prod):
    answer = httpx.get(f"{prod.url}/no-such-page", timeout=5)
    assert answer.status_code == 404
    assert "Traceback" not in answer.text and "DEBUG = True" not in answer.text
    users = sql(prod.env["DATABASE_URL"], "SELECT username FROM auth_user WHERE username IN ('demo', 'admin')")
    assert users == []
    plans = {row[0] for row in sql(prod.env["DATABASE_URL"], "SELECT slug FROM challenges_plan")}
    assert plans == {"starter", "pro", "elite"}


def test_kill_9_an_http_replica_three_times_under_order_load(prod):
    """Every acknowledged order exists exactly once, every intended order exists exactly
    once after retries with its Idempotency-Key, GETs never fail, and the killed replica
    serves again through nginx."""
    seeded = seed_trader(prod.env, n_challenges=2)
    token, challenge_ids = seeded["token"], seeded["challenges"]
    headers = {"Authorization": f"Token {token}"}
    lock = threading.Lock()
    intended: dict[str, tuple[int, dict]] = {}  # Idempotency-Key -> (challenge, body)
    acknowledged: dict[str, dict] = {}
    refused: list[tuple[int, str]] = []
    get_failures: list[str] = []
    gets = {"ok": 0, "cut_short": 0}
    stop = threading.Event()

    def place(client: httpx.Client, key: str, challenge_id: int, body: dict) -> None:
        # Retry the same key until the order is answered: a dead replica's in-flight
        # request is an unknown outcome, and the key makes the retry safe.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                response = client.post(
                    f"/api/v1/challenges/{challenge_id}/orders", json=body, headers={"Idempotency-Key": key}
                )
            except httpx.TransportError:
                time.sleep(0.1)
                continue
            if response.status_code >= 500 or response.status_code == 409 and "in_progress" in response.text:
                time.sleep(0.1)
                continue
            with lock:
                if response.status_code == 201:
                    acknowledged[key] = response.json()
                else:
                    refused.append((response.status_code, response.text))
            return
        raise AssertionError(f"order {key} never answered")

    def orders(worker: int) -> None:
        with httpx.Client(base_url=prod.url, headers=headers, timeout=10) as client:
            n = 0
            while not stop.is_set():
                n += 1
                challenge_id = challenge_ids[(worker + n) % len(challenge_ids)]
                side = "buy" if (worker + n) % 2 else "sell"
                body = {"symbol": "EURUSD", "side": side, "qty": "0.01", "client_order_id": f"p{worker}-{n}"}
                key = uuid.uuid4().hex
                with lock:
                    intended[key] = (challenge_id, body)
                place(client, key, challenge_id, body)

    def get(client: httpx.Client, path: str) -> httpx.Response:
        # nginx retries a GET that a dying replica never answered. A replica killed between
        # its response's headers and its body leaves nginx holding a response it has begun
        # to send: the body arrives cut short, and the client retries that GET, as browsers
        # and HTTP libraries do for a reset idempotent request. Counted and printed.
        try:
            return client.get(path)
        except httpx.RemoteProtocolError:
            gets["cut_short"] += 1
            return client.get(path)

    def reads() -> None:
        with httpx.Client(base_url=prod.url, headers=headers, timeout=10) as client:
            while not stop.is_set():
                for path in (f"/api/v1/challenges/{challenge_ids[0]}", "/api/v1/plans", "/health/ready"):
                    try:
                        response = get(client, path)
                    except httpx.TransportError as exc:
                        get_failures.append(f"{path}: {exc!r}")
                        continue
                    if response.status_code != 200:
                        get_failures.append(f"{path}: {response.status_code} {response.text[:200]}")
                    else:
                        gets["ok"] += 1

    threads = [threading.Thread(target=orders, args=(w,)) for w in range(4)]
    threads += [threading.Thread(target=reads) for _ in range(2)]
    for t in threads:
        t.start()
    kills = []
    try:
        time.sleep(2)
        for _ in range(3):
            old = prod.kill_9("web-1")
            started = time.monotonic()
            new = prod.wait_running("web-1", old_pid=old, timeout=60)
            kills.append((old, new, round(time.monotonic() - started, 1)))
            time.sleep(2)  # orders flow over both replicas again before the next kill
        # nginx skips a replica that failed 3 times for fail_timeout (10 s), then tries
        # it again: the restarted replica must be serving through nginx by then.
        web_1 = f"127.0.0.1:{prod.stack.program('web-1').port}"
        rejoined_from = len(prod.access_log())
        back = time.monotonic()
        while web_1 not in prod.served_by(prod.access_log()[rejoined_from:]) and time.monotonic() - back < 20:
            time.sleep(0.5)
        rejoined_after = time.monotonic() - back
    finally:
        stop.set()
        for t in threads:
            t.join(90)
    print(f"\nkills (old pid, new pid, seconds to serve again): {kills}")
    print(f"orders intended {len(intended)}, acknowledged {len(acknowledged)}, refused {len(refused)}; GETs ok {gets['ok']}, cut short by a kill and retried {gets['cut_short']}")
    print(f"nginx sent web-1 traffic again {rejoined_after:.1f} s after its last restart")

    assert len(kills) == 3
    assert not get_failures, get_failures[:5]
    assert not refused, refused[:5]
    assert set(acknowledged) == set(intended)  # every intended order was answered in the end
    assert web_1 in prod.served_by(prod.access_log()[rejoined_from:]), "nginx sent nothing to the restarted replica"

    url = prod.env["DATABASE_URL"]
    rows = sql(url, "SELECT id, challenge_id, client_order_id FROM challenges_order WHERE challenge_id = ANY(%s)", challenge_ids)
    by_client_id: dict[tuple[int, str], list[int]] = {}
    for order_id, challenge_id, client_order_id in rows:
        by_client_id.setdefault((challenge_id, client_order_id), []).append(order_id)
    # Exactly one order per intention, and it is the one the client was told about.
    assert len(rows) == len(intended)
    for key, (challenge_id, body) in intended.items():
        assert by_client_id[(challenge_id, body["client_order_id"])] == [acknowledged[key]["id"]]
    # The ledger explains every balance.
    for challenge_id in challenge_ids:
        (balance, starting, version), = sql(
            url, "SELECT balance, starting_balance, version FROM challenges_challenge WHERE id = %s", challenge_id
        )
        (ledger,), = sql(url, "SELECT COALESCE(SUM(amount), 0) FROM challenges_ledgerentry WHERE challenge_id = %s", challenge_id)
        assert balance == starting + Decimal(ledger)
        placed = sum(1 for c, _ in intended.values() if c == challenge_id)
        assert version == 1 + placed


def _start_time(prod, port: int) -> set[str]:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    return {line.split()[-1] for line in text.splitlines() if line.startswith("process_start_time_seconds")}


def test_restart_metric_is_flat_across_workers_and_moves_once_per_replica_restart(prod):
    port = prod.stack.program("web-2").port
    seen: set[str] = set()
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
        for i in range(1000):
            assert client.get("/health/live").status_code == 200
            if i % 50 == 0:
                seen |= _start_time(prod, port)
    # One start time for the replica, whichever of its workers answered the scrape.
    assert len(seen) == 1, seen
    instance = f'instance="127.0.0.1:{port}"'
    time.sleep(3)
    (before,) = prod.query(f"changes(process_start_time_seconds{{{instance}}}[10m])")
    assert before["value"][1] == "0"

    old = prod.kill_9("web-2")
    prod.wait_running("web-2", old_pid=old)
    after_restart = _start_time(prod, port)
    assert len(after_restart) == 1 and after_restart != seen
    deadline = time.monotonic() + 30
    value = None
    while time.monotonic() < deadline:
        result = prod.query(f"changes(process_start_time_seconds{{{instance}}}[10m])")
        value = result[0]["value"][1] if result else None
        if value == "1":
            break
        time.sleep(1)
    assert value == "1"


def test_worker_heartbeat_alert_fires_when_the_worker_is_down_and_resolves_after(prod):
    """WorkerHeartbeatStale (> 30 s for 30 s) fires with the worker held down, then
    resolves once it runs again."""
    assert not prod.firing("WorkerHeartbeatStale")
    prod.ctl("stop", "worker")
    try:
        stopped = time.monotonic()
        deadline = stopped + 120
        while not prod.firing("WorkerHeartbeatStale") and time.monotonic() < deadline:
            time.sleep(2)
        fired_after = time.monotonic() - stopped
        assert prod.firing("WorkerHeartbeatStale"), f"not firing {fired_after:.0f} s after the worker stopped"
        print(f"\nWorkerHeartbeatStale fired {fired_after:.0f} s after the worker stopped")
        # The worker's own target is down too: Prometheus sees the process gone.
        assert [r["value"][1] for r in prod.query('up{job="tradesense-worker"}')] == ["0"]
    finally:
        prod.ctl("start", "worker")
    started = time.monotonic()
    deadline = started + 60
    while prod.firing("WorkerHeartbeatStale") and time.monotonic() < deadline:
        time.sleep(1)
    assert not prod.firing("WorkerHeartbeatStale")
    print(f"resolved {time.monotonic() - started:.0f} s after the worker started")
