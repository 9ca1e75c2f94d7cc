"""The example project's Celery app: `celery -A example_project worker -B`.

The broker defaults to kombu's filesystem transport under example_project/.demo/broker, so the
demo needs no server; set CELERY_BROKER_URL=redis://127.0.0.1:6379/0 to use Redis.
"""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "example_project.settings")

app = Celery("example_project")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
