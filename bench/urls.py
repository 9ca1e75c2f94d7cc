"""URLs of the benchmark project: the admin and the Paubox webhook."""

from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("paubox/", include("django_paubox.urls")),
]
