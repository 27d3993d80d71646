"""Periodic jobs that run once per interval across any number of workers, broker or not.

Beat sends each job's task every interval (CELERY_BEAT_SCHEDULE). The task does not run
the job at once: it first claims the interval's *slot* in the database. Time is cut into
slots one interval long, aligned to the epoch (so a risk-sweep slot is exactly a
SweepTick tick), and a claim is one conditional UPDATE of the job's PeriodicLease row,
`... WHERE name = %s AND next_due_at <= now`, that moves `next_due_at` to the end of the
slot. The first caller in a slot wins; everyone else in that slot updates nothing. A
second beat, a redelivered message or a watchdog therefore never run a job twice in one
interval (a second market tick would move every price twice).

Beat's tasks travel through the broker, so with Redis down none arrives. Every worker
therefore also runs a watchdog: one thread per job (a long risk sweep must not hold up
the market tick) that sleeps until beat's next task is overdue by half an interval
(`beat_seen_at + interval * 1.5`, counting the worker's own start as a sighting, so the
tasks queued while it was down run first), then claims the slot itself and runs the job
straight from the database. While beat stays silent the watchdogs take every slot as it
opens, so the market keeps ticking and the risk sweep keeps its cadence; the first task
beat delivers again records `beat_seen_at` (even when it loses the slot) and the
watchdogs stand back from the next slot on. The work is the same either way: both paths
call the registered job with the claim's `now`.

Clocks: every process passes its own `now`; they are expected to share a clock (one
host, or NTP), as the sweep ticks and price timestamps already assume.

docs/risk-engine.md ("Without the broker") and docs/failure-modes.md tell the story.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from celery.signals import worker_init, worker_process_init, worker_process_shutdown, worker_shutdown
from django.conf import settings
from django.db import DatabaseError, IntegrityError, connections, transaction
from django.db.models import Q
from django.utils import timezone

from tradesense.common.models import PeriodicLease

logger = logging.getLogger(__name__)

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
# How late beat's next task must be, as a share of the interval, before a watchdog runs
# the job itself: late enough that ordinary delivery jitter never lets a watchdog take a
# slot from a healthy beat, early enough that an outage costs well under an interval.
WATCHDOG_OVERDUE_SHARE = 0.5
# Bounds on a watchdog's sleep: it wakes at least once per interval to re-read its lease
# (an interval changed in settings, a row an operator edited) and never spins.
_WATCHDOG_MIN_SLEEP = 0.01
_WATCHDOG_MAX_BACKOFF = 5.0


# --- Slots and claims -----------------------------------------------------------------------------


def periodic_slot_start(*, now: datetime, interval: timedelta) -> datetime:
    """The start of the slot containing `now`: `now` floored to the interval, computed in
    integer microseconds since the epoch (a float timestamp can round across a boundary)."""
    step = interval // _MICROSECOND
    if step <= 0:
        raise ValueError(f"a periodic interval must be positive, got {interval!r}")
    elapsed = (now - EPOCH) // _MICROSECOND
    return EPOCH + timedelta(microseconds=elapsed - elapsed % step)


def periodic_claim(*, name: str, interval: timedelta, now: datetime, runner: str) -> bool:
    """Claim the slot containing `now` for beat's task of job `name`. True: the caller
    runs the job for this slot; False: the slot was already taken (by an earlier copy of
    the task or by a watchdog). Either way beat is recorded as alive (`beat_seen_at`), so
    the watchdogs leave the following slots to it."""
    claimed = _claim(name=name, interval=interval, now=now, runner=runner, beat=True, condition=Q())
    if not claimed:
        PeriodicLease.objects.filter(name=name).update(beat_seen_at=now)
    return claimed


def periodic_claim_overdue(*, name: str, interval: timedelta, overdue: timedelta, now: datetime, runner: str) -> bool:
    """Claim the slot containing `now` for a watchdog: only when the slot is free and
    beat's next task is `overdue` late (`beat_seen_at + interval + overdue <= now`), or
    beat was never seen. The same single UPDATE, with beat's silence in its WHERE."""
    beat_silent = Q(beat_seen_at__isnull=True) | Q(beat_seen_at__lte=now - interval - overdue)
    return _claim(name=name, interval=interval, now=now, runner=runner, beat=False, condition=beat_silent)


def _claim(*, name: str, interval: timedelta, now: datetime, runner: str, beat: bool, condition: Q) -> bool:
    slot_end = periodic_slot_start(now=now, interval=interval) + interval
    changes = {"interval": interval, "next_due_at": slot_end, "last_run_at": now, "last_runner": runner[:200]}
    if beat:
        changes["beat_seen_at"] = now
    # The claim itself: one UPDATE whose WHERE is the whole decision, so two processes
    # can never both see the slot free (PostgreSQL re-checks the WHERE on the row the
    # winner wrote; SQLite serialises writers). A lease left by a different interval
    # (the setting was changed) is free at once rather than after up to an old interval.
    free = Q(next_due_at__lte=now) | ~Q(interval=interval)
    if PeriodicLease.objects.filter(free, condition, name=name).update(**changes):
        return True
    if PeriodicLease.objects.filter(name=name).exists():
        return False
    # The job's first claim ever creates its row, claimed; of two first claimers the
    # second fails the primary key and loses, like a lost UPDATE.
    try:
        with transaction.atomic():
            PeriodicLease.objects.create(name=name, **changes)
    except IntegrityError:
        return False
    return True


# --- Jobs -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PeriodicJob:
    """A job that beat's task and the watchdogs both run through a claim. `run` is called
    as run(now=..., interval=..., runner=...) with the claim's values."""

    name: str  # the CELERY_BEAT_SCHEDULE entry, also the PeriodicLease row
    run: Callable[..., object]
    default_interval: timedelta  # when the beat schedule has no such entry


_JOBS: dict[str, PeriodicJob] = {}


def periodic_job_register(*, name: str, run: Callable[..., object], default_interval: timedelta) -> PeriodicJob:
    """Declare a job (apps do it in their tasks module, imported by every worker before
    the watchdogs start)."""
    job = PeriodicJob(name=name, run=run, default_interval=default_interval)
    _JOBS[name] = job
    return job


def periodic_jobs() -> list[PeriodicJob]:
    return list(_JOBS.values())


def periodic_interval(*, name: str) -> timedelta:
    """The job's interval: its beat schedule entry, so beat and the watchdogs agree."""
    schedule = getattr(settings, "CELERY_BEAT_SCHEDULE", {}).get(name, {}).get("schedule")
    if isinstance(schedule, timedelta):
        return schedule
    if isinstance(schedule, (int, float)):
        return timedelta(seconds=schedule)
    return _JOBS[name].default_interval


def periodic_run(*, name: str, runner: str, now: datetime | None = None) -> object | None:
    """What beat's task does: claim this interval's slot and run the job if it won.
    Returns the job's result, or None when the slot had already run."""
    job = _JOBS[name]
    now = now or timezone.now()
    interval = periodic_interval(name=name)
    if not periodic_claim(name=name, interval=interval, now=now, runner=runner):
        logger.debug("%s: this interval already ran, nothing to do", name)
        return None
    return job.run(now=now, interval=interval, runner=runner)


def periodic_task_runner(task) -> str:
    """The runner label of a Celery task invocation: "task:<worker node name>"."""
    return f"task:{getattr(task.request, 'hostname', None) or socket.gethostname()}"


# --- The watchdog -----------------------------------------------------------------------------------


class PeriodicWatchdog(threading.Thread):
    """Runs one job from the database when beat's task for it is overdue (broker or beat
    down). Sleeps until the moment it could claim, so a healthy beat costs it one read
    per interval."""

    daemon = True

    def __init__(self, *, job: PeriodicJob, runner: str | None = None):
        super().__init__(name=f"periodic-watchdog-{job.name}")
        self.job = job
        self.runner = runner or f"watchdog:{socket.gethostname()}:{os.getpid()}"
        self.stopping = threading.Event()
        # Set while this thread is covering for a silent beat: the warning is said once
        # per outage, not once per run.
        self.covering = False
        self.started_at: datetime | None = None

    def run(self) -> None:
        # A worker that has just started counts as having seen beat now: the tasks that
        # queued in the broker while no worker ran are delivered as soon as it connects,
        # and they, not a watchdog racing them, should run the first slot.
        self.started_at = timezone.now()
        failures = 0
        while not self.stopping.is_set():
            try:
                wait = self.step()
                failures = 0
            except Exception as exc:  # noqa: BLE001 - the watchdog must outlive a database blip
                failures += 1
                interval = periodic_interval(name=self.job.name).total_seconds()
                wait = min(max(interval, _WATCHDOG_MIN_SLEEP) * failures, _WATCHDOG_MAX_BACKOFF)
                if isinstance(exc, DatabaseError) and failures > 1:
                    logger.warning("watchdog %s: %s; trying again in %.1f s", self.job.name, exc, wait)
                else:
                    logger.exception("watchdog %s failed; trying again in %.1f s", self.job.name, wait)
            finally:
                # No connection is kept between looks: this thread may sleep for an
                # interval, and a pooled connection belongs back in the pool meanwhile.
                connections.close_all()
            self.stopping.wait(max(wait, _WATCHDOG_MIN_SLEEP))

    def step(self) -> float:
        """One look at the lease: run the job if beat's task is overdue and the slot is
        free. Returns how long to sleep before the next look (seconds)."""
        name = self.job.name
        interval = periodic_interval(name=name)
        overdue = interval * WATCHDOG_OVERDUE_SHARE
        now = timezone.now()
        lease = PeriodicLease.objects.filter(name=name).first()
        claimable_at = max(
            _watchdog_claimable_at(lease=lease, interval=interval, overdue=overdue, now=now),
            (self.started_at or now) + interval + overdue,
        )
        if claimable_at > now:
            if self.covering and _beat_fresh(lease=lease, interval=interval, overdue=overdue, now=now):
                self.covering = False
                logger.info("beat's tasks for %s are back; the watchdog stands by", name)
            return min((claimable_at - now).total_seconds(), interval.total_seconds())
        if not periodic_claim_overdue(name=name, interval=interval, overdue=overdue, now=now, runner=self.runner):
            return 0.0  # another watchdog took the slot: look again, then sleep until the next
        if not self.covering:
            self.covering = True
            silent = "has arrived yet" if lease is None or lease.beat_seen_at is None else (
                f"for {(now - lease.beat_seen_at).total_seconds():.1f} s"
            )
            # tests/failures/test_redis_down_purchase.py looks for this line.
            logger.warning("no beat task for %s %s (broker or beat down?): running it from the database", name, silent)
        else:
            logger.debug("watchdog runs %s from the database", name)
        self.job.run(now=now, interval=interval, runner=self.runner)
        return 0.0  # the next look computes when the next slot can be claimed


def _watchdog_claimable_at(*, lease: PeriodicLease | None, interval: timedelta, overdue: timedelta, now: datetime) -> datetime:
    """The earliest instant periodic_claim_overdue can succeed, as the lease stands."""
    if lease is None:
        return now
    slot_free_at = now if lease.interval != interval else lease.next_due_at
    if lease.beat_seen_at is None:
        return slot_free_at
    return max(slot_free_at, lease.beat_seen_at + interval + overdue)


def _beat_fresh(*, lease: PeriodicLease | None, interval: timedelta, overdue: timedelta, now: datetime) -> bool:
    """Beat's next task is not overdue yet (its last one arrived recently)."""
    return lease is not None and lease.beat_seen_at is not None and lease.beat_seen_at + interval + overdue > now


_watchdogs: list[PeriodicWatchdog] = []
_watchdogs_lock = threading.Lock()


def periodic_watchdogs_start() -> list[PeriodicWatchdog]:
    """Start a watchdog thread for every registered job that has no live one here."""
    with _watchdogs_lock:
        alive = [w for w in _watchdogs if w.is_alive() and not w.stopping.is_set()]
        covered = {w.job.name for w in alive}
        for job in periodic_jobs():
            if job.name not in covered:
                watchdog = PeriodicWatchdog(job=job)
                watchdog.start()
                alive.append(watchdog)
        _watchdogs[:] = alive
        return list(alive)


def periodic_watchdogs_stop(*, timeout: float = 5.0) -> None:
    with _watchdogs_lock:
        stopping = list(_watchdogs)
        _watchdogs.clear()
    for watchdog in stopping:
        watchdog.stopping.set()
    # Jobs in progress get `timeout` in all to finish; the threads are daemons anyway,
    # and a job cut short is one its next slot picks up (every job is idempotent).
    deadline = time.monotonic() + timeout
    for watchdog in stopping:
        watchdog.join(max(0.0, deadline - time.monotonic()))


@worker_init.connect
def _watchdogs_in_worker(sender=None, **kwargs):
    # Thread and solo pools run tasks in this process: the watchdogs live here. A prefork
    # pool gets them in each child instead (below), so no thread holding a database
    # connection is ever copied into a forked child.
    pool = getattr(sender, "pool_cls", "")
    pool_name = pool if isinstance(pool, str) else getattr(pool, "__module__", "")
    if "prefork" not in pool_name:
        periodic_watchdogs_start()


@worker_process_init.connect
def _watchdogs_in_child(**kwargs):
    periodic_watchdogs_start()


@worker_shutdown.connect
@worker_process_shutdown.connect
def _watchdogs_stop(**kwargs):
    periodic_watchdogs_stop(timeout=2.0)
