"""Test settings: SQLite by default, PostgreSQL when DJANGO_PAUBOX_TEST_DB=postgres."""

import json
import os

import django

SECRET_KEY = "tests-only-not-a-secret"
DEBUG = False
USE_TZ = True
TIME_ZONE = "UTC"
ALLOWED_HOSTS = ["*"]

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
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
ROOT_URLCONF = "tests.urls"
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
# Django's default hasher takes ~0.25 s a password on purpose; ~100 tests create an admin user.
# The tests are not about password strength (the browser test still logs in through the form).
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

if os.environ.get("DJANGO_PAUBOX_TEST_DB") == "postgres":
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            # A Celery worker started by the tests sets this to the test database's name.
            "NAME": os.environ.get("DJANGO_PAUBOX_DB_NAME", os.environ.get("PGDATABASE", "test")),
            "USER": os.environ.get("PGUSER", "postgres"),
            "PASSWORD": os.environ.get("PGPASSWORD", ""),
            "HOST": os.environ.get("PGHOST", "127.0.0.1"),
            "PORT": os.environ.get("PGPORT", "5432"),
            "TEST": {"NAME": os.environ.get("DJANGO_PAUBOX_TEST_DB_NAME", "test_django_paubox")},
        }
    }
else:
    DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}

if django.VERSION >= (6, 1):
    # Django 6.1's MAILERS (EMAIL_BACKEND is deprecated there). A Celery worker started by the
    # tests gets further mailers as JSON in DJANGO_PAUBOX_TEST_MAILERS.
    MAILERS = {
        "default": {"BACKEND": "django_paubox.backends.PauboxEmailBackend"},
        **json.loads(os.environ.get("DJANGO_PAUBOX_TEST_MAILERS", "{}")),
    }
else:
    EMAIL_BACKEND = "django_paubox.backends.PauboxEmailBackend"
# Tests point PAUBOX at the sandbox fixture; nothing here reaches a real Paubox.
# A Celery worker started by the tests gets the sandbox's URL and credentials from the environment
# (PAUBOX_API_URL, ...) and further keys as JSON in DJANGO_PAUBOX_TEST_PAUBOX.
PAUBOX = {
    "API_KEY": os.environ.get("PAUBOX_API_KEY", "test-key"),
    "API_USERNAME": os.environ.get("PAUBOX_API_USERNAME", "test-user"),
    "API_URL": os.environ.get("PAUBOX_API_URL", "http://127.0.0.1:9/v1/"),
    **json.loads(os.environ.get("DJANGO_PAUBOX_TEST_PAUBOX", "{}")),
}

CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", "memory://")
CELERY_RESULT_BACKEND = "django-db"
CELERY_RESULT_EXTENDED = True  # task names in the admin's task results
CELERY_TASK_DEFAULT_QUEUE = os.environ.get("CELERY_TASK_DEFAULT_QUEUE", "celery")
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 10}  # redeliver a dead worker's tasks soon
CELERY_WORKER_PREFETCH_MULTIPLIER = 1

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"null": {"class": "logging.NullHandler"}},
    "loggers": {"django_paubox": {"handlers": ["null"], "level": "DEBUG"}},
}
