"""The Celery worker's heartbeat: a file for the container healthcheck and a database
row for alerting, written every HEARTBEAT_SECONDS from inside the worker.

How: a worker bootstep (WorkerHeartbeatStep) on the worker's own timer. The step is
added to the worker blueprint from the `worker_init` signal (connected in
RiskConfig.ready, which Celery's Django fixup runs before the worker builds its
blueprint), so nothing in tradesense/celery.py has to know about it. The timer runs
in the worker's main process (the prefork event loop): the heartbeat therefore says
"this worker's main process is alive and its event loop turns". It stops when the
worker is killed or hangs; it also pauses while the worker cannot reach the broker,
because the event loop is then reconnecting instead of turning, which is the truth:
that worker is doing no work. Whether sweeps actually run end to end (beat included)
is told by the newest SweepTick, see risk.health.RiskSweepCheck.

Run as a script it is the container healthcheck:
    python -m risk.heartbeat --max-age 30      (exit 0 when fresh, 1 when stale or missing)
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

from celery import bootsteps

logger = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 5.0


def touch_heartbeat_file(path: str | os.PathLike, *, now_epoch: float | None = None) -> None:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    now_epoch = time.time() if now_epoch is None else now_epoch
    # Written then renamed, so a reader never sees a half-written file.
    tmp = p.with_name(p.name + f".{os.getpid()}.tmp")
    tmp.write_text(f"{now_epoch:.3f}\n")
    os.replace(tmp, p)


def heartbeat_file_age(path: str | os.PathLike, *, now_epoch: float | None = None) -> float | None:
    """Seconds since the file was last written, or None when there is no file."""
    try:
        mtime = Path(path).stat().st_mtime
    except FileNotFoundError:
        return None
    return max(0.0, (time.time() if now_epoch is None else now_epoch) - mtime)


class WorkerHeartbeatStep(bootsteps.StartStopStep):
    """Writes the heartbeat at start and then every HEARTBEAT_SECONDS on the worker timer."""

    requires = {"celery.worker.components:Timer"}

    def __init__(self, worker, **kwargs):
        super().__init__(worker, **kwargs)
        self.tref = None
        self.started_at = None

    def start(self, worker):
        from django.utils import timezone

        self.started_at = timezone.now()
        self.beat(worker)
        self.tref = worker.timer.call_repeatedly(HEARTBEAT_SECONDS, self.beat, (worker,), priority=10)

    def stop(self, worker):
        if self.tref is not None:
            self.tref.cancel()
            self.tref = None

    def beat(self, worker):
        from django.conf import settings
        from django.db import close_old_connections

        from risk.services import worker_heartbeat_record

        # The file first: it only says the process lives, and must not wait on the database.
        try:
            touch_heartbeat_file(settings.WORKER_HEARTBEAT_FILE)
        except OSError as exc:
            logger.warning("worker heartbeat file not written: %s", exc)
        try:
            worker_heartbeat_record(worker=worker.hostname, pid=os.getpid(), started_at=self.started_at)
        except Exception as exc:  # noqa: BLE001 - a database outage must not kill the worker
            logger.warning("worker heartbeat row not written: %s", exc)
        finally:
            close_old_connections()


def _add_heartbeat_step(sender=None, **kwargs):
    # `sender` is the WorkController; its blueprint is built from app.steps right after
    # this signal, so the step joins every worker started from this app.
    sender.app.steps["worker"].add(WorkerHeartbeatStep)


def connect_worker_signals() -> None:
    from celery.signals import worker_init

    worker_init.connect(_add_heartbeat_step, weak=False, dispatch_uid="risk.heartbeat.worker_init")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Exit 0 when the worker heartbeat file is fresh.")
    parser.add_argument("--file", default=os.environ.get("WORKER_HEARTBEAT_FILE") or str(
        Path(os.environ.get("TRADESENSE_VAR_DIR", Path(__file__).resolve().parent.parent / "var")) / "worker-heartbeat"
    ))
    parser.add_argument("--max-age", type=float, default=30.0, help="seconds")
    args = parser.parse_args(argv)
    age = heartbeat_file_age(args.file)
    if age is None:
        print(f"unhealthy: no heartbeat file at {args.file}")
        return 1
    if age > args.max_age:
        print(f"unhealthy: heartbeat is {age:.0f}s old (max {args.max_age:.0f}s)")
        return 1
    print(f"ok: heartbeat {age:.1f}s old")
    return 0


if __name__ == "__main__":
    sys.exit(main())
