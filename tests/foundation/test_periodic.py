"""The database lease that runs each periodic job once per interval (tradesense.common.periodic).

The claim tests run on whichever database the suite uses (SQLite or PostgreSQL); the
threaded ones need PostgreSQL (SQLite's in-memory test database locks whole tables
between threads, which is not what a real deployment's WAL file does).
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.db import connection, connections
from django.utils import timezone

from risk.services import risk_sweep_tick_for
from tradesense.common import periodic
from tradesense.common.models import PeriodicLease
from tradesense.common.periodic import (
    PeriodicWatchdog,
    periodic_claim,
    periodic_claim_overdue,
    periodic_job_register,
    periodic_run,
    periodic_slot_start,
)

SECOND = timedelta(seconds=1)
INTERVAL = timedelta(seconds=3)  # the interval of most tests
HALF = INTERVAL / 2
T0 = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)  # a slot boundary for 3 s (and 1 s, 30 s)

needs_postgres = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="threads claiming at once need PostgreSQL's row locks"
)


def lease(name: str = "job") -> PeriodicLease:
    return PeriodicLease.objects.get(name=name)


def beat(now: datetime, name: str = "job", runner: str = "task:w1") -> bool:
    return periodic_claim(name=name, interval=INTERVAL, now=now, runner=runner)


def watchdog(now: datetime, name: str = "job", runner: str = "watchdog:h:1") -> bool:
    return periodic_claim_overdue(name=name, interval=INTERVAL, overdue=HALF, now=now, runner=runner)


def test_slot_start_floors_exactly_and_agrees_with_the_sweep_tick():
    now = datetime(2025, 1, 1, 0, 0, 7, 400000, tzinfo=UTC)
    assert periodic_slot_start(now=now, interval=INTERVAL) == datetime(2025, 1, 1, 0, 0, 6, tzinfo=UTC)
    assert periodic_slot_start(now=now, interval=SECOND / 2) == datetime(2025, 1, 1, 0, 0, 7, tzinfo=UTC)
    assert periodic_slot_start(now=now, interval=timedelta(seconds=30)) == datetime(2025, 1, 1, tzinfo=UTC)
    # A boundary belongs to the slot it starts; one microsecond before it, to the previous one.
    assert periodic_slot_start(now=T0, interval=INTERVAL) == T0
    assert periodic_slot_start(now=T0 - timedelta(microseconds=1), interval=INTERVAL) == T0 - INTERVAL
    # A risk-sweep slot is exactly a SweepTick tick (ms since the epoch, floored).
    slot = periodic_slot_start(now=now, interval=INTERVAL)
    assert (slot - periodic.EPOCH) // timedelta(milliseconds=1) == risk_sweep_tick_for(
        now=now, interval_seconds=Decimal("3")
    )
    with pytest.raises(ValueError):
        periodic_slot_start(now=now, interval=timedelta(0))


@pytest.mark.django_db
def test_one_claim_per_slot_the_first_creates_the_row():
    assert not PeriodicLease.objects.exists()
    assert beat(T0 + SECOND, runner="task:w1")
    assert not beat(T0 + 2 * SECOND, runner="task:w2")  # the same slot: a second beat, a redelivery
    row = lease()
    assert (row.next_due_at, row.last_run_at, row.last_runner, row.interval) == (T0 + INTERVAL, T0 + SECOND, "task:w1", INTERVAL)
    # The loser still said beat is alive.
    assert row.beat_seen_at == T0 + 2 * SECOND
    # The next slot opens at its boundary, once.
    assert not beat(T0 + INTERVAL - timedelta(microseconds=1))
    assert beat(T0 + INTERVAL)
    assert not beat(T0 + INTERVAL + SECOND)
    assert lease().next_due_at == T0 + 2 * INTERVAL


@pytest.mark.django_db
def test_the_watchdog_takes_a_slot_only_when_beats_next_task_is_half_an_interval_late():
    # Beat runs late in its slot (2.5 s into a 3 s slot): its next task is due at T0+5.5 s.
    assert beat(T0 + 2.5 * SECOND)
    # The next slot is free from T0+3 s and half of it has passed at T0+4.5 s, but beat is
    # not late yet: the watchdog leaves the slot to it.
    assert not watchdog(T0 + 4.5 * SECOND)
    assert not watchdog(T0 + 6.9 * SECOND)  # 1.4 s late: not yet half an interval
    # Beat's task for T0+5.5 s never came (broker down): at 1.5 intervals the watchdog runs it.
    assert watchdog(T0 + 7 * SECOND)
    assert (lease().last_runner, lease().next_due_at) == ("watchdog:h:1", T0 + 3 * INTERVAL)
    assert not watchdog(T0 + 7.5 * SECOND, runner="watchdog:h:2")  # its slot is taken
    # While beat stays silent the watchdogs take each slot as it opens: the same cadence.
    assert watchdog(T0 + 3 * INTERVAL, runner="watchdog:h:2")
    assert not watchdog(T0 + 3 * INTERVAL, runner="watchdog:h:1")
    assert watchdog(T0 + 4 * INTERVAL + timedelta(milliseconds=5))


@pytest.mark.django_db
def test_beat_back_takes_the_next_slot_even_when_it_lost_this_one():
    assert watchdog(T0)  # no beat ever seen: the watchdog runs it at once
    assert lease().beat_seen_at is None
    # Beat comes back mid-slot and finds the slot taken: it loses, but is now seen...
    assert not beat(T0 + 2 * SECOND)
    # ...so at the next boundary the watchdog stands back, and beat's task wins.
    assert not watchdog(T0 + INTERVAL)
    assert not watchdog(T0 + INTERVAL + 2 * SECOND)
    assert beat(T0 + INTERVAL + 2 * SECOND)
    assert lease().last_runner == "task:w1"


@pytest.mark.django_db
def test_a_changed_interval_frees_the_lease_at_once():
    assert periodic_claim(name="job", interval=timedelta(hours=1), now=T0, runner="task:w1")
    assert lease().next_due_at == T0 + timedelta(hours=1)
    # The setting went from an hour to 3 s: the hour-long claim does not hold the job back.
    assert beat(T0 + SECOND)
    assert (lease().interval, lease().next_due_at) == (INTERVAL, T0 + INTERVAL)
    assert not beat(T0 + 2 * SECOND)


@pytest.mark.django_db
def test_periodic_run_runs_the_job_once_per_slot(monkeypatch):
    monkeypatch.setattr(periodic, "_JOBS", {})
    runs = []

    def job(*, now, interval, runner):
        runs.append((now, interval, runner))
        return len(runs)

    periodic_job_register(name="counted", run=job, default_interval=INTERVAL)  # not in the beat schedule
    assert periodic_run(name="counted", runner="task:w1", now=T0 + SECOND) == 1
    assert periodic_run(name="counted", runner="task:w2", now=T0 + 2 * SECOND) is None
    assert periodic_run(name="counted", runner="task:w1", now=T0 + INTERVAL) == 2
    assert runs == [(T0 + SECOND, INTERVAL, "task:w1"), (T0 + INTERVAL, INTERVAL, "task:w1")]


@pytest.mark.django_db
def test_the_real_jobs_read_their_interval_from_the_beat_schedule(settings):
    # Beat and the watchdogs must agree on the interval, or they would claim different slots.
    import challenges.tasks  # noqa: F401 - registers the job
    import payments.tasks  # noqa: F401
    import risk.tasks  # noqa: F401

    names = {job.name for job in periodic.periodic_jobs()}
    assert {"market-tick", "risk-sweep", "risk-daily-reset", "payments-sweep", "payments-reconcile"} <= names
    for name in names & set(settings.CELERY_BEAT_SCHEDULE):
        assert periodic.periodic_interval(name=name) == settings.CELERY_BEAT_SCHEDULE[name]["schedule"]


def _claim_in_threads(n: int, now: datetime) -> list[bool]:
    barrier = threading.Barrier(n)
    results: list[bool] = []
    lock = threading.Lock()

    def claimer(i: int):
        try:
            barrier.wait()
            won = periodic_claim(name="job", interval=INTERVAL, now=now, runner=f"task:w{i}")
            with lock:
                results.append(won)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=claimer, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return results


@needs_postgres
@pytest.mark.django_db(transaction=True)
def test_claimers_racing_for_a_slot_one_wins():
    # The first claim ever (the row is created) and then three slots in a row.
    for k in range(4):
        results = _claim_in_threads(8, T0 + k * INTERVAL + timedelta(milliseconds=10))
        assert sorted(results) == [False] * 7 + [True], k
    assert lease().next_due_at == T0 + 4 * INTERVAL


@needs_postgres
@pytest.mark.django_db(transaction=True)
def test_watchdogs_cover_a_silent_beat_and_hand_back_never_running_a_slot_twice(monkeypatch, caplog):
    """Real watchdog threads (two "workers") and a beat thread, against the database."""
    monkeypatch.setattr(periodic, "_JOBS", {})
    interval = timedelta(milliseconds=400)
    runs: list[tuple[datetime, str]] = []
    lock = threading.Lock()

    def job(*, now, interval, runner):
        with lock:
            runs.append((now, runner))

    job_def = periodic_job_register(name="race", run=job, default_interval=interval)
    beat_on = threading.Event()
    stop = threading.Event()

    def beat_loop():
        # Like celery beat: one task per interval, from whenever it started.
        while not stop.is_set():
            if beat_on.is_set():
                periodic_run(name="race", runner="task:beat")
                connections.close_all()
            stop.wait(interval.total_seconds())

    def phase(seconds: float) -> list[tuple[datetime, str]]:
        before = len(runs)
        time.sleep(seconds)
        with lock:
            return runs[before:]

    caplog.set_level(logging.INFO, logger="tradesense.common.periodic")
    beat_thread = threading.Thread(target=beat_loop)
    beat_on.set()
    beat_thread.start()
    time.sleep(0.45)  # beat's first task has run: the lease knows beat
    dogs = [PeriodicWatchdog(job=job_def, runner=f"watchdog:h:{i}") for i in (1, 2)]
    try:
        for dog in dogs:
            dog.start()
        healthy = phase(1.6)
        beat_on.clear()  # the broker goes down: no task arrives
        outage = phase(2.8)
        beat_on.set()
        back = phase(2.0)
    finally:
        stop.set()
        for dog in dogs:
            dog.stopping.set()
        beat_thread.join(5)
        for dog in dogs:
            dog.join(5)

    slots = [periodic_slot_start(now=now, interval=interval) for now, _ in runs]
    assert len(slots) == len(set(slots)), "a slot ran twice"
    # Beat healthy: the watchdogs stand back whatever beat's phase in the slot.
    assert {runner for _, runner in healthy} == {"task:beat"}
    assert len(healthy) >= 3
    # Beat silent: after half an interval's grace the watchdogs run every slot.
    # (At most one beat task was already under way when the outage began.)
    assert {runner for _, runner in outage[1:]} <= {"watchdog:h:1", "watchdog:h:2"}
    outage_slots = {periodic_slot_start(now=now, interval=interval) for now, _ in outage}
    assert len(outage_slots) >= 4  # of 7 slots in 2.8 s, less the takeover's 1.5 intervals
    # Beat back: within a slot or two it runs the job again and the watchdogs stop.
    assert back[-3:] and {runner for _, runner in back[-3:]} == {"task:beat"}
    messages = [r.getMessage() for r in caplog.records]
    assert any("running it from the database" in m for m in messages)
    assert any("are back; the watchdog stands by" in m for m in messages)


@pytest.mark.django_db
def test_the_sweep_job_sweeps_the_claimed_tick_and_stamps_a_breach_when_it_was_seen(plans, staff, monkeypatch):
    """The risk-sweep job run through a claim: its SweepTick is the claimed slot, a
    second claim in the slot sweeps nothing, and a breach found some seconds into a
    sweep is recorded at that instant with the prices read then, not at the tick's start."""
    import risk.services
    import risk.tasks  # noqa: F401 - registers the job
    from challenges.market import market_price_set
    from challenges.models import Breach, Challenge
    from risk.models import SweepTick
    from tests.risk.factories import Group, bulk_open_challenges, flat_instrument

    instrument = flat_instrument("PERTEST", price=Decimal("1000.00"))
    ids = bulk_open_challenges(plan=plans["starter"], instrument=instrument, groups=[Group("x", 1, Decimal("2"))])
    market_price_set(symbol="PERTEST", price=Decimal("700.00"), actor=staff)  # -600: through the 4,750 floor

    class SlowSweep:
        """time.monotonic as risk.services sees it: the sweep starts at 100 s, and every
        later reading is 7 s on (a large book screened before this group's turn)."""

        calls = 0

        def monotonic(self):
            self.calls += 1
            return 100.0 if self.calls == 1 else 107.0

    monkeypatch.setattr(risk.services, "monotonic_time", SlowSweep())
    now = timezone.now()
    interval = periodic.periodic_interval(name="risk-sweep")
    result = periodic_run(name="risk-sweep", runner="task:w1", now=now)
    slot = periodic_slot_start(now=now, interval=interval)
    assert result["tick"] == (slot - periodic.EPOCH) // timedelta(milliseconds=1)
    assert result["failed"] == 1
    assert periodic_run(name="risk-sweep", runner="task:w2", now=now + timedelta(milliseconds=1)) is None
    assert SweepTick.objects.get().tick == result["tick"]

    breach = Breach.objects.get(challenge_id=ids["x"][0])
    assert breach.at == now + timedelta(seconds=7)  # when it was seen, 7 s into the sweep
    assert breach.prices == {"PERTEST": "700.00000000"} and breach.observed == Decimal("4400.00")
    assert Challenge.objects.get(pk=ids["x"][0]).ended_at == breach.at
