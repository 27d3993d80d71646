"""Seed failure 6, resource exhaustion: the stack's limits are declared (compose tests in
tests/foundation/test_compose.py), and a web process under sustained load keeps bounded
memory, so a container limit is not slowly eaten by a leak."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
import pytest

from tests.support.processes import app_env, web_server
from tests.support.stack import seed_trader

pytestmark = pytest.mark.slow


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_web_memory_stays_bounded_under_sustained_load(postgres):
    env = app_env(database_url=postgres.url, MARKET_PRICE_MAX_AGE_SECONDS="100000")
    seeded = seed_trader(env, n_challenges=2)
    web = web_server(env).start()
    try:
        headers = {"Authorization": f"Token {seeded['token']}"}
        with httpx.Client(base_url=f"http://127.0.0.1:{web.port}", headers=headers, timeout=10) as client:

            def burst(n: int):
                for i in range(n):
                    cid = seeded["challenges"][i % 2]
                    side = "buy" if (i // 2) % 2 == 0 else "sell"  # each challenge alternates
                    body = {"symbol": "EURUSD", "side": side, "qty": "0.1", "type": "market",
                            "client_order_id": uuid.uuid4().hex}
                    assert client.post(f"/api/v1/challenges/{cid}/orders", json=body).status_code == 201
                    assert client.get(f"/api/v1/challenges/{cid}").status_code == 200
                    # Bad input on the same path must not leak either.
                    assert client.post(f"/api/v1/challenges/{cid}/orders", json={"qty": "NaN"}).status_code == 400

            burst(300)  # warm-up: imports, pools, caches
            warm = rss_mib(web.popen.pid)
            burst(900)
            after = rss_mib(web.popen.pid)
    finally:
        web.kill()
    print(f"web RSS after warm-up {warm:.1f} MiB, after 2,700 more requests {after:.1f} MiB")
    assert after - warm < 25, f"web RSS grew from {warm:.1f} MiB to {after:.1f} MiB over 2,700 requests"
