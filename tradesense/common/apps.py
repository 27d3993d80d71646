from django.apps import AppConfig


class CommonConfig(AppConfig):
    name = "tradesense.common"
    label = "common"
    verbose_name = "Audit and idempotency"
