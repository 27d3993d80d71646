"""The Celery app: worker and beat both start from here (`celery -A tradesense ...`)."""

import atexit
import os
import shutil
import tempfile


def _private_metrics_dir() -> None:
    """With METRICS_PORT set (a worker or beat that serves metrics), give this run a fresh
    prometheus-client multiprocess directory, inherited by the prefork children
    (tradesense/celery_metrics.py says why). It has to happen before prometheus-client is
    first imported, which is why it is here, at the top of the first module Celery loads."""
    if not os.environ.get("METRICS_PORT") or os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return
    path = tempfile.mkdtemp(prefix="tradesense-celery-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
    creator = os.getpid()
    atexit.register(lambda: os.getpid() == creator and shutil.rmtree(path, ignore_errors=True))


_private_metrics_dir()

from celery import Celery  # noqa: E402 - after the metrics directory is chosen

from tradesense import celery_metrics  # noqa: E402

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tradesense.settings")

app = Celery("tradesense")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
celery_metrics.connect(app)
