"""Dynamic templates: managed Paubox-first, mirrored in DynamicTemplate."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import (
    QuerySet,
)
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString

from ..exceptions import PauboxError
from ..handlebars import HandlebarsError
from ..models import DynamicTemplate
from ..sending import templates as templates_api
from .display import (
    CSS,
)


class DynamicTemplateForm(forms.ModelForm):
    """Name, body and sample values; saving sends name and body to Paubox first.

    The API call happens in :meth:`clean`, so that Paubox's refusal (a duplicate name, a bad
    template) shows on the form instead of after a half-done save.
    """

    class Meta:
        model = DynamicTemplate
        fields = ("name", "body", "sample_values")
        widgets = {
            "body": forms.Textarea(
                attrs={"rows": 18, "class": "paubox-code", "spellcheck": "false"}
            ),
            "sample_values": forms.Textarea(attrs={"rows": 6, "class": "paubox-code"}),
        }

    #: Paubox's answer about the template, once it accepted the change.
    paubox_answer: dict[str, Any] | None = None

    def clean_sample_values(self) -> Any:
        values = self.cleaned_data.get("sample_values")
        if values in (None, ""):
            return {}
        if not isinstance(values, dict):
            raise forms.ValidationError('Give a JSON object, such as {"name": "Ada"}.')
        return values

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        if self.errors:
            return cleaned
        name, body = cleaned.get("name", ""), cleaned.get("body", "")
        if not body.strip():
            self.add_error("body", "Paubox needs a template body.")
            return cleaned
        creating = self.instance.pk is None
        changed = set(self.changed_data) & {"name", "body"}
        if not creating and not changed:
            return cleaned  # only the sample values changed: nothing to tell Paubox
        try:
            with templates_api.paubox_client() as api:
                if creating:
                    self.paubox_answer = api.create_template(name, body)
                else:
                    self.paubox_answer = api.update_template(
                        self.instance.paubox_id,
                        name=name if "name" in changed else None,
                        body=body if "body" in changed else None,
                    )
        except PauboxError as exc:
            raise forms.ValidationError(f"Paubox refused the template: {exc}") from None
        return cleaned


class DynamicTemplateAdmin(admin.ModelAdmin):
    """Paubox's dynamic templates: every change goes to Paubox first, then to the mirror."""

    form = DynamicTemplateForm
    list_display = ("name", "paubox_id", "paubox_updated_at", "synced_at")
    search_fields = ("name",)
    search_help_text = "Template name."
    readonly_fields = (
        "preview",
        "paubox_id",
        "paubox_created_at",
        "paubox_updated_at",
        "synced_at",
    )
    fieldsets = (
        (None, {"fields": ("name", "body")}),
        (
            "Preview",
            {
                "fields": ("sample_values", "preview"),
                "description": (
                    "Rendered here from the sample values (made-up data only), with the "
                    "Handlebars subset Paubox's documentation uses."
                ),
            },
        ),
        (
            "Paubox",
            {
                "classes": ("collapse",),
                "fields": ("paubox_id", "paubox_created_at", "paubox_updated_at", "synced_at"),
            },
        ),
    )
    actions = ("sync_from_paubox",)
    change_list_template = "django_paubox/admin/dynamictemplate_change_list.html"

    class Media:
        css = CSS

    def changelist_view(self, request: HttpRequest, extra_context: Any = None) -> HttpResponse:
        context = {"paubox_can_sync": self.has_change_permission(request), **(extra_context or {})}
        return super().changelist_view(request, context)

    def get_actions(self, request: HttpRequest, action_location: Any = None) -> Any:
        # Bulk delete would report success for templates Paubox refused to delete: templates
        # are deleted one at a time, from their page, through Paubox. (action_location: Django
        # 6.1 adds it, and deprecates overrides whose signature lacks it; absent before.)
        if action_location is None:
            actions = super().get_actions(request)
        else:
            actions = super().get_actions(request, action_location=action_location)  # type: ignore[call-arg,unused-ignore]
        actions.pop("delete_selected", None)
        return actions

    def save_model(
        self, request: HttpRequest, obj: DynamicTemplate, form: Any, change: bool
    ) -> None:
        answer = getattr(form, "paubox_answer", None)
        if answer is not None:
            name, body = obj.name, obj.body
            templates_api.apply_answer(obj, answer)
            obj.name = obj.name or name
            if answer.get("body") is None:
                obj.body = body
        super().save_model(request, obj, form, change)

    def delete_model(self, request: HttpRequest, obj: DynamicTemplate) -> None:
        try:
            templates_api.delete_template(obj)
        except PauboxError as exc:
            request._paubox_delete_error = str(exc)  # type: ignore[attr-defined]

    def response_delete(self, request: HttpRequest, obj_display: str, obj_id: Any) -> HttpResponse:
        error = getattr(request, "_paubox_delete_error", None)
        if error is None:
            return super().response_delete(request, obj_display, obj_id)
        self.message_user(request, f"Paubox did not delete {obj_display}: {error}", messages.ERROR)
        info = (self.opts.app_label, self.opts.model_name)
        return HttpResponseRedirect(reverse("admin:{}_{}_change".format(*info), args=[obj_id]))

    @admin.display(description="Preview")
    def preview(self, obj: DynamicTemplate | None) -> SafeString | str:
        """The body rendered with the sample values, in a sandboxed frame (no scripts)."""
        if obj is None or obj.pk is None:
            return "Save the template to see a preview."
        try:
            html = templates_api.render_preview(obj.body, obj.sample_values or {})
        except HandlebarsError as exc:
            return f"No preview: {exc}. Paubox may still render it; the preview cannot."
        return format_html(
            '<iframe class="paubox-preview" sandbox="" srcdoc="{}" title="Preview"></iframe>'
            '<details class="paubox-preview-source"><summary>Rendered HTML</summary>'
            '<pre class="paubox-json">{}</pre></details>',
            html,
            html,
        )

    @admin.action(description="Sync all templates from Paubox", permissions=["change"])
    def sync_from_paubox(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        """Rebuild the whole mirror from Paubox (whatever is selected)."""
        self._sync(request)

    def _sync(self, request: HttpRequest) -> None:
        try:
            summary = templates_api.sync_templates()
        except PauboxError as exc:
            self.message_user(request, f"Syncing templates failed: {exc}", messages.ERROR)
            return
        self.message_user(request, f"Synced templates from Paubox: {summary}.", messages.SUCCESS)

    def get_urls(self) -> list[URLPattern]:
        info = (self.opts.app_label, self.opts.model_name)
        return [
            path(
                "sync/",
                self.admin_site.admin_view(self.sync_view),
                name="{}_{}_sync".format(*info),
            ),
            *super().get_urls(),
        ]

    def sync_view(self, request: HttpRequest) -> HttpResponse:
        """POST only (it changes the mirror): the changelist's "Sync from Paubox" button."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not self.has_change_permission(request):
            raise PermissionDenied
        self._sync(request)
        info = (self.opts.app_label, self.opts.model_name)
        return HttpResponseRedirect(reverse("admin:{}_{}_changelist".format(*info)))
