"""The Celery app: worker and beat both start from here (`celery -A tradesense ...`)."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tradesense.settings")

app = Celery("tradesense")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
