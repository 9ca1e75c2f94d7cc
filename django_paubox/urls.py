from django.urls import path

from .tracking import unsubscribe
from .tracking import webhook as views

app_name = "django_paubox"

urlpatterns = [
    path("webhook/<str:secret>/", views.webhook, name="webhook"),
    path("unsubscribe/<str:token>/", unsubscribe.unsubscribe, name="unsubscribe"),
]
