"""Bad configuration stops start-up with one sentence naming the variable."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run(args, **env_overrides):
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL", "DEBUG", "SECRET_KEY"}}
    env.update(env_overrides)
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(
    "env, variable",
    [
        ({"DEBUG": "1", "DATABASE_URL": "postgres://user:pw@:notaport"}, "DATABASE_URL"),
        ({"DEBUG": "1", "DATABASE_URL": "mysql://somewhere/db"}, "DATABASE_URL"),
        ({"DEBUG": "1", "REDIS_URL": "http://127.0.0.1:6379"}, "REDIS_URL"),
        ({"DEBUG": "0"}, "SECRET_KEY"),
        ({"DEBUG": "maybe"}, "DEBUG"),
        ({"DEBUG": "0", "SECRET_KEY": "k" * 60}, "PAYMENT_PROCESSOR_SECRET"),
        # The published example values and short secrets are refused in production mode.
        ({"DEBUG": "0", "SECRET_KEY": "change-me-to-50-random-characters-change-me-to-50-random-chars"}, "SECRET_KEY"),
        ({"DEBUG": "0", "SECRET_KEY": "short-but-random-Zq81"}, "SECRET_KEY"),
        ({"DEBUG": "0", "SECRET_KEY": "k" * 60, "PAYMENT_PROCESSOR_SECRET": "dev-processor-secret"}, "PAYMENT_PROCESSOR_SECRET"),
        ({"DEBUG": "0", "SECRET_KEY": "k" * 60, "PAYMENT_PROCESSOR_SECRET": "whsec-short"}, "PAYMENT_PROCESSOR_SECRET"),
    ],
)
def test_bad_configuration_is_one_sentence_not_a_traceback(env, variable):
    result = run(["manage.py", "check"], **env)
    assert result.returncode != 0
    err = result.stderr.strip()
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1
    assert err.startswith("Configuration error:") and variable in err


def test_asgi_entry_point_reports_bad_configuration_in_one_line():
    result = run(["-c", "import tradesense.asgi"], DEBUG="1", DATABASE_URL="postgres://:@:x")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "DATABASE_URL" in result.stderr


def test_production_mode_passes_deploy_checks():
    result = run(
        ["manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        DEBUG="0",
        SECRET_KEY="a-long-random-production-secret-" + "q8Zr" * 10,
        PAYMENT_PROCESSOR_SECRET="whsec-" + "p4Xv" * 10,
        ALLOWED_HOSTS="tradesense.example.com",
    )
    assert result.returncode == 0, result.stderr


def test_embedded_default_needs_no_services(tmp_path):
    code = (
        "import django;django.setup();from django.conf import settings as s;"
        "print(s.DATABASES['default']['ENGINE'], s.CACHES['default']['BACKEND'],"
        " s.CHANNEL_LAYERS['default']['BACKEND'], s.CELERY_BROKER_URL)"
    )
    result = run(["-c", code], DEBUG="1", DJANGO_SETTINGS_MODULE="tradesense.settings", TRADESENSE_VAR_DIR=str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [
        "django.db.backends.sqlite3",
        "tradesense.common.cache.CountingLocMemCache",
        "channels.layers.InMemoryChannelLayer",
        "filesystem://",
    ]


def test_services_mode_uses_postgres_pool_redis_cache_and_broker():
    code = (
        "import django;django.setup();from django.conf import settings as s;"
        "d=s.DATABASES['default'];c=s.CACHES['default'];"
        "print(d['ENGINE'], 'pool' in d['OPTIONS'], c['BACKEND'], c['OPTIONS']['IGNORE_EXCEPTIONS'],"
        " c['OPTIONS']['SOCKET_TIMEOUT'] < 1, s.CELERY_BROKER_URL, s.CELERY_BROKER_CONNECTION_MAX_RETRIES,"
        " s.SESSION_ENGINE, s.CHANNEL_LAYERS['default']['BACKEND'])"
    )
    result = run(
        ["-c", code],
        DEBUG="1",
        DJANGO_SETTINGS_MODULE="tradesense.settings",
        DATABASE_URL="postgres://postgres@127.0.0.1:5432/tradesense",
        REDIS_URL="redis://127.0.0.1:6379/0",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [
        "django.db.backends.postgresql",
        "True",
        "tradesense.common.cache.CountingRedisCache",
        "True",
        "True",
        "redis://127.0.0.1:6379/0",
        "None",
        "django.contrib.sessions.backends.db",
        "channels_redis.core.RedisChannelLayer",
    ]


def test_seed_demo_refuses_to_run_in_production_mode(tmp_path):
    # Its users' passwords are printed in the README: never on a production stack.
    result = run(
        ["manage.py", "seed_demo"],
        DEBUG="0",
        SECRET_KEY="a-long-random-production-secret-" + "q8Zr" * 10,
        PAYMENT_PROCESSOR_SECRET="whsec-" + "p4Xv" * 10,
        TRADESENSE_VAR_DIR=str(tmp_path),
    )
    assert result.returncode != 0
    assert "DEBUG off" in result.stderr and "createsuperuser" in result.stderr
