from django.apps import AppConfig


class PauboxConfig(AppConfig):
    name = "django_paubox"
    verbose_name = "Paubox email"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import checks  # noqa: F401  (registers the system checks)
