"""Metrics an operator can trust, checked on real processes:

- a real gunicorn (ops/gunicorn.conf.py, 3 sync workers, PROMETHEUS_MULTIPROC_DIR):
  /metrics adds up every worker's counters, process_start_time_seconds describes the
  replica (identical on every scrape, whichever worker answers; changed once by a
  restart, not by a worker's death), and the pool figures are the replica's;
- a real Celery worker and beat with METRICS_PORT serve their own metrics, the worker's
  task counters counting what its prefork children ran.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import time
from collections import Counter as Tally
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
import redis
from django.conf import settings
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from tests.support.processes import VENV_BIN, Proc, app_env, celery, port_open, wait_for

# Tests with real processes: these share the test database, so data must be committed.
REAL = pytest.mark.django_db(transaction=True)

POOL_MAX = 4  # DB_POOL_MAX of the servers under test
WORKERS = 3


def free_port_in_range(low: int = 18400, high: int = 18500) -> int:
    for port in range(low, high):
        with contextlib.suppress(OSError), socket.socket() as s:
            s.bind(("127.0.0.1", port))
            return port
    raise RuntimeError(f"no free port in {low}-{high - 1}")


def database_url() -> str:
    db = settings.DATABASES["default"]
    return f"postgres://{db['USER'] or 'postgres'}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


def redis_url() -> str:
    return os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/6"


def samples(text: str) -> dict[tuple, float]:
    """{(name, sorted labels): value} of a Prometheus text body."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(scrape: dict, name: str, **labels) -> float:
    return scrape[(name, tuple(sorted(labels.items())))]


def scrape(base: str) -> dict:
    response = httpx.get(f"{base}/metrics", timeout=10)
    assert response.status_code == 200, response.text[:500]
    return samples(response.text)


# --- gunicorn ------------------------------------------------------------------------------------


def gunicorn(env: dict, port: int, access_log: Path) -> Proc:
    argv = [
        str(VENV_BIN / "gunicorn"), "-c", "ops/gunicorn.conf.py", "tradesense.wsgi:application",
        "--bind", f"127.0.0.1:{port}", "--workers", str(WORKERS), "--worker-class", "sync", "--timeout", "30",
        # Each request's worker pid, to see that the load was spread over the workers.
        "--access-logfile", str(access_log), "--access-logformat", "%(p)s %(U)s",
    ]
    return Proc("gunicorn", argv, env, port)


def log_lines(access_log: Path) -> int:
    return len(access_log.read_text().splitlines())


def served_by(access_log: Path, path: str, since_line: int = 0) -> Tally:
    """How many requests for `path` each worker pid answered (from line `since_line` on)."""
    pids = Tally()
    for line in access_log.read_text().splitlines()[since_line:]:
        match = re.fullmatch(r"<(\d+)> (\S+)", line.strip())
        if match and match.group(2) == path:
            pids[int(match.group(1))] += 1
    return pids


def plan_lookups(scraped: dict) -> float:
    return value(scraped, "tradesense_cache_requests_total", cache="plans", result="hit") + value(
        scraped, "tradesense_cache_requests_total", cache="plans", result="miss"
    )


def get_many(url: str, n: int, threads: int = 6) -> list[int]:
    def one(_):
        return httpx.get(url, timeout=10).status_code

    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(one, range(n)))


def scrape_many(base: str, n: int) -> list[dict]:
    # One at a time, as Prometheus scrapes: the scrape's own connection is then the only
    # one in use. The workers take turns at accepting, so several answer.
    return [scrape(base) for _ in range(n)]


def replica_ready(base: str) -> None:
    """Every worker has booted and published its pool maximum (post_worker_init)."""
    wait_for(
        lambda: scrape(base).get(("tradesense_db_pool_connections_max", ())) == WORKERS * POOL_MAX,
        30, interval=0.2, what=f"{WORKERS} workers' pools on /metrics",
    )


@pytest.mark.slow
@REAL
def test_gunicorn_replica_metrics_add_up_workers_and_survive_only_real_restarts(plans, tmp_path):
    from django.core.cache import cache

    from challenges.catalogue import PLANS_CACHE

    cache.delete(PLANS_CACHE.key)
    port = free_port_in_range()
    base = f"http://127.0.0.1:{port}"
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    (metrics_dir / "counter_999999.db").write_bytes(b"stale")  # a previous run's leftovers
    env = app_env(
        database_url=database_url(), redis_url=redis_url(), PROMETHEUS_MULTIPROC_DIR=str(metrics_dir),
        DB_POOL_MIN="1", DB_POOL_MAX=str(POOL_MAX), LOG_LEVEL="WARNING",
    )
    access_log = tmp_path / "access.log"
    server = gunicorn(env, port, access_log)
    try:
        launched = time.time()
        server.start()
        replica_ready(base)
        assert not (metrics_dir / "counter_999999.db").exists()

        assert set(get_many(f"{base}/api/v1/plans", 300)) == {200}
        assert len(served_by(access_log, "/api/v1/plans")) >= 2, "the load should reach several workers"

        mark = log_lines(access_log)
        before = scrape_many(base, 20)
        assert len(served_by(access_log, "/metrics", mark)) >= 2, "scrapes should reach several workers"
        for scraped in before:
            assert plan_lookups(scraped) == 300  # every worker's count, on every scrape
            assert value(scraped, "tradesense_db_pool_connections_max") == WORKERS * POOL_MAX
        # In use: the scrape's own connection; at most one more, from the worker that
        # answered the previous scrape and may still be giving its connection back.
        in_use = [value(s, "tradesense_db_pool_connections_in_use") for s in before]
        assert set(in_use) <= {1, 2} and in_use.count(1) >= len(in_use) // 2, in_use
        started = {value(s, "process_start_time_seconds") for s in before}
        assert len(started) == 1, started
        replica_start = started.pop()
        assert launched - 1 <= replica_start <= time.time()

        # One worker dies and gunicorn replaces it: not a restart of the replica. Its
        # counts stay in the total; its pool no longer counts (child_exit).
        victim = next(iter(served_by(access_log, "/api/v1/plans")))
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda: not Path(metrics_dir / f"gauge_livesum_{victim}.db").exists(), 20, what="the dead worker marked")
        replica_ready(base)  # the replacement counted, the dead one not (16 if it still were)
        after_death = scrape_many(base, 8)
        for scraped in after_death:
            assert plan_lookups(scraped) == 300
            assert value(scraped, "tradesense_db_pool_connections_max") == WORKERS * POOL_MAX
            assert value(scraped, "process_start_time_seconds") == replica_start

        # The whole replica is killed (as a container is) and started again.
        server.kill()
        server = gunicorn(env, port, access_log)
        server.start()
        replica_ready(base)
        assert set(get_many(f"{base}/api/v1/plans", 30)) == {200}
        after_restart = scrape_many(base, 8)
        for scraped in after_restart:
            assert plan_lookups(scraped) == 30  # the previous run's files were wiped at start
            assert value(scraped, "tradesense_db_pool_connections_max") == WORKERS * POOL_MAX

        # What Prometheus' changes() sees over the whole run: exactly one change.
        series = [value(s, "process_start_time_seconds") for s in before + after_death + after_restart]
        assert sum(1 for a, b in zip(series, series[1:], strict=False) if a != b) == 1
        assert series[-1] > replica_start
    finally:
        server.kill()


# --- Celery ----------------------------------------------------------------------------------------


def purge_my_queue() -> None:
    # Only this test's Redis database index, and only kombu's queue keys: never FLUSHALL.
    client = redis.Redis.from_url(redis_url())
    client.delete("celery", "unacked", "unacked_index", "unacked_mutex")
    client.close()


def celery_env(tmp_path: Path, metrics_port: int) -> dict:
    return app_env(
        database_url=database_url(), redis_url=redis_url(), METRICS_PORT=str(metrics_port),
        WORKER_HEARTBEAT_FILE=str(tmp_path / "worker-heartbeat"), TRADESENSE_VAR_DIR=str(tmp_path),
        LOG_LEVEL="WARNING",
    )


@pytest.mark.slow
@REAL
def test_celery_worker_serves_its_metrics_counting_what_its_children_ran(tmp_path):
    from tradesense.celery import app

    purge_my_queue()
    port = free_port_in_range()
    base = f"http://127.0.0.1:{port}"
    worker = celery(
        "worker", celery_env(tmp_path, port), "--pool=prefork", "--concurrency=2", "-n", "metrics-test@%h",
        "--without-gossip", "--without-mingle", "--without-heartbeat",
    )
    try:
        launched = time.time()
        worker.start()
        wait_for(lambda: port_open(port) or worker.popen.poll() is not None, 60, what="the worker's metrics port")
        assert worker.popen.poll() is None, worker.logs()

        for _ in range(3):
            app.send_task("risk.tasks.risk_daily_reset")
        for _ in range(2):
            app.send_task("risk.tasks.risk_daily_reset", args=[1])  # a wrong call: the task fails

        def counted() -> bool:
            scraped = scrape(base)
            return (
                scraped.get(("tradesense_celery_tasks_total", (("outcome", "succeeded"), ("task", "risk.tasks.risk_daily_reset")))) == 3
                and scraped.get(("tradesense_celery_tasks_total", (("outcome", "failed"), ("task", "risk.tasks.risk_daily_reset")))) == 2
            )

        wait_for(counted, 60, interval=0.5, what="3 successes and 2 failures on the worker's /metrics")
        scraped = scrape(base)
        assert launched - 1 <= value(scraped, "process_start_time_seconds") <= time.time()
        assert 0 <= value(scraped, "tradesense_worker_heartbeat_age_seconds") < 30
    finally:
        worker.stop()
        purge_my_queue()
    assert not port_open(port), "the metrics port is released with the worker"


@pytest.mark.slow
@REAL
def test_beat_serves_its_start_time_and_the_ticks_it_sent(tmp_path):
    purge_my_queue()
    port = free_port_in_range()
    base = f"http://127.0.0.1:{port}"
    env = celery_env(tmp_path, port) | {"MARKET_TICK_SECONDS": "0.5"}
    beat = celery("beat", env, "-s", str(tmp_path / "beat-schedule"))
    try:
        launched = time.time()
        beat.start()
        wait_for(lambda: port_open(port) or beat.popen.poll() is not None, 60, what="beat's metrics port")
        assert beat.popen.poll() is None, beat.logs()

        def sent(entry: str) -> float:
            return scrape(base).get(("tradesense_beat_sends_total", (("entry", entry), ("outcome", "sent"))), 0)

        wait_for(lambda: sent("market-tick") >= 3, 30, interval=0.5, what="beat to send three market ticks")
        assert launched - 1 <= value(scrape(base), "process_start_time_seconds") <= time.time()
    finally:
        beat.stop()
        purge_my_queue()


# --- The counting itself, in this process ----------------------------------------------------------


def tasks_total(task: str, outcome: str) -> float:
    return REGISTRY.get_sample_value("tradesense_celery_tasks_total", {"task": task, "outcome": outcome}) or 0.0


def test_task_outcomes_are_counted_retries_included():
    from tradesense.celery import app

    @app.task(bind=True, name="tests.metrics.flaky", max_retries=3)
    def flaky(self):
        if self.request.retries == 0:
            raise self.retry(countdown=0)
        return "ok"

    @app.task(name="tests.metrics.broken")
    def broken():
        raise ValueError("broken on purpose")

    before = {o: tasks_total("tests.metrics.flaky", o) for o in ("succeeded", "retried")}
    failed_before = tasks_total("tests.metrics.broken", "failed")
    flaky.apply()
    broken.apply()
    assert tasks_total("tests.metrics.flaky", "retried") == before["retried"] + 1
    assert tasks_total("tests.metrics.flaky", "succeeded") == before["succeeded"] + 1
    assert tasks_total("tests.metrics.broken", "failed") == failed_before + 1


def test_beat_counts_a_tick_it_could_not_send(tmp_path, monkeypatch):
    from celery.beat import ScheduleEntry, SchedulingError
    from kombu.exceptions import OperationalError

    import risk.tasks  # noqa: F401 - registers the task the entry names
    from tradesense.celery import app
    from tradesense.celery_metrics import MeasuredScheduler

    scheduler = MeasuredScheduler(app=app, schedule_filename=str(tmp_path / "schedule"))
    entry = ScheduleEntry(name="probe", task="risk.tasks.risk_daily_reset", schedule=timedelta(seconds=1), app=app)

    def broker_down(*args, **kwargs):
        raise OperationalError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    monkeypatch.setattr(app.tasks["risk.tasks.risk_daily_reset"], "apply_async", broker_down)
    with pytest.raises(SchedulingError):
        scheduler.apply_async(entry, advance=False)
    assert REGISTRY.get_sample_value("tradesense_beat_sends_total", {"entry": "probe", "outcome": "failed"}) == 1
    assert REGISTRY.get_sample_value("tradesense_beat_sends_total", {"entry": "probe", "outcome": "sent"}) is None
    scheduler.close()


# --- The fake payment processor --------------------------------------------------------------------


@pytest.mark.slow
def test_fake_processor_serves_its_restarts_and_charges_by_outcome(tmp_path):
    from tests.payments.fixtures import SECRET, start_fake_processor

    port = free_port_in_range()
    base = f"http://127.0.0.1:{port}"
    state = str(tmp_path / "processor.sqlite3")
    launched = time.time()
    proc = start_fake_processor(port, state=state)
    try:
        api = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {SECRET}"}, timeout=10)
        body = {"amount": "200.00", "currency": "MAD", "payment_method": "card"}
        for key, token in (("k1", "tok_visa"), ("k2", "tok_visa"), ("k3", "tok_decline"), ("k1", "tok_visa")):
            api.post("/v1/charges", json=body | {"token": token}, headers={"Idempotency-Key": key})
        first = scrape(base)  # no secret needed, as for Prometheus
        assert value(first, "fake_processor_charges_total", outcome="succeeded") == 2
        assert value(first, "fake_processor_charges_total", outcome="declined") == 1
        assert value(first, "fake_processor_replays_total") == 1
        started = value(first, "process_start_time_seconds")
        assert launched - 1 <= started <= time.time()

        proc.kill()
        proc = start_fake_processor(port, state=state)
        again = scrape(base)
        assert value(again, "process_start_time_seconds") > started  # the restart shows
        assert value(again, "fake_processor_charges_total", outcome="succeeded") == 2  # kept in the state file
        api.close()
    finally:
        proc.stop()
