"""Load settings for a server entry point, turning a configuration error into one line."""

import os
import sys


def load_settings() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tradesense.settings")
    from django.conf import settings
    from django.core.exceptions import ImproperlyConfigured

    try:
        settings.INSTALLED_APPS  # noqa: B018 - forces the settings module to load
    except ImproperlyConfigured as exc:
        print(f"Configuration error: {exc}", file=sys.stderr)
        sys.exit(2)
