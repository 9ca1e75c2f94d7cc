"""Paubox dynamic templates: create, change, delete and sync, Paubox first, then the mirror.

Paubox holds the templates; :class:`~django_paubox.models.DynamicTemplate` rows are a local
mirror for the admin (listing without an API call per page, and a preview). Every change goes
to Paubox first and is mirrored only once Paubox accepted it, so the mirror never shows a
template Paubox does not have; :func:`sync_templates` rebuilds it from Paubox's list.

With ``PAUBOX["DOMAINS"]`` and no top-level ``API_KEY``, the first domain's key is used:
templates belong to the Paubox organisation, not to one sending domain (an assumption: Paubox
documents templates per account). On Django 6.1 with the keys in ``MAILERS`` only (none in
``PAUBOX``), the ``default`` mailer's are used if it is a Paubox one, else the first Paubox
mailer's.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from django.db import transaction
from django.utils import timezone

from ..client import PauboxClient
from ..conf import PauboxSettings, get_settings
from ..credentials import mailer_settings, paubox_mailers
from ..exceptions import PauboxAPIError
from ..handlebars import render
from ..models import DynamicTemplate

__all__ = [
    "SyncSummary",
    "apply_answer",
    "create_template",
    "delete_template",
    "paubox_client",
    "render_preview",
    "sync_templates",
    "template_settings",
    "update_template",
]


@dataclass(frozen=True)
class SyncSummary:
    created: int = 0
    updated: int = 0
    deleted: int = 0

    def __str__(self) -> str:
        return f"{self.created} added, {self.updated} updated, {self.deleted} removed"


def template_settings(conf: PauboxSettings | None = None) -> PauboxSettings:
    """The settings whose key manages templates (see the module docstring)."""
    if conf is None:
        conf = get_settings()
        mailers = paubox_mailers()
        if not conf.api_key and not conf.domain_names and mailers:
            conf = mailer_settings(mailers[0])
    domains = getattr(conf, "domain_names", [])
    if domains and not conf.api_key:
        return conf.for_domain(domains[0])  # type: ignore[no-any-return]
    return conf


@contextlib.contextmanager
def paubox_client(client: PauboxClient | None = None) -> Iterator[PauboxClient]:
    """``client``, or a client with the templates' key, closed afterwards."""
    if client is not None:
        yield client
        return
    with PauboxClient(template_settings()) as own:
        yield own


_client = paubox_client


def apply_answer(template: DynamicTemplate, answer: dict[str, Any]) -> DynamicTemplate:
    """Copy Paubox's answer about a template (id, name, body, times) onto its mirror row."""
    template.paubox_id = answer["id"]
    for key, value in _mirror_fields(answer).items():
        setattr(template, key, value)
    return template


def _mirror_fields(answer: dict[str, Any]) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "paubox_created_at": answer.get("created_at") or "",
        "paubox_updated_at": answer.get("updated_at") or "",
        "synced_at": timezone.now(),
    }
    if answer.get("name"):
        fields["name"] = answer["name"]
    if answer.get("body") is not None:
        fields["body"] = answer["body"]
    return fields


def create_template(
    name: str,
    body: str,
    *,
    sample_values: dict[str, Any] | None = None,
    client: PauboxClient | None = None,
) -> DynamicTemplate:
    """Upload a template to Paubox, then mirror it. Raises what the client raises."""
    with _client(client) as api:
        answer = api.create_template(name, body)
    fields = {"name": name, "body": body, **_mirror_fields(answer)}
    if sample_values is not None:
        fields["sample_values"] = sample_values
    template, _ = DynamicTemplate.objects.update_or_create(paubox_id=answer["id"], defaults=fields)
    return template


def update_template(
    template: DynamicTemplate,
    *,
    name: str | None = None,
    body: str | None = None,
    client: PauboxClient | None = None,
) -> DynamicTemplate:
    """Change a template's name and/or body at Paubox, then in the mirror."""
    with _client(client) as api:
        answer = api.update_template(template.paubox_id, name=name, body=body)
    template.name = answer["name"] or (name if name is not None else template.name)
    if answer.get("body") is not None:
        template.body = answer["body"]
    elif body is not None:
        template.body = body
    template.paubox_created_at = answer.get("created_at") or template.paubox_created_at
    template.paubox_updated_at = answer.get("updated_at") or ""
    template.synced_at = timezone.now()
    template.save()
    return template


def delete_template(template: DynamicTemplate, *, client: PauboxClient | None = None) -> None:
    """Delete a template at Paubox (already gone there is fine), then from the mirror."""
    try:
        with _client(client) as api:
            api.delete_template(template.paubox_id)
    except PauboxAPIError as error:
        if error.status != 404:
            raise
    template.delete()


def sync_templates(*, client: PauboxClient | None = None) -> SyncSummary:
    """Make the mirror what Paubox has: add, update and remove rows. Sample values are kept.

    A template the list gives without a body is fetched on its own. All HTTP happens before
    the one transaction that writes the mirror.
    """
    with _client(client) as api:
        answers = api.list_templates()
        answers = [a if a.get("body") is not None else api.get_template(a["id"]) for a in answers]
    created = updated = 0
    with transaction.atomic():
        existing = {t.paubox_id: t for t in DynamicTemplate.objects.select_for_update()}
        for answer in answers:
            fields = _mirror_fields(answer)
            row = existing.get(answer["id"])
            if row is None:
                DynamicTemplate.objects.create(paubox_id=answer["id"], **fields)
                created += 1
                continue
            changed = any(getattr(row, k) != v for k, v in fields.items() if k != "synced_at")
            for key, value in fields.items():
                setattr(row, key, value)
            row.save()
            updated += int(changed)
        listed = {answer["id"] for answer in answers}
        gone = [t.pk for t in existing.values() if t.paubox_id not in listed]
        deleted = DynamicTemplate.objects.filter(pk__in=gone).delete()[0] if gone else 0
    return SyncSummary(created=created, updated=updated, deleted=deleted)


def render_preview(body: str, values: Any) -> str:
    """``body`` rendered with ``values`` the way Paubox would (the subset in
    :mod:`django_paubox.handlebars`); raises :class:`~django_paubox.handlebars.HandlebarsError`
    for what it cannot render."""
    return render(body, values if values is not None else {})
