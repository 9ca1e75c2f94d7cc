"""Read-only foundations: these rows are written by records.py, never by hand."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest


class ReadOnlyAdminMixin:
    """Rows come from Paubox, not from people: view them, never add or edit them.

    Deleting stays governed by Django's ordinary delete permission (and by ``paubox_purge``).
    """

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class RecordAdminMixin(ReadOnlyAdminMixin):
    """Messages, deliveries and webhook events are the record of what was sent to whom: nobody
    deletes them from the admin (no delete page, no bulk action, even for superusers).

    Retention deletes them, through ``paubox_purge`` (``PAUBOX["PURGE_AFTER_DAYS"]``).
    """

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class ReadOnlyInline(ReadOnlyAdminMixin, admin.TabularInline):
    """A table of related rows on the message page, for reading only."""

    extra = 0
    max_num = 0
    can_delete = False
    show_change_link = False
    classes = ("paubox-inline",)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


# --- Inlines on the message page ---------------------------------------------------------------
