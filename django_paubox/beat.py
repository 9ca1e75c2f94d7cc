"""A ready Celery beat schedule; import it in settings (it imports no models):

    from django_paubox.beat import BEAT_SCHEDULE
    CELERY_BEAT_SCHEDULE = {**BEAT_SCHEDULE}

django-celery-beat reads ``CELERY_BEAT_SCHEDULE`` into its database at start-up, so the same
setting serves both plain beat and django-celery-beat.
"""

from __future__ import annotations

from typing import Any

from celery.schedules import crontab

BEAT_SCHEDULE: dict[str, dict[str, Any]] = {
    "django-paubox-refresh-receipts": {
        "task": "django_paubox.refresh_receipts",
        "schedule": 60.0,
    },
    "django-paubox-sweep-outbox": {
        "task": "django_paubox.sweep_outbox",
        "schedule": 60.0,
    },
    "django-paubox-purge": {
        "task": "django_paubox.purge",
        "schedule": crontab(hour=3, minute=17),
    },
}
