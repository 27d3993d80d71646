"""Prometheus metrics of the Celery worker and beat, each served on its own HTTP port.

With METRICS_PORT set, the worker (from `worker_init`, in its main process) and beat
(from `beat_init`) serve /metrics on METRICS_ADDR (default 127.0.0.1):METRICS_PORT:

    process_start_time_seconds, process_*          the main process (restarts, memory)
    tradesense_celery_tasks_total{task,outcome}    succeeded | failed | retried   (worker)
    tradesense_worker_heartbeat_age_seconds        since this worker last wrote its
                                                   heartbeat file (risk/heartbeat.py) (worker)
    tradesense_beat_sends_total{entry,outcome}     sent | failed, per schedule entry (beat)

A prefork worker runs its tasks in child processes, where the task signals fire, while
the HTTP server lives in the main process. So Celery processes use prometheus-client's
multiprocess mode: tradesense/celery.py gives every run a fresh PROMETHEUS_MULTIPROC_DIR
of its own before prometheus-client is imported, the children inherit it, and the main
process serves their sum. Leave PROMETHEUS_MULTIPROC_DIR unset for Celery processes: a
directory shared with another run would add that run's counts to this one's.
"""

from __future__ import annotations

import logging
import os
import time

from celery import signals
from celery.beat import PersistentScheduler
from prometheus_client import REGISTRY, CollectorRegistry, Counter, ProcessCollector, multiprocess, start_http_server
from prometheus_client.core import GaugeMetricFamily

logger = logging.getLogger(__name__)

TASKS = Counter(
    "tradesense_celery_tasks_total", "Tasks the worker finished, by task name and outcome.", ["task", "outcome"]
)
BEAT_SENDS = Counter(
    "tradesense_beat_sends_total", "Schedule entries beat sent to the broker (or failed to), by entry.",
    ["entry", "outcome"],
)

_server = None


def metrics_address() -> tuple[str, int] | None:
    port = os.environ.get("METRICS_PORT", "")
    if not port:
        return None
    return os.environ.get("METRICS_ADDR") or "127.0.0.1", int(port)


class WorkerHeartbeatFileCollector:
    """Seconds since this worker wrote its heartbeat file; before the first write, since
    the worker started. The file is written from the main process's event loop, so the
    age grows when that loop hangs even though this HTTP thread still answers."""

    def __init__(self, *, path: str, started_at: float):
        self.path, self.started_at = path, started_at

    def collect(self):
        from risk.heartbeat import heartbeat_file_age

        now = time.time()
        age = heartbeat_file_age(self.path, now_epoch=now)
        since_start = now - self.started_at
        family = GaugeMetricFamily(
            "tradesense_worker_heartbeat_age_seconds",
            "Seconds since this worker last wrote its heartbeat file (since its start, before the first).",
        )
        # A file older than this worker was left by a previous run: it counts from the start.
        family.add_metric([], since_start if age is None else min(age, since_start))
        yield family


def _serve(*extra_collectors) -> None:
    global _server
    address = metrics_address()
    if address is None or _server is not None:
        return
    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.MultiProcessCollector(registry)
        ProcessCollector(registry=registry)  # this (main) process: the one that restarts
    else:
        registry.register(REGISTRY)
    for collector in extra_collectors:
        registry.register(collector)
    host, port = address
    _server, _ = start_http_server(port, addr=host, registry=registry)
    logger.info("metrics on http://%s:%s/metrics", host, port)


def _stop_serving(**kwargs) -> None:
    global _server
    if _server is not None:
        _server.shutdown()
        _server.server_close()
        _server = None


# --- Worker --------------------------------------------------------------------------------------


def _worker_init(sender=None, **kwargs):
    from django.conf import settings

    _serve(WorkerHeartbeatFileCollector(path=settings.WORKER_HEARTBEAT_FILE, started_at=time.time()))


def _worker_process_init(**kwargs):
    # A prefork child inherits the listening socket but not the thread serving it; closing
    # its copy leaves the port to the main process alone (and free once that one exits).
    if _server is not None:
        _server.socket.close()


def _task_succeeded(sender=None, **kwargs):
    TASKS.labels(task=sender.name, outcome="succeeded").inc()


def _task_failed(sender=None, **kwargs):
    TASKS.labels(task=sender.name, outcome="failed").inc()


def _task_retried(sender=None, **kwargs):
    TASKS.labels(task=sender.name, outcome="retried").inc()


# --- Beat ------------------------------------------------------------------------------------------


class MeasuredScheduler(PersistentScheduler):
    """celery's default scheduler, counting what it sends per entry (no signal says which
    entry a published task came from)."""

    def apply_async(self, entry, producer=None, advance=True, **kwargs):
        try:
            result = super().apply_async(entry, producer=producer, advance=advance, **kwargs)
        except Exception:
            BEAT_SENDS.labels(entry=entry.name, outcome="failed").inc()
            raise
        BEAT_SENDS.labels(entry=entry.name, outcome="sent").inc()
        return result


def _beat_init(sender=None, **kwargs):
    _serve()


def connect(app) -> None:
    """Wire the metrics into the Celery app (tradesense/celery.py); inert in processes that
    are neither a worker nor beat, which never send these signals."""
    app.conf.beat_scheduler = f"{__name__}:MeasuredScheduler"
    uid = __name__
    signals.worker_init.connect(_worker_init, weak=False, dispatch_uid=f"{uid}.worker_init")
    signals.worker_process_init.connect(_worker_process_init, weak=False, dispatch_uid=f"{uid}.worker_process_init")
    signals.worker_shutdown.connect(_stop_serving, weak=False, dispatch_uid=f"{uid}.worker_shutdown")
    signals.task_success.connect(_task_succeeded, weak=False, dispatch_uid=f"{uid}.task_success")
    signals.task_failure.connect(_task_failed, weak=False, dispatch_uid=f"{uid}.task_failure")
    signals.task_retry.connect(_task_retried, weak=False, dispatch_uid=f"{uid}.task_retry")
    signals.beat_init.connect(_beat_init, weak=False, dispatch_uid=f"{uid}.beat_init")
