"""URLs of the benchmark project: the admin, the Paubox webhook and the baselines beside them.

The baselines (floors) run in the same project, behind the same middleware, so that a benchmark
can compare the real thing with them in one run: ``bench/floor/webhook/<secret>/`` is the
webhook floor (bench/floor.py), ``bench/floor/admin/`` a stock admin over the same tables
(bench/floor_admin.py).
"""

from django.contrib import admin
from django.urls import include, path

from . import floor, floor_admin

urlpatterns = [
    path("admin/", admin.site.urls),
    path("paubox/", include("django_paubox.urls")),
    path("bench/floor/webhook/<str:secret>/", floor.webhook_floor, name="bench-floor-webhook"),
    path("bench/floor/admin/dashboard/", floor_admin.dashboard, name="bench-floor-dashboard"),
    path("bench/floor/admin/", floor_admin.site.urls),
]
