from django.urls import path

from .tracking import webhook as views

app_name = "django_paubox"

urlpatterns = [
    path("webhook/<str:secret>/", views.webhook, name="webhook"),
]
