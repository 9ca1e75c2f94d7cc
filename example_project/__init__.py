# Load the Celery app with Django, so that tasks enqueued by the web process use its broker
# (Celery's Django guide does the same). Without the Celery extra there is nothing to load.
try:
    from .celery import app as celery_app
except ImportError:  # pragma: no cover
    celery_app = None

__all__ = ("celery_app",)
