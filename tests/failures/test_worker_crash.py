"""Seed failure mode 2, worker crash: a real Celery worker and beat (not eager) against
the test Postgres database and Redis; prices move so that 50 of 500 challenges breach;
the worker is SIGKILLed twice while sweeps run and restarted. Afterwards: exactly those
50 failed, each with one breach record (and one closing fill), the warned ones were
warned once per level, and every other challenge was evaluated within two sweep
intervals of the final restart."""

from __future__ import annotations

import os
import tempfile
from datetime import timedelta
from decimal import Decimal

import pytest
import redis
from django.conf import settings
from django.db.models import Count, Sum

from challenges.market import market_price_set
from challenges.models import Breach, Challenge, LedgerEntry, Order, Position
from risk.models import RiskWarning, SweepTick, WorkerHeartbeat
from tests.risk.factories import Group, bulk_open_challenges, flat_instrument
from tests.support.processes import app_env, celery, wait_for
from tradesense.common.models import AuditEvent

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

INTERVAL = 1.0  # RISK_SWEEP_SECONDS for the subprocesses
WORKER_NAME = "risk-crash@%h"


def _database_url() -> str:
    db = settings.DATABASES["default"]
    return f"postgres://{db['USER'] or 'postgres'}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


def _purge_my_queue(url: str) -> None:
    # Only this test's Redis database index, and only kombu's queue keys: never FLUSHALL.
    client = redis.Redis.from_url(url)
    client.delete("celery", "unacked", "unacked_index", "unacked_mutex")
    client.close()


def _count_failed(ids) -> int:
    return Challenge.objects.filter(pk__in=ids, status="failed").count()


def _wait_running_sweep(after, timeout=20.0) -> SweepTick:
    found = {}

    def running():
        tick = SweepTick.objects.filter(started_at__gte=after, finished_at__isnull=True).order_by("-tick").first()
        if tick is not None:
            found["tick"] = tick
            return True
        return False

    wait_for(running, timeout, interval=0.01, what="a sweep in progress")
    return found["tick"]


def _start_worker(env):
    worker = celery(
        "worker", env, "--concurrency=2", "--pool=prefork", "-n", WORKER_NAME,
        "--without-gossip", "--without-mingle", "--without-heartbeat",
    ).start()
    pid = worker.popen.pid
    wait_for(
        lambda: WorkerHeartbeat.objects.filter(pid=pid).exists() or worker.popen.poll() is not None,
        40, interval=0.1, what="the worker's first heartbeat",
    )
    if worker.popen.poll() is not None:
        raise RuntimeError(f"worker exited at start:\n{worker.logs()}")
    return worker, WorkerHeartbeat.objects.get(pid=pid).beat_at


def test_worker_killed_twice_mid_sweep_misses_nothing_and_repeats_nothing(plans, staff):
    redis_url = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/3"
    _purge_my_queue(redis_url)
    var_dir = tempfile.mkdtemp(prefix="ts-risk-crash-")
    env = app_env(
        database_url=_database_url(),
        redis_url=redis_url,
        RISK_SWEEP_SECONDS=str(INTERVAL),
        TRADESENSE_VAR_DIR=var_dir,
        WORKER_HEARTBEAT_FILE=os.path.join(var_dir, "worker-heartbeat"),
        LOG_LEVEL="WARNING",
    )
    instrument = flat_instrument("RSKTEST", price=Decimal("1000.00"))
    # Starter: 5000 start, daily limit 250 (floor 4750), total 500. At 750.00 a unit loses 250.
    ids = bulk_open_challenges(
        plan=plans["starter"],
        instrument=instrument,
        groups=[
            Group("doomed", 50, Decimal("2")),  # -500: equity 4500 < 4750, breach
            Group("warned", 50, Decimal("0.8")),  # -200: 80 % of the daily limit
            Group("calm", 400, Decimal("0.1")),  # -25
        ],
        prefix="crash",
    )
    doomed, warned, calm = ids["doomed"], ids["warned"], ids["calm"]
    survivors = warned + calm
    procs = []
    try:
        beat = celery("beat", env, "-s", os.path.join(var_dir, "beat-schedule")).start()
        procs.append(beat)
        worker, _ = _start_worker(env)
        procs.append(worker)
        wait_for(
            lambda: SweepTick.objects.filter(finished_at__isnull=False, evaluated__gte=500).exists(),
            30, interval=0.05, what="a first full sweep",
        )
        assert Challenge.objects.filter(status="active").count() == 500
        assert not RiskWarning.objects.exists()

        market_price_set(symbol="RSKTEST", price=Decimal("750.00"), actor=staff)
        price_moved = AuditEvent.objects.filter(action="market.price_set").latest("id").created_at

        # Kill 1: while the sweep that meets the new price is failing the doomed ones.
        interrupted = _wait_running_sweep(price_moved)
        wait_for(lambda: _count_failed(doomed) >= 1, 20, interval=0.002, what="the first breach")
        worker.kill()
        procs.remove(worker)
        failed_after_kill_1 = _count_failed(doomed)
        # It really died mid-sweep, with breaches left to do.
        assert SweepTick.objects.get(pk=interrupted.pk).finished_at is None
        assert failed_after_kill_1 < 50

        # Kill 2: the restarted worker, during its first sweep.
        worker, restarted_at = _start_worker(env)
        procs.append(worker)
        interrupted = _wait_running_sweep(restarted_at)
        worker.kill()
        procs.remove(worker)
        failed_after_kill_2 = _count_failed(doomed)
        assert SweepTick.objects.get(pk=interrupted.pk).finished_at is None

        # The final restart: everything must be caught up within two intervals.
        worker, ready_at = _start_worker(env)
        procs.append(worker)
        catch_up = {}

        def caught_up():
            tick = (
                SweepTick.objects.filter(started_at__gte=ready_at, finished_at__isnull=False, evaluated__gte=len(survivors))
                .order_by("tick")
                .first()
            )
            if tick is not None:
                catch_up["tick"] = tick
                return True
            return False

        wait_for(caught_up, 20, interval=0.05, what="a full sweep after the restart")
        tick = catch_up["tick"]
        assert tick.started_at - ready_at <= timedelta(seconds=2 * INTERVAL), (tick.started_at, ready_at)
        # Every survivor was marked by a sweep after the restart (none was missed).
        stale = Challenge.objects.filter(pk__in=survivors, marked_at__lt=ready_at).count()
        assert stale == 0

        # Exactly the 50 doomed failed, each once, with one breach and one closing fill.
        assert set(Challenge.objects.filter(status="failed").values_list("id", flat=True)) == set(doomed)
        assert Challenge.objects.filter(pk__in=survivors, status="active").count() == 450
        assert Breach.objects.count() == 50
        assert set(Breach.objects.values_list("challenge_id", flat=True)) == set(doomed)
        assert set(Breach.objects.values_list("rule", "threshold", "observed")) == {
            ("max_daily_loss", Decimal("4750.00"), Decimal("4500.00"))
        }
        assert not Position.objects.filter(challenge_id__in=doomed).exists()
        closes = Order.objects.filter(reason="breach").values("challenge_id").annotate(n=Count("id"))
        assert {row["challenge_id"]: row["n"] for row in closes} == {cid: 1 for cid in doomed}
        ledger = LedgerEntry.objects.filter(challenge_id__in=doomed).values("challenge_id").annotate(
            n=Count("id"), total=Sum("amount")
        )
        assert {(r["n"], r["total"]) for r in ledger} == {(1, Decimal("-500.00"))}
        assert set(Challenge.objects.filter(pk__in=doomed).values_list("balance", flat=True)) == {Decimal("4500.00")}
        assert AuditEvent.objects.filter(action="challenge.failed").count() == 50

        # Warnings: the warned ones at 50 % and 80 % of the daily limit, once each.
        warnings = list(RiskWarning.objects.values_list("challenge_id", "rule", "level"))
        assert len(warnings) == len(set(warnings)) == 100
        assert set(warnings) == {(cid, "max_daily_loss", level) for cid in warned for level in (50, 80)}
        alerts = AuditEvent.objects.filter(action="risk.warning").values("object_id").annotate(n=Count("id"))
        assert {int(r["object_id"]): r["n"] for r in alerts} == {cid: 1 for cid in warned}

        # The survivors' marks are the current price's equity.
        equities = dict(Challenge.objects.filter(pk__in=survivors).values_list("id", "equity"))
        assert {equities[cid] for cid in warned} == {Decimal("4800.00")}
        assert {equities[cid] for cid in calm} == {Decimal("4975.00")}
        print(
            f"\nworker crash: failed after kill 1: {failed_after_kill_1}, after kill 2: {failed_after_kill_2}, "
            f"catch-up sweep started {(tick.started_at - ready_at).total_seconds():.2f}s after the restart, "
            f"took {tick.duration_ms} ms"
        )
    except BaseException:
        for proc in procs:
            print(f"--- {proc.name} log ---\n{proc.logs()}")
        raise
    finally:
        for proc in procs:
            proc.kill()
        _purge_my_queue(redis_url)
