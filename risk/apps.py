from django.apps import AppConfig


class RiskConfig(AppConfig):
    name = "risk"
    verbose_name = "Risk engine"

    def ready(self):
        # Only a Celery worker ever sends worker_init; elsewhere this connection is inert.
        from risk.heartbeat import connect_worker_signals

        connect_worker_signals()
