"""The suppression list: addresses that are not mailed again.

Staff with the permissions add (``add_suppression``) and remove (``delete_suppression``)
addresses; hard bounces and one-click unsubscribes add them by themselves. Every write goes
through :mod:`django_paubox.records.suppressions`.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.core.validators import validate_email
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.safestring import SafeString

from ..models import Message, Suppression
from ..records import suppressions
from .display import CSS, EMPTY, admin_link, short_datetime


class SuppressionForm(forms.ModelForm):
    class Meta:
        model = Suppression
        fields = ("address", "note")

    def clean_address(self) -> str:
        address = suppressions.normalise(self.cleaned_data["address"])
        validate_email(address)
        return address


class SuppressionAdmin(admin.ModelAdmin):
    form = SuppressionForm
    list_display = ("address", "reason", "since", "caused_by", "note")
    list_filter = ("reason", "created_at")
    search_fields = ("address",)
    search_help_text = "Address (or part of one)."
    date_hierarchy = "created_at"
    list_select_related = ("message",)

    class Media:
        css = CSS

    def get_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        if obj is None:
            return ("address", "note")
        return ("address", "reason", "created_at", "caused_by", "note")

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        if obj is None:
            return ()
        return ("address", "reason", "created_at", "caused_by")

    @admin.display(description="Since", ordering="created_at")
    def since(self, obj: Suppression) -> SafeString | str:
        return short_datetime(obj.created_at)

    @admin.display(description="Caused by")
    def caused_by(self, obj: Suppression) -> SafeString | str:
        if obj.message_id is None:
            return EMPTY
        return admin_link(Message, obj.message_id, str(obj.message))

    def save_model(self, request: HttpRequest, obj: Suppression, form: Any, change: bool) -> None:
        if change:
            suppressions.set_note(obj.pk, obj.note)
            return
        row, _ = suppressions.add(obj.address, Suppression.Reason.MANUAL, note=obj.note)
        obj.pk = row.pk  # the admin's redirect and log entry need it

    def delete_model(self, request: HttpRequest, obj: Suppression) -> None:
        suppressions.remove([obj.address])

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Suppression]) -> None:
        suppressions.remove(queryset.values_list("address", flat=True))
