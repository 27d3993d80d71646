"""TradeSense settings: one module, driven by the environment only.

With nothing set, the embedded default runs (SQLite under var/, local-memory cache,
in-memory channel layer, a filesystem Celery broker). DATABASE_URL and REDIS_URL
switch to PostgreSQL and Redis. See .env.example for every variable.
"""

import ipaddress
import os
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlparse

from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("TRADESENSE_VAR_DIR", BASE_DIR / "var"))
VAR_DIR.mkdir(parents=True, exist_ok=True)


class ConfigError(ImproperlyConfigured):
    """A bad environment variable; entry points print it as one sentence."""


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise ConfigError(f"{name} must be a boolean (1/0, true/false), got {raw!r}.")


def env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}.") from None


# https://docs.djangoproject.com/en/5.2/ref/settings/#debug -- off unless asked for.
DEBUG = env_bool("DEBUG", False)
# Production mode as the environment set it. Test runners turn DEBUG off while they run
# (pytest-django does), so what must never happen in production checks this instead.
PRODUCTION = not DEBUG

# Values published in .env.example or the README: a production stack that still carries
# one of them has secrets anybody can read.
PUBLISHED_SECRETS = frozenset({
    "change-me-to-50-random-characters-change-me-to-50-random-chars",
    "dev-processor-secret",
    "ci-secret",
})
MIN_SECRET_LENGTH = 32


def production_secret(name: str, value: str) -> str:
    """Refuse a missing, published or short secret in production mode (DEBUG off)."""
    if not value:
        raise ConfigError(f"{name} must be set when DEBUG is off (production mode); set DEBUG=1 for development.")
    if value in PUBLISHED_SECRETS or value.startswith(("change-me", "dev-")):
        raise ConfigError(f"{name} is the published example value; generate one (python -c 'import secrets; print(secrets.token_urlsafe(48))').")
    if len(value) < MIN_SECRET_LENGTH:
        raise ConfigError(f"{name} must be at least {MIN_SECRET_LENGTH} characters in production mode, got {len(value)}.")
    return value


# https://docs.djangoproject.com/en/5.2/ref/settings/#secret-key
SECRET_KEY = os.environ.get("SECRET_KEY", "")
if not DEBUG:
    SECRET_KEY = production_secret("SECRET_KEY", SECRET_KEY)
elif not SECRET_KEY:
    SECRET_KEY = "dev-insecure-" + "x" * 50

# https://docs.djangoproject.com/en/5.2/ref/settings/#allowed-hosts
ALLOWED_HOSTS = [
    h.strip()
    for h in os.environ.get("ALLOWED_HOSTS", "127.0.0.1,localhost,[::1]").split(",")
    if h.strip()
]
CSRF_TRUSTED_ORIGINS = [
    o.strip() for o in os.environ.get("CSRF_TRUSTED_ORIGINS", "").split(",") if o.strip()
]
# Proxies whose X-Forwarded-For is believed (tradesense.common.clientip): our nginx. A
# request from any other address is its own client, whatever header it sends.
TRUSTED_PROXIES = [
    p.strip() for p in os.environ.get("TRUSTED_PROXIES", "127.0.0.1/32,::1/128").split(",") if p.strip()
]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI served from our static files, no CDN
    "csp",  # Content-Security-Policy (django-csp): its system checks flag pre-4.0 settings
    "channels",
    "health_check",
    "axes",  # failed sign-ins per account and per address, in the database (LOGIN_* below)
    "tradesense.common",
    "accounts",
    "challenges",
    "risk",
    "payments",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Before anything reads the session, a token or a form: NUL characters and charsets
    # that decode nothing are a 400 here, not a database error later (docs/security.md).
    "tradesense.common.middleware.RefuseUnstorableInputMiddleware",
    "tradesense.common.csp.CSPMiddleware",  # CONTENT_SECURITY_POLICY below, plus the WebSocket origin
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, as django-axes asks: turns a locked-out sign-in into accounts.limits' 429.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "tradesense.urls"
WSGI_APPLICATION = "tradesense.wsgi.application"
ASGI_APPLICATION = "tradesense.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "django.template.context_processors.i18n",
            ],
        },
    },
]

# --- Database -----------------------------------------------------------------
# https://docs.djangoproject.com/en/5.2/ref/databases/#connection-pool
DATABASE_URL = os.environ.get("DATABASE_URL", "")


def _database_from_url(url: str) -> dict:
    parsed = urlparse(url)
    if parsed.scheme in {"postgres", "postgresql", "pgsql"}:
        if not parsed.hostname and not parsed.path.strip("/"):
            raise ConfigError(
                f"DATABASE_URL is malformed ({url!r}); expected "
                "postgres://user:password@host:5432/dbname."
            )
        import dj_database_url

        try:
            config = dj_database_url.parse(url)
        except Exception:
            raise ConfigError(
                f"DATABASE_URL is malformed ({url!r}); expected "
                "postgres://user:password@host:5432/dbname."
            ) from None
        if not config.get("NAME"):
            raise ConfigError("DATABASE_URL has no database name; expected postgres://.../dbname.")
        config["ENGINE"] = "django.db.backends.postgresql"
        config["CONN_MAX_AGE"] = 0  # the pool owns connection lifetime
        # With a pool, Django turns this into psycopg_pool's check_connection: every
        # connection is checked on checkout, so a database restart costs no failed request.
        config["CONN_HEALTH_CHECKS"] = True
        config["OPTIONS"] = {
            # Health-checked pooled connections with short waits: a dead connection
            # (database restart) is replaced, and a request fails fast instead of hanging.
            "pool": {
                "min_size": int(os.environ.get("DB_POOL_MIN", "2")),
                "max_size": int(os.environ.get("DB_POOL_MAX", "10")),
                # A request waits this long for a connection, then answers 503: a replica
                # cut from the database fails fast, and nginx and clients go elsewhere.
                "timeout": env_float("DB_POOL_TIMEOUT", 1.0),
                "max_idle": 300,
            },
            "connect_timeout": 3,
            # A partition drops packets without a reset: without these a pooled connection
            # (and the worker holding it) waits for the kernel's retransmissions, minutes.
            # With them a silent peer is given up after about 3 s (tests/failures/
            # test_network_partition.py).
            "keepalives": 1,
            "keepalives_idle": 2,
            "keepalives_interval": 1,
            "keepalives_count": 3,
            "tcp_user_timeout": 3000,
            # A transaction whose client was cut off keeps its row locks until the server
            # notices; this ends it (rolled back whole) so the challenge is writable again.
            "options": "-c idle_in_transaction_session_timeout="
            + os.environ.get("DB_IDLE_IN_TRANSACTION_TIMEOUT", "5s"),
        }
        return config
    if parsed.scheme == "sqlite":
        name = url[len("sqlite:///"):] if url.startswith("sqlite:///") else ""
        if not name:
            raise ConfigError(f"DATABASE_URL is malformed ({url!r}); expected sqlite:///path.")
        return _sqlite(name)
    raise ConfigError(
        f"DATABASE_URL is malformed ({url!r}); expected postgres://user:password@host:5432/dbname."
    )


def _sqlite(path) -> dict:
    return {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": str(path),
        "OPTIONS": {
            # WAL lets the web server, worker and beat read while one writes; the busy
            # timeout makes a writer wait for the lock instead of failing at once.
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            "timeout": 20,
            "transaction_mode": "IMMEDIATE",
        },
    }


DATABASES = {
    "default": _database_from_url(DATABASE_URL) if DATABASE_URL else _sqlite(VAR_DIR / "tradesense.sqlite3")
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USING_POSTGRES = DATABASES["default"]["ENGINE"].endswith("postgresql")

# --- Redis: cache, channel layer, Celery broker ---------------------------------
REDIS_URL = os.environ.get("REDIS_URL", "")
if REDIS_URL and urlparse(REDIS_URL).scheme not in {"redis", "rediss", "unix"}:
    raise ConfigError(f"REDIS_URL is malformed ({REDIS_URL!r}); expected redis://host:6379/0.")

# The cache may live on its own allkeys-lru Redis (compose); it defaults to REDIS_URL.
CACHE_REDIS_URL = os.environ.get("CACHE_REDIS_URL", "") or REDIS_URL

if REDIS_URL:
    # https://github.com/jazzband/django-redis#memcached-exceptions-behavior
    # Redis down must not fail a request: cache calls become misses within 250 ms.
    CACHES = {
        "default": {
            "BACKEND": "tradesense.common.cache.CountingRedisCache",
            "LOCATION": CACHE_REDIS_URL,
            "KEY_PREFIX": "ts",
            "OPTIONS": {
                "CLIENT_CLASS": "django_redis.client.DefaultClient",
                "IGNORE_EXCEPTIONS": True,
                "SOCKET_CONNECT_TIMEOUT": 0.25,
                "SOCKET_TIMEOUT": 0.25,
            },
        }
    }
    DJANGO_REDIS_LOG_IGNORED_EXCEPTIONS = True
    # https://channels.readthedocs.io/en/latest/topics/channel_layers.html#redis-channel-layer
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [REDIS_URL], "capacity": 500, "expiry": 30},
        }
    }
else:
    CACHES = {"default": {"BACKEND": "tradesense.common.cache.CountingLocMemCache"}}
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

# Sessions live in the database so a Redis outage logs nobody out.
SESSION_ENGINE = "django.contrib.sessions.backends.db"

# --- Celery ----------------------------------------------------------------------
# https://docs.celeryq.dev/en/stable/userguide/configuration.html
if REDIS_URL:
    CELERY_BROKER_URL = REDIS_URL
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "visibility_timeout": 300,
        "socket_connect_timeout": 1,
        "socket_timeout": 5,
    }
else:
    # kombu's filesystem transport: a broker that needs no server (embedded default).
    _broker_dir = VAR_DIR / "broker"
    for sub in ("out", "processed", "control"):
        (_broker_dir / sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_URL = "filesystem://"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "out"),
        "data_folder_out": str(_broker_dir / "out"),
        "data_folder_processed": str(_broker_dir / "processed"),
        # kombu's default is ./control, in whatever folder the process started.
        "control_folder": str(_broker_dir / "control"),
    }
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BROKER_CONNECTION_MAX_RETRIES = None  # keep retrying through a Redis outage
CELERY_BROKER_CONNECTION_TIMEOUT = 1  # an enqueue while Redis is down fails fast
CELERY_TASK_IGNORE_RESULT = True
CELERY_RESULT_BACKEND = None
CELERY_TASK_ACKS_LATE = False  # opted into per task, only where idempotent
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TIMEZONE = "UTC"
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")
# Beat only nudges: every task below also finds its work in the database, so a lost
# tick costs a delay, never a missed evaluation or charge.
CELERY_BEAT_SCHEDULE = {
    "risk-sweep": {"task": "risk.tasks.risk_sweep", "schedule": timedelta(seconds=env_float("RISK_SWEEP_SECONDS", 3))},
    "risk-daily-reset": {"task": "risk.tasks.risk_daily_reset", "schedule": timedelta(seconds=30)},
    "payments-sweep": {"task": "payments.tasks.payments_sweep", "schedule": timedelta(seconds=env_float("PAYMENTS_SWEEP_SECONDS", 2))},
    "payments-reconcile": {"task": "payments.tasks.payments_reconcile", "schedule": timedelta(seconds=30)},
    "market-history-compact": {"task": "challenges.tasks.market_history_compact", "schedule": timedelta(hours=1)},
    "market-tick": {"task": "challenges.tasks.market_tick", "schedule": timedelta(seconds=env_float("MARKET_TICK_SECONDS", 1))},
}

# --- Market and trading -----------------------------------------------------------
MARKET_SEED = int(os.environ.get("MARKET_SEED", "20261129"))
# A price older than this is refused for fills (503 stale_price), never silently used.
MARKET_PRICE_MAX_AGE_SECONDS = env_float("MARKET_PRICE_MAX_AGE_SECONDS", 30.0)
# With no ticker running (worker down), a fill advances the stale simulated price itself
# instead of refusing (docs/trading.md); 0 makes a stale price a 503 instead.
MARKET_SIM_CATCHUP_ON_FILL = env_bool("MARKET_SIM_CATCHUP_ON_FILL", True)
# Optional external feed (challenges.market.HttpJsonFeed); quotes older than the max age
# are ignored and the simulation carries on.
MARKET_FEED_URL = os.environ.get("MARKET_FEED_URL", "")
MARKET_FEED_MAX_AGE_SECONDS = env_float("MARKET_FEED_MAX_AGE_SECONDS", 10.0)
MARKET_FEED_TIMEOUT_SECONDS = env_float("MARKET_FEED_TIMEOUT_SECONDS", 1.0)

# --- Payments ---------------------------------------------------------------------
PAYMENT_PROCESSOR_URL = os.environ.get("PAYMENT_PROCESSOR_URL", "http://127.0.0.1:8100")
PAYMENT_PROCESSOR_SECRET = os.environ.get("PAYMENT_PROCESSOR_SECRET", "")
if not DEBUG:
    PAYMENT_PROCESSOR_SECRET = production_secret("PAYMENT_PROCESSOR_SECRET", PAYMENT_PROCESSOR_SECRET)
elif not PAYMENT_PROCESSOR_SECRET:
    PAYMENT_PROCESSOR_SECRET = "dev-processor-secret"
if urlparse(PAYMENT_PROCESSOR_URL).scheme not in {"http", "https"}:
    raise ConfigError(
        f"PAYMENT_PROCESSOR_URL is malformed ({PAYMENT_PROCESSOR_URL!r}); expected http(s)://host:port."
    )
PAYMENT_PROCESSOR_TIMEOUT_SECONDS = env_float("PAYMENT_PROCESSOR_TIMEOUT_SECONDS", 3.0)
WEBHOOK_TOLERANCE_SECONDS = 300
# Retry policy and circuit breaker of the purchase queue (docs/payments.md): full-jitter
# backoff from BASE doubling up to CAP; past HORIZON (well inside the processor's 24 h
# idempotency-key retention) a purchase goes to reconciliation.
PAYMENT_RETRY_BASE_SECONDS = env_float("PAYMENT_RETRY_BASE_SECONDS", 2.0)
PAYMENT_RETRY_CAP_SECONDS = env_float("PAYMENT_RETRY_CAP_SECONDS", 300.0)
PAYMENT_RETRY_HORIZON_SECONDS = env_float("PAYMENT_RETRY_HORIZON_SECONDS", 3600.0)
PAYMENT_CIRCUIT_FAILURE_THRESHOLD = int(env_float("PAYMENT_CIRCUIT_FAILURE_THRESHOLD", 5))
PAYMENT_CIRCUIT_COOLDOWN_SECONDS = env_float("PAYMENT_CIRCUIT_COOLDOWN_SECONDS", 30.0)

# --- Worker heartbeat ---------------------------------------------------------------
WORKER_HEARTBEAT_FILE = os.environ.get("WORKER_HEARTBEAT_FILE", str(VAR_DIR / "worker-heartbeat"))

# --- REST framework -------------------------------------------------------------------
# https://www.django-rest-framework.org/api-guide/settings/
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        # DRF's TokenAuthentication in one raw statement (docs/performance.md); no cache.
        "accounts.authentication.FastTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "tradesense.common.errors.api_exception_handler",
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["tradesense.common.parsers.StrictJSONParser"],  # depth, NUL: docs/security.md
    "COERCE_DECIMAL_TO_STRING": True,
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
    "DEFAULT_THROTTLE_RATES": {
        "orders": os.environ.get("ORDER_THROTTLE_RATE", "6000/min"),
        # POST /auth/token and /auth/register per client address (per user for ws-ticket);
        # database counters while Redis is down (accounts.limits).
        "auth": os.environ.get("AUTH_THROTTLE_RATE", "60/min"),
        # Accounts created per client address (API and /signup/), always in the database.
        "signup": os.environ.get("SIGNUP_THROTTLE_RATE", "10/hour"),
    },
}
SPECTACULAR_SETTINGS = {
    "TITLE": "TradeSense API",
    "DESCRIPTION": "Prop-trading evaluation platform: plans, purchases, challenges, orders.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # Path ids use tradesense.common.converters' <id:...> (1-19 ASCII digits, within bigint).
    "PATH_CONVERTER_OVERRIDES": {"id": {"type": "integer", "format": "int64"}},
}

# --- Auth, i18n, static ---------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "/login/"

# --- Accounts and tokens (docs/security.md "Accounts and tokens") -----------------------------------
# https://django-axes.readthedocs.io/en/latest/4_configuration.html -- failed sign-ins are
# counted in the database (a Redis outage lifts nothing) per account and per client address
# on every path that calls authenticate(); LOGIN_FAILURE_LIMIT failures lock that account,
# or that address, for LOGIN_COOLOFF_SECONDS. Failures during a lockout do not extend it, and
# a success resets nothing (else a signed-in attacker would reset their own address).
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_HANDLER = "axes.handlers.database.AxesDatabaseHandler"
AXES_FAILURE_LIMIT = int(env_float("LOGIN_FAILURE_LIMIT", 10))
AXES_COOLOFF_TIME = timedelta(seconds=env_float("LOGIN_COOLOFF_SECONDS", 900))
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]
AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT = False
AXES_RESET_ON_SUCCESS = False
AXES_CLIENT_IP_CALLABLE = "accounts.limits.axes_client_address"
AXES_LOCKOUT_CALLABLE = "accounts.limits.lockout_response"
AXES_HTTP_RESPONSE_CODE = 429
AXES_DISABLE_ACCESS_LOG = True  # successful sign-ins are not logged per row (unbounded table)
# REST tokens: stored as digests, valid this long, at most this many live per user (the
# oldest is revoked past it); WebSocket tickets: single use, valid this long.
API_TOKEN_TTL = timedelta(seconds=env_float("API_TOKEN_TTL_SECONDS", 30 * 86400))
API_TOKENS_PER_USER = int(env_float("API_TOKENS_PER_USER", 20))
WS_TICKET_TTL = timedelta(seconds=env_float("WS_TICKET_TTL_SECONDS", 30))
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/login/"

LANGUAGE_CODE = "en"
LANGUAGES = [("en", "English"), ("fr", "Français"), ("ar", "العربية")]
LOCALE_PATHS = [BASE_DIR / "locale"]
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATIC_ROOT.mkdir(exist_ok=True)  # whitenoise serves from here after collectstatic
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        # Hashed, compressed files in production; plain finders in DEBUG so `make run`
        # needs no collectstatic.
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        if DEBUG
        else "whitenoise.storage.CompressedManifestStaticFilesStorage",
    },
}
WHITENOISE_USE_FINDERS = True  # serve app static files even without collectstatic

# --- Operations endpoints, API docs, browser policy (docs/security.md) -------------------------
# /metrics and the full /health/ answer only these networks, judged by the client address our
# proxy saw (tradesense.common.clientip), or a request bearing METRICS_TOKEN; anyone else gets
# 404. Default: loopback and private ranges (make prod's Prometheus on 127.0.0.1, compose's on
# its private network).
METRICS_ALLOWED_NETWORKS = [
    n.strip()
    for n in os.environ.get(
        "METRICS_ALLOWED_NETWORKS", "127.0.0.0/8,::1/128,10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,fc00::/7"
    ).split(",")
    if n.strip()
]
for _network in METRICS_ALLOWED_NETWORKS:
    try:
        ipaddress.ip_network(_network, strict=False)
    except ValueError:
        raise ConfigError(
            f"METRICS_ALLOWED_NETWORKS has {_network!r}, which is not an address or network (e.g. 10.0.0.0/8)."
        ) from None
# `Authorization: Bearer <METRICS_TOKEN>` for a Prometheus outside those networks; empty: none.
METRICS_TOKEN = os.environ.get("METRICS_TOKEN", "")
if METRICS_TOKEN and not DEBUG:
    METRICS_TOKEN = production_secret("METRICS_TOKEN", METRICS_TOKEN)
# The OpenAPI schema and Swagger UI (/api/v1/schema, /api/v1/docs): anyone in development,
# staff only in production unless set.
API_DOCS_PUBLIC = env_bool("API_DOCS_PUBLIC", DEBUG)

# https://django-csp.readthedocs.io/en/latest/configuration.html (django-csp 4 format).
# No inline script anywhere. The one inline style allowed is the fixed <style> block of
# drf-spectacular's Swagger page (box-sizing, background), by its hash rather than
# 'unsafe-inline'; tests/foundation/test_csp.py fails when an upgrade changes it. The
# WebSocket origin of the request's host joins connect-src per request (tradesense.common.csp).
SWAGGER_UI_INLINE_STYLE_HASH = "'sha256-MMpT0iDxyjALd9PdfepImGX3DBfJPXZ4IlDWdPAgtn0='"
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'", SWAGGER_UI_INLINE_STYLE_HASH],
        # data: for the SVG icons inside Swagger UI's and the admin's stylesheets, and the
        # dashboard's empty favicon.
        "img-src": ["'self'", "data:"],
        "connect-src": ["'self'"],
        "frame-ancestors": ["'none'"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "form-action": ["'self'"],
    },
}

# --- Production hardening (manage.py check --deploy passes with DEBUG off) -----------------
# https://docs.djangoproject.com/en/5.2/howto/deployment/checklist/
if not DEBUG:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
    SECURE_REDIRECT_EXEMPT = [r"^health/", r"^metrics$"]
    SECURE_HSTS_SECONDS = int(os.environ.get("SECURE_HSTS_SECONDS", "31536000"))
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", True)
    CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", True)
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        "health_check": {"level": "ERROR"},
    },
}
