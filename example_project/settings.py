"""Example project: SQLite, the local Paubox sandbox as Paubox, the admin.

Nothing secret lives here: every credential comes from the environment (run.sh sets sandbox
values). Point PAUBOX_API_URL at https://api.paubox.net/v1/ with a real key to send for real.
"""

import os
from pathlib import Path

import django

BASE_DIR = Path(__file__).resolve().parent

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "example-project-insecure-dev-key")
DEBUG = os.environ.get("DJANGO_DEBUG", "1") == "1"
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_paubox",
    "example_project.demo",
]
try:  # the Celery extra: task results in the admin
    import django_celery_results  # noqa: F401

    INSTALLED_APPS.insert(-2, "django_celery_results")
except ImportError:
    pass

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]
ROOT_URLCONF = "example_project.urls"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
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
WSGI_APPLICATION = "example_project.wsgi.application"
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("EXAMPLE_DB", str(BASE_DIR / "db.sqlite3")),
        # The dev server, the worker and beat write at once: wait for the lock, don't fail.
        "OPTIONS": {"timeout": 20},
    }
}
USE_TZ = True
TIME_ZONE = "UTC"
STATIC_URL = "/static/"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Paubox ------------------------------------------------------------------------------------
# The environment variable EMAIL_BACKEND picks the backend (run.sh sets the Celery one).
_BACKEND = os.environ.get("EMAIL_BACKEND", "django_paubox.backends.PauboxEmailBackend")
if django.VERSION >= (6, 1):
    # Django 6.1+: MAILERS (EMAIL_BACKEND is deprecated). Credentials could go in OPTIONS
    # ("api_key", "api_username", "api_url"); here PAUBOX and the environment supply them.
    MAILERS = {"default": {"BACKEND": _BACKEND}}
else:
    EMAIL_BACKEND = _BACKEND
DEFAULT_FROM_EMAIL = os.environ.get(
    "DEFAULT_FROM_EMAIL", "Sunrise Clinic <reminders@clinic.example>"
)
PAUBOX = {
    # API_KEY / API_USERNAME / API_URL come from PAUBOX_API_KEY, PAUBOX_API_USERNAME and
    # PAUBOX_API_URL in the environment (run.sh points them at the sandbox).
    "WEBHOOK_SECRET": os.environ.get("PAUBOX_WEBHOOK_SECRET", ""),
    "MONTHLY_LIMIT": 300,
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"django_paubox": {"handlers": ["console"], "level": "INFO"}},
}

# --- Celery (the outbox backend, receipts polling, sweeping, retention) ------------------------
# EMAIL_BACKEND=django_paubox.backends.PauboxCeleryEmailBackend sends through the worker (run.sh
# does). Without a broker server the demo uses kombu's filesystem transport, every folder of it
# under .demo/ (kombu's default control folder is ./control, wherever the worker started).
DEMO_STATE = BASE_DIR / ".demo"
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", "filesystem://")
if CELERY_BROKER_URL.startswith("filesystem"):
    BROKER_FOLDERS = {
        "data_folder_in": DEMO_STATE / "broker" / "out",
        "data_folder_out": DEMO_STATE / "broker" / "out",
        "processed_folder": DEMO_STATE / "broker" / "processed",
        "control_folder": DEMO_STATE / "broker" / "control",
    }
    for folder in BROKER_FOLDERS.values():
        folder.mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        **{option: str(folder) for option, folder in BROKER_FOLDERS.items()},
        "store_processed": False,
    }
CELERY_RESULT_BACKEND = "django-db"
CELERY_RESULT_EXTENDED = True
try:
    from django_paubox.beat import BEAT_SCHEDULE

    CELERY_BEAT_SCHEDULE = {
        **BEAT_SCHEDULE,
        # The demo polls more often than production needs, so dispositions move quickly.
        "django-paubox-refresh-receipts": {
            **BEAT_SCHEDULE["django-paubox-refresh-receipts"],
            "schedule": 10.0,
        },
    }
except ImportError:  # Celery not installed
    pass
