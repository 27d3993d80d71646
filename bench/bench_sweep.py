"""Benchmark (not a test): how long one risk sweep takes for 10,000 and 100,000 active
challenges with open positions, in a database of its own (ts_bench_risk).

    DEBUG=1 DATABASE_URL=postgres://postgres@127.0.0.1:5432/ts_bench_risk .venv/bin/python bench/bench_sweep.py
    (options: --sizes 10000,100000 --batch 2000)

The database name in DATABASE_URL is replaced by ts_bench_risk unless it already is a
bench database, so `make bench` cannot touch the development or test data. For each
size the book is built in bulk (tests/risk/factories.py): 1 % of the challenges hold a
position that breaches at the second price, 1 % one that crosses the 50 % and 80 %
warnings, 98 % a small one. Then:
  screen only   the set-based screening queries alone, every batch (no writes)
  sweep A       price 1000 -> 999: every challenge re-marked, nothing else (bulk path)
  sweep B       price 999 -> 750: 1 % fail (positions closed, breach rows), 1 % warned
                (locked path), 98 % re-marked
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from urllib.parse import urlparse, urlunparse

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
BENCH_DB = "ts_bench_risk"


def _bench_database_url() -> str:
    url = os.environ.get("DATABASE_URL") or "postgres://postgres@127.0.0.1:5432/ts_bench_risk"
    parsed = urlparse(url)
    if parsed.scheme not in {"postgres", "postgresql"}:
        sys.exit("bench_sweep needs PostgreSQL (DATABASE_URL=postgres://...).")
    name = parsed.path.strip("/")
    if not name.startswith("ts_bench"):
        parsed = parsed._replace(path=f"/{BENCH_DB}")
    return urlunparse(parsed)


def _ensure_database(url: str) -> None:
    import psycopg

    parsed = urlparse(url)
    name = parsed.path.strip("/")
    admin = urlunparse(parsed._replace(path="/postgres"))
    with psycopg.connect(admin, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{name}"')


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--batch", type=int, default=2000)
    args = parser.parse_args()

    url = _bench_database_url()
    _ensure_database(url)
    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("DEBUG", "1")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tradesense.settings")
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    import django

    django.setup()
    from decimal import Decimal

    from django.core.management import call_command
    from django.db import connection

    from challenges.management.commands.seed_demo import seed_plans
    from challenges.market import market_price_set
    from challenges.models import Challenge
    from risk.selectors import risk_screen_batch
    from risk.services import risk_sweep_run
    from tests.risk.factories import Group, bulk_open_challenges, flat_instrument

    call_command("migrate", verbosity=0)
    plans = {p.slug: p for p in seed_plans()}
    print(f"database {connection.settings_dict['NAME']}, batch {args.batch}, cpu count {os.cpu_count()}")
    tick = int(time.time() * 1000)
    for size in [int(s) for s in args.sizes.split(",")]:
        with connection.cursor() as cursor:
            cursor.execute(
                "TRUNCATE challenges_challenge, risk_sweeptick, risk_riskwarning, common_auditevent,"
                " challenges_pricetick RESTART IDENTITY CASCADE"
            )
        instrument = flat_instrument("BENCH", price=Decimal("1000.00"))
        one_pct = max(1, size // 100)
        t0 = time.perf_counter()
        bulk_open_challenges(
            plan=plans["starter"],
            instrument=instrument,
            groups=[
                Group("doomed", one_pct, Decimal("2")),
                Group("warned", one_pct, Decimal("0.8")),
                Group("calm", size - 2 * one_pct, Decimal("0.1")),
            ],
            prefix=f"bench{size}",
        )
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")
        built = time.perf_counter() - t0

        t0 = time.perf_counter()
        after, rows = 0, 0
        while True:
            batch = risk_screen_batch(after_id=after, limit=args.batch)
            if not batch:
                break
            rows += len(batch)
            after = batch[-1].id
        screen = time.perf_counter() - t0

        market_price_set(symbol="BENCH", price=Decimal("999.00"), actor=None)
        tick += 10_000
        t0 = time.perf_counter()
        a = risk_sweep_run(tick=tick, interval_seconds=Decimal("3"), batch_size=args.batch, deadline_seconds=None)
        sweep_a = time.perf_counter() - t0

        market_price_set(symbol="BENCH", price=Decimal("750.00"), actor=None)
        tick += 10_000
        t0 = time.perf_counter()
        b = risk_sweep_run(tick=tick, interval_seconds=Decimal("3"), batch_size=args.batch, deadline_seconds=None)
        sweep_b = time.perf_counter() - t0

        assert a.evaluated == size and a.locked == 0, (a.evaluated, a.locked)
        assert b.failed == one_pct and b.warnings == 2 * one_pct, (b.failed, b.warnings)
        assert Challenge.objects.filter(status="failed").count() == one_pct
        print(
            f"{size:>7} challenges (built in {built:5.1f}s): screen only {screen:6.2f}s ({rows} rows) | "
            f"sweep A marks only {sweep_a:6.2f}s ({size / sweep_a:,.0f}/s) | "
            f"sweep B {one_pct} fail + {one_pct} warned + rest marked {sweep_b:6.2f}s "
            f"(locked path {b.locked}, {size / sweep_b:,.0f}/s)"
        )


if __name__ == "__main__":
    main()
