"""Profile one process placing orders through the full Django stack (a helper of
bench_orders.py, not run by `make bench`).

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/ts_bench_orders .venv/bin/python bench/orders_profile.py [N]
    options: --cpu      profile on the CPU clock (time.process_time) instead of the wall clock
             --measure  no profiler: CPU ms and wall ms per order only (quick A/B of a change)
             --sql      print the SQL statements of one buy and one sell, then stop

Uses the database bench_orders.py seeded (run it first). Requests go straight into
Django's WSGIHandler (what gunicorn calls, without the HTTP parsing), each with a token,
an Idempotency-Key and a client_order_id, as the benchmark sends them. Prints the
hottest functions by cumulative and by own time, and the time per order.
PROFILE_NO_EVENTS=1 leaves the live-event transport out. PROFILE_BEFORE=savepoint,drfthrottle
puts back what a change replaced (a before/after in one tree); BENCH_VARIANT=perframe with
DJANGO_SETTINGS_MODULE=bench.orders_settings sends one live message per frame.
"""

from __future__ import annotations

import argparse
import cProfile
import io
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

from bench_orders import _cpu_seconds, backend_pids, bench_database_url, server_env  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("n", nargs="?", type=int, default=500)
    parser.add_argument("--cpu", action="store_true")
    parser.add_argument("--measure", action="store_true")
    parser.add_argument("--sql", action="store_true")
    args = parser.parse_args()
    os.environ.update(server_env(bench_database_url()))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tradesense.settings")
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.handlers.wsgi import WSGIHandler
    from django.db import connection

    from accounts.services import token_issue
    from challenges.market import market_tick
    from challenges.models import Challenge

    market_tick()
    if os.environ.get("PROFILE_NO_EVENTS"):
        # Isolate the order path from the live-event transport.
        from tradesense.common import realtime

        realtime.send_frames_now = lambda **kwargs: True
    _patch_for_comparison(set(filter(None, os.environ.get("PROFILE_BEFORE", "").split(","))))
    challenges = list(Challenge.objects.filter(status="active").values_list("pk", "trader_id")[:200])
    # Tokens are stored hashed: issue one per trader for this run.
    users = get_user_model().objects.in_bulk({uid for _, uid in challenges})
    tokens = {uid: token_issue(user=user) for uid, user in users.items()}
    handler = WSGIHandler()
    sides: dict[int, str] = {}

    def one(i: int) -> int:
        cid, uid = challenges[i % len(challenges)]
        side = sides[cid] = "sell" if sides.get(cid) == "buy" else "buy"
        body = json.dumps({"symbol": "EURUSD", "side": side, "qty": "0.01", "type": "market",
                           "client_order_id": uuid.uuid4().hex}).encode()
        environ = {
            "REQUEST_METHOD": "POST", "PATH_INFO": f"/api/v1/challenges/{cid}/orders", "QUERY_STRING": "",
            "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "18050", "SERVER_PROTOCOL": "HTTP/1.1",
            "HTTP_HOST": "127.0.0.1", "REMOTE_ADDR": "127.0.0.1", "wsgi.url_scheme": "http",
            "wsgi.input": io.BytesIO(body), "CONTENT_TYPE": "application/json", "CONTENT_LENGTH": str(len(body)),
            "HTTP_AUTHORIZATION": f"Token {tokens[uid]}", "HTTP_IDEMPOTENCY_KEY": uuid.uuid4().hex,
        }
        status = []
        response = handler(environ, lambda s, h: status.append(s))
        b"".join(response)
        response.close()
        return int(status[0].split()[0])

    for i in range(50):  # warm caches and connections
        one(i)
    if args.sql:
        log: list[str] = []

        def record(execute, sql, params, many, context):
            log.append(sql)
            return execute(sql, params, many, context)

        for i in (50, 50 + len(challenges)):  # a buy and a sell on one challenge
            log.clear()
            with connection.execute_wrapper(record):
                code = one(i)
            print(f"{code}: {len(log)} statements (plus BEGIN, COMMIT and the pool's check)")
            for sql in log:
                print("   ", sql[:160])
        return
    profiler = None
    if not args.measure:
        profiler = cProfile.Profile(time.process_time) if args.cpu else cProfile.Profile()
    url = bench_database_url()
    pids = backend_pids(url)
    db_cpu = {pid: _cpu_seconds(pid) for pid in pids}
    cpu, started = time.process_time(), time.perf_counter()
    if profiler:
        profiler.enable()
    codes = [one(i) for i in range(args.n)]
    if profiler:
        profiler.disable()
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    db_cpu = sum(_cpu_seconds(pid) - db_cpu.get(pid, 0.0) for pid in pids | backend_pids(url))
    print(f"{args.n} orders: {cpu / args.n * 1000:.2f} ms CPU here, {db_cpu / args.n * 1000:.2f} ms CPU in "
          f"PostgreSQL, {elapsed / args.n * 1000:.2f} ms wall each"
          f"{' (profiled)' if profiler else ''}, codes {sorted(set(codes))}")
    if profiler:
        stats = pstats.Stats(profiler)
        if os.environ.get("PROFILE_DUMP"):
            stats.dump_stats(os.environ["PROFILE_DUMP"])
        stats.sort_stats("cumulative").print_stats(60)
        stats.sort_stats("tottime").print_stats(30)


def _patch_for_comparison(names: set[str]) -> None:
    """PROFILE_BEFORE=savepoint,drfthrottle puts back what a change replaced, for a
    before/after in one tree (models are loaded here, which a settings variant cannot do)."""
    from challenges import api, services

    if "savepoint" in names:  # the order in a savepoint of its own, under the record's transaction too
        place = services.order_place
        services.order_place = lambda **kwargs: place(**{**kwargs, "savepoint": True})
    if "drfthrottle" in names:  # DRF's history throttle: one pickled list per trader, read then written
        from rest_framework.throttling import ScopedRateThrottle

        api.OrderListCreateApi.get_throttles = lambda self: [ScopedRateThrottle()]
    if unknown := names - {"savepoint", "drfthrottle"}:
        sys.exit(f"PROFILE_BEFORE: unknown {sorted(unknown)}")


if __name__ == "__main__":
    main()
