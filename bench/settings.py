"""Django settings for the benchmarks: PostgreSQL (default) or an SQLite file, from the environment.

The harness (``python -m bench``) sets the variables below for every process it starts (the
benchmark itself, gunicorn, the Celery worker), so they all share one database and one sandbox.

- ``BENCH_DB``: ``postgres`` (127.0.0.1:5432, database ``BENCH_DB_NAME``) or ``sqlite``
  (the file ``BENCH_SQLITE_PATH``).
- ``PAUBOX_API_URL``, ``PAUBOX_API_KEY``, ``PAUBOX_API_USERNAME``: the sandbox; further
  ``PAUBOX`` keys as JSON in ``BENCH_PAUBOX``.
- ``CELERY_BROKER_URL``, ``CELERY_TASK_DEFAULT_QUEUE``: the soak's Redis database and queue.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import django

BASE_DIR = Path(__file__).resolve().parent

SECRET_KEY = "bench-only-not-a-secret"
DEBUG = False
USE_TZ = True
TIME_ZONE = "UTC"
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_celery_results",
    "django_paubox",
]
# A typical project's stack: the webhook pays for it like any other view.
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
ROOT_URLCONF = "bench.urls"
WSGI_APPLICATION = "bench.wsgi.application"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]
STATIC_URL = "/static/"
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"

if os.environ.get("BENCH_DB", "postgres") == "sqlite":
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": os.environ.get(
                "BENCH_SQLITE_PATH", str(BASE_DIR / "results" / "bench.sqlite3")
            ),
        }
    }
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": os.environ.get("BENCH_DB_NAME", "bench_django_paubox"),
            "USER": os.environ.get("PGUSER", "postgres"),
            "PASSWORD": os.environ.get("PGPASSWORD", ""),
            "HOST": os.environ.get("PGHOST", "127.0.0.1"),
            "PORT": os.environ.get("PGPORT", "5432"),
            # Persistent connections, as any production deployment has (or a pooler).
            "CONN_MAX_AGE": 600,
        }
    }

if django.VERSION >= (6, 1):  # MAILERS; EMAIL_BACKEND is deprecated there
    MAILERS = {"default": {"BACKEND": "django_paubox.backends.PauboxEmailBackend"}}
else:
    EMAIL_BACKEND = "django_paubox.backends.PauboxEmailBackend"
PAUBOX = {
    "API_KEY": os.environ.get("PAUBOX_API_KEY", "bench-key"),
    "API_USERNAME": os.environ.get("PAUBOX_API_USERNAME", "bench"),
    "API_URL": os.environ.get("PAUBOX_API_URL", "http://127.0.0.1:9/v1/"),
    **json.loads(os.environ.get("BENCH_PAUBOX", "{}")),
}

CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", "memory://")
CELERY_RESULT_BACKEND = "django-db"
CELERY_TASK_DEFAULT_QUEUE = os.environ.get("CELERY_TASK_DEFAULT_QUEUE", "celery")
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True

# Errors (a 500 in gunicorn, a failing task) go to stderr, which the harness keeps in a log.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"stderr": {"class": "logging.StreamHandler", "level": "WARNING"}},
    "loggers": {
        "django.request": {"handlers": ["stderr"], "level": "ERROR", "propagate": False},
        "django_paubox": {"handlers": ["stderr"], "level": "WARNING", "propagate": False},
    },
}
