"""gunicorn settings of the web replicas:

    gunicorn -c ops/gunicorn.conf.py tradesense.wsgi:application --bind HOST:PORT --workers N ...

Everything else comes from the command line or the environment (WEB_CONCURRENCY is
gunicorn's own default for --workers). What this file adds are the hooks that make
/metrics true for the replica rather than for whichever worker answers, with
prometheus-client's multiprocess mode, when PROMETHEUS_MULTIPROC_DIR is set (one
directory per replica; tradesense/metrics.py serves it):
- on_starting (master, before any worker exists): wipe the directory, whose files would
  otherwise add the previous run's processes to this one's, and record the master's start
  time in TRADESENSE_REPLICA_STARTED_AT, which the forked workers inherit and export as
  process_start_time_seconds;
- child_exit (master): mark the exited worker dead, so its live gauges (pool, WebSocket
  connections) stop counting; its counters stay in the sum, as they must;
- post_worker_init (worker): start publishing the worker's database pool figures.
"""

import os
import time
from pathlib import Path

MULTIPROC_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"
REPLICA_STARTED_ENV = "TRADESENSE_REPLICA_STARTED_AT"  # read by tradesense.metrics


def on_starting(server):
    os.environ[REPLICA_STARTED_ENV] = f"{time.time():.3f}"
    path = os.environ.get(MULTIPROC_DIR_ENV)
    if not path:
        return
    directory = Path(path)
    directory.mkdir(parents=True, exist_ok=True)
    # Only prometheus-client's files: the directory is meant to be ours alone, but a
    # mistaken path must not cost anything else.
    for stale in directory.glob("*.db"):
        stale.unlink(missing_ok=True)


def child_exit(server, worker):
    if os.environ.get(MULTIPROC_DIR_ENV):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)


def post_worker_init(worker):
    from tradesense.metrics import track_database_pool

    track_database_pool()
