"""Django settings, read once from the environment (see README "Configuration")."""

from __future__ import annotations

from pathlib import Path

from celery.schedules import crontab
from django.core.exceptions import ImproperlyConfigured

from config.env import env_bool, env_database, env_int, env_list, env_str, env_url

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = BASE_DIR / "var"

DEBUG = env_bool("DEBUG", False)
_secret = env_str("SECRET_KEY")
if _secret is None and not DEBUG:
    raise ImproperlyConfigured("SECRET_KEY must be set when DEBUG is off.")
# The fallback is only reachable with DEBUG on: a development server on 127.0.0.1.
SECRET_KEY = _secret or "parity-insecure-development-key-do-not-use-in-production"
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost"])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "tenants",
    "usage",
    "billing",
    "gateway",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"
ASGI_APPLICATION = "config.asgi.application"

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
            ],
        },
    },
]


def _database_label() -> str:
    settings = DATABASES["default"]
    name = str(settings.get("NAME", "default"))
    label = f"{settings.get('HOST') or 'local'}-{settings.get('PORT') or ''}-{Path(name).name}"
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in label)


DATABASES = {
    "default": env_database("DATABASE_URL", f"sqlite:///{VAR_DIR / 'parity.sqlite3'}"),
}
# Connections per process, at most: no load can exhaust PostgreSQL. The inference gateway
# reads the database only when its key cache misses (once a second per key); a request
# that finds every pooled connection busy waits up to PARITY_DB_POOL_TIMEOUT_S, then 503.
PARITY_DB_POOL_MAX = env_int("PARITY_DB_POOL_MAX", 8)
PARITY_DB_POOL_TIMEOUT_S = env_int("PARITY_DB_POOL_TIMEOUT_S", 10)
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # psycopg's pool (Django's "pool" option): connections are returned, not closed, at
    # the end of each request. The pool does the reuse, so CONN_MAX_AGE stays 0.
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    # A pooled connection is checked as it is handed out (Django passes psycopg's
    # `check_connection` to the pool): after PostgreSQL restarted, or an operator killed
    # its backends, every idle connection is dead, and without the check each would fail
    # one request (a burst of 503s) before the pool dropped it.
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {  # type: ignore[index]
        "min_size": 1,
        "max_size": PARITY_DB_POOL_MAX,
        "timeout": PARITY_DB_POOL_TIMEOUT_S,
    }
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    Path(str(DATABASES["default"]["NAME"])).parent.mkdir(parents=True, exist_ok=True)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env_url("REDIS_URL", None, frozenset({"redis", "rediss", "unix"}))
# Embedded mode runs with no Redis: the cache then lives in the process.
CACHES = {
    "default": (
        {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}
        if REDIS_URL
        else {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
    )
}

CELERY_BROKER_URL = env_url(
    "CELERY_BROKER_URL",
    REDIS_URL or "memory://",
    frozenset({"redis", "rediss", "amqp", "amqps", "pyamqp", "memory"}),
)
CELERY_TASK_DEFAULT_QUEUE = "default"
# Generation requests go to the engine pool's queue; everything else to "default".
PARITY_ENGINE_QUEUE = env_str("PARITY_ENGINE_QUEUE", "gpu") or "gpu"
CELERY_TASK_ROUTES = {"workers.generate": {"queue": PARITY_ENGINE_QUEUE}}
# The backlog waits at the fair gate (wire/gate.py), not in the broker or the workers: a
# worker holds PARITY_WORKER_SLOTS requests (its engine's seats plus a small buffer that
# keeps the engine's own fair queue fed between a finish and the next grant), announces
# that capacity to the gate, and takes no more messages than it has slots (a thread each,
# waiting on the engine; threads pool, because prefork cannot host vLLM).
PARITY_MAX_NUM_SEQS = env_int("PARITY_MAX_NUM_SEQS", 128)
PARITY_WORKER_SLOTS = env_int(
    "PARITY_WORKER_SLOTS", PARITY_MAX_NUM_SEQS + max(1, PARITY_MAX_NUM_SEQS // 4)
)
# Task threads: a request gives its seat back as soon as its engine is done with it (see
# `Gate.release`) and then stores its usage and sends its answer on its thread while the
# next request already runs, so a worker has more threads than seats.
PARITY_WORKER_THREADS = PARITY_WORKER_SLOTS + max(1, PARITY_WORKER_SLOTS // 2)
# A finished request's usage is fsync'd to a log on the worker's disk before the request is
# marked done (usage/log.py), then copied to the database. One folder per database, so a
# worker never replays another deployment's rows; past PARITY_USAGE_BACKLOG_MB of rows not
# yet in the database (an outage), the worker stops taking requests until it catches up.
PARITY_USAGE_LOG_DIR = Path(
    env_str("PARITY_USAGE_LOG_DIR", str(VAR_DIR / "usage-log" / _database_label()))
    or VAR_DIR / "usage-log"
)
PARITY_USAGE_BACKLOG_MB = env_int("PARITY_USAGE_BACKLOG_MB", 256)
# Each query of a usage export runs for at most this long (PostgreSQL): a 400 caps the
# range, this caps what a dense range can cost.
PARITY_EXPORT_STATEMENT_TIMEOUT_S = env_int("PARITY_EXPORT_STATEMENT_TIMEOUT_S", 30)
CELERY_WORKER_POOL = "threads"
CELERY_WORKER_CONCURRENCY = PARITY_WORKER_THREADS
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# acks_late + reject_on_worker_lost: a request whose worker died is delivered again; the
# worker's done-marker and the unique request_id of the usage row keep billing single.
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_TASK_IGNORE_RESULT = True  # results travel on the token stream, not a result backend
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# kombu's Redis transport defaults to 10 connections, too few for a thousand task threads
# acking; a lost message comes back after visibility_timeout (longer than any generation).
CELERY_BROKER_TRANSPORT_OPTIONS: dict[str, float] = {
    "max_connections": 200,
    "visibility_timeout": 600,
}
if str(CELERY_BROKER_URL).startswith("memory"):
    # The in-process broker is polled: poll it often enough not to add latency.
    CELERY_BROKER_TRANSPORT_OPTIONS["polling_interval"] = 0.02
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
# Celery beat (`celery -A config beat`; the embedded mode runs it in-process): the usage
# rollups every 30 s, last month's invoices finalised at 02:00 UTC on the 1st.
CELERY_BEAT_SCHEDULE = {
    "roll-up-usage": {"task": "tenants.roll_up_usage", "schedule": 30.0},
    "close-invoices": {
        "task": "tenants.close_invoices",
        "schedule": crontab(minute=0, hour=2, day_of_month=1),
    },
}
CELERY_BEAT_SCHEDULE_FILENAME = env_str(
    "CELERY_BEAT_SCHEDULE_FILENAME", str(VAR_DIR / "celerybeat-schedule")
)
CELERY_TIMEZONE = "UTC"

# The model the engine pool serves, and how the engine is sized (see README "Engine").
PARITY_MODEL_NAME = env_str("PARITY_MODEL_NAME", "parity-tiny") or "parity-tiny"
PARITY_MODEL_PATH = env_str("PARITY_MODEL_PATH", str(VAR_DIR / "models" / "parity-tiny"))
PARITY_MAX_MODEL_LEN = env_int("PARITY_MAX_MODEL_LEN", 512, minimum=16)
# On the CPU the KV cache is sized in bytes: vLLM's gpu_memory_utilization would take a
# share of the whole NUMA node there (ENGINE_NOTES.md).
PARITY_KV_CACHE_BYTES = env_int("PARITY_KV_CACHE_BYTES", 128 * 1024 * 1024)
PARITY_POLICY = env_str("PARITY_POLICY", "vtc") or "vtc"
# How much nicer than the worker its engine processes run (0 = the same). vLLM's engine
# busy-polls; on a machine with few cores, 10 keeps that polling from delaying the
# worker's intake and token relay, the path every request's first token takes.
PARITY_ENGINE_NICE = env_int("PARITY_ENGINE_NICE", 0, minimum=0)
# Requests one tenant may have waiting at the gate; beyond it, 429 with a Retry-After.
PARITY_TENANT_QUEUE_LIMIT = env_int("PARITY_TENANT_QUEUE_LIMIT", 1024)
# A request with no news from the engine pool for this long fails with 504.
PARITY_REQUEST_TIMEOUT_S = env_int("PARITY_REQUEST_TIMEOUT_S", 600)

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
# WhiteNoise serves static files (admin, Swagger UI, charts) from the web process itself,
# straight from the installed apps; `collectstatic` into STATIC_ROOT is optional.
STATIC_ROOT = env_str("STATIC_ROOT")
WHITENOISE_USE_FINDERS = True
# The admin UI's own scripts and styles, and Chart.js from the npm registry (package.json,
# installed by `make`): served by the project itself, never from a CDN.
STATICFILES_DIRS = [
    BASE_DIR / "static",
    ("vendor/chartjs", BASE_DIR / "node_modules" / "chart.js" / "dist"),
]

LOGIN_URL = "admin:login"

REST_FRAMEWORK = {
    # Bearer first: its challenge header makes a missing credential a 401, not a 403.
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "tenants.authentication.ApiKeyAuthentication",
        "rest_framework.authentication.BasicAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["tenants.permissions.IsStaff"],
    "DEFAULT_PARSER_CLASSES": ["tenants.parsers.JSONBodyParser"],
    "DEFAULT_PAGINATION_CLASS": "tenants.pagination.Pagination",
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "tenants.errors.exception_handler",
    "COERCE_DECIMAL_TO_STRING": True,
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Parity API",
    "DESCRIPTION": "Control plane for fair multi-tenant LLM serving.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "gateway.openapi.add_inference_paths",  # the OpenAI-compatible /v1 endpoints
    ],
    # Several models have a `status`; name each enum after its own choices.
    "ENUM_NAME_OVERRIDES": {
        "TenantStatusEnum": "tenants.models.TenantStatus",
        "InvoiceStatusEnum": "billing.models.InvoiceStatus",
    },
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
}
