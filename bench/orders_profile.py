"""Profile one process placing orders through the full Django stack (a helper of
bench_orders.py, not run by `make bench`).

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/ts_bench_orders .venv/bin/python bench/orders_profile.py [N]

Uses the database bench_orders.py seeded (run it first). Prints the hottest functions
by cumulative and by own time, and the wall time per order. PROFILE_NO_EVENTS=1 leaves
the live-event transport out.
"""

from __future__ import annotations

import cProfile
import json
import os
import pstats
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_orders import bench_database_url, server_env  # noqa: E402


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 500
    os.environ.update(server_env(bench_database_url()))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tradesense.settings")
    import django

    django.setup()
    from django.test import Client
    from rest_framework.authtoken.models import Token

    from challenges.market import market_tick
    from challenges.models import Challenge

    market_tick()
    if os.environ.get("PROFILE_NO_EVENTS"):
        # Isolate the order path from the live-event transport.
        from tradesense.common import realtime

        realtime.send_event_now = lambda **kwargs: True
    challenges = list(Challenge.objects.filter(status="active").values_list("pk", "trader_id")[:200])
    tokens = dict(Token.objects.values_list("user_id", "key"))
    client = Client(HTTP_HOST="127.0.0.1")

    def one(i: int) -> int:
        cid, uid = challenges[i % len(challenges)]
        body = {"symbol": "EURUSD", "side": "buy" if (i // len(challenges)) % 2 == 0 else "sell", "qty": "0.01",
                "client_order_id": uuid.uuid4().hex}
        response = client.post(
            f"/api/v1/challenges/{cid}/orders", json.dumps(body), content_type="application/json",
            headers={"Authorization": f"Token {tokens[uid]}", "Idempotency-Key": uuid.uuid4().hex},
        )
        return response.status_code

    for i in range(50):  # warm caches and connections
        one(i)
    profiler = cProfile.Profile()
    started = time.perf_counter()
    profiler.enable()
    codes = [one(i) for i in range(n)]
    profiler.disable()
    elapsed = time.perf_counter() - started
    print(f"{n} orders in {elapsed:.2f}s: {elapsed / n * 1000:.2f} ms each (profiled), codes {set(codes)}")
    stats = pstats.Stats(profiler)
    stats.sort_stats("cumulative").print_stats(45)
    stats.sort_stats("tottime").print_stats(25)


if __name__ == "__main__":
    main()
