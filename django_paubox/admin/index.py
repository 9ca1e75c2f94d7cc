"""The dashboard's entry in the app's section of the admin index and of the nav sidebar.

The dashboard is a view of :class:`~.messages.MessageAdmin`, not a model, so the admin would
not list it. A proxy model would need a migration for a page; instead the site's
``get_app_list`` (which builds both the index and the sidebar) is wrapped once to add a
"Dashboard" row to this app's section, for whoever may view messages.
"""

from __future__ import annotations

from typing import Any

from django.contrib.admin import AdminSite
from django.http import HttpRequest
from django.urls import NoReverseMatch, reverse

from ..models import Message

_APP_LABEL = Message._meta.app_label
_WRAPPED = "_paubox_lists_dashboard"


def dashboard_entry(site: AdminSite) -> dict[str, Any] | None:
    """The row the app list template renders (same keys as Django's model rows)."""
    try:
        url = reverse(f"{site.name}:{_APP_LABEL}_{Message._meta.model_name}_dashboard")
    except NoReverseMatch:  # Message not registered on this site
        return None
    return {
        "name": "Dashboard",
        "object_name": "PauboxDashboard",
        "perms": {"add": False, "change": False, "delete": False, "view": True},
        "admin_url": url,
        "add_url": None,
        "view_only": True,
    }


def list_dashboard(site: AdminSite) -> None:
    """Wrap ``site.get_app_list`` (once) so this app's section starts with the dashboard."""
    original = site.get_app_list
    if getattr(original, _WRAPPED, False):
        return

    def get_app_list(request: HttpRequest, app_label: str | None = None) -> list[Any]:
        app_list = original(request, app_label)
        for app in app_list:
            if app.get("app_label") != _APP_LABEL:
                continue
            models = app.get("models", [])
            # Django lists Message only for those who may view it: so is the dashboard.
            if any(m.get("model") is Message and m.get("admin_url") for m in models):
                entry = dashboard_entry(site)
                if entry is not None:
                    models.insert(0, entry)
        return app_list

    setattr(get_app_list, _WRAPPED, True)
    site.get_app_list = get_app_list  # type: ignore[method-assign]
