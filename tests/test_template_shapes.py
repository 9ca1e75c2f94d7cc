"""Both shapes of Paubox's dynamic templates API (issue #10, item 7, the app side).

Paubox's OpenAPI file has string ids (``"template_123"``) and ``{"templates": [...]}``; its prose
docs integers and a bare array. Sync, update, delete and the admin work with either, end to end
over real HTTP (a canned server answers in the shape the sandbox does not).
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from django.test import Client
from django.urls import reverse

from django_paubox.models import DynamicTemplate
from django_paubox.sending import templates

from .canned_server import CannedServer

pytestmark = pytest.mark.django_db

BODY = "<p>Hello {{name}}</p>"
SHAPES = {
    "openapi": {"templates": [{"id": "template_123", "name": "welcome", "body": BODY}]},
    "prose": [{"id": 123, "name": "welcome", "body": BODY}],
    "data-wrapped": {"data": [{"id": "template_123", "name": "welcome", "body": BODY}]},
}


@pytest.fixture
def canned(settings) -> Iterator[CannedServer]:
    with CannedServer() as server:
        settings.PAUBOX = {
            "API_KEY": "k",
            "API_USERNAME": "clinic",
            "API_URL": server.url,
            "MAX_RETRIES": 0,
        }
        yield server


@pytest.mark.parametrize("answer", SHAPES.values(), ids=SHAPES)
def test_sync_reads_either_list_shape(canned, answer):
    canned.add(200, json.dumps(answer))
    assert str(templates.sync_templates()) == "1 added, 0 updated, 0 removed"
    template = DynamicTemplate.objects.get()
    expected = "123" if isinstance(answer, list) else "template_123"
    assert (template.paubox_id, template.name, template.body) == (expected, "welcome", BODY)
    # Synced again: the same template is recognised by its text id, nothing changes.
    canned.add(200, json.dumps(answer))
    assert str(templates.sync_templates()) == "0 added, 0 updated, 0 removed"


def test_string_ids_end_to_end(canned, admin_client: Client):
    canned.add(200, json.dumps(SHAPES["openapi"]))
    templates.sync_templates()
    template = DynamicTemplate.objects.get()

    canned.add(200, json.dumps({"data": {"id": "template_123", "name": "welcome-2", "body": BODY}}))
    templates.update_template(template, name="welcome-2")
    assert canned.requests[-1][:2] == ("PATCH", "/v1/clinic/dynamic_templates/template_123")
    template.refresh_from_db()
    assert (template.paubox_id, template.name) == ("template_123", "welcome-2")

    changelist = admin_client.get(reverse("admin:django_paubox_dynamictemplate_changelist"))
    change_url = reverse("admin:django_paubox_dynamictemplate_change", args=[template.pk])
    html = changelist.content.decode()
    assert changelist.status_code == 200
    assert "template_123" in html and change_url in html
    page = admin_client.get(change_url)
    assert page.status_code == 200 and "template_123" in page.content.decode()

    canned.add(200, json.dumps({"message": "deleted"}))
    templates.delete_template(template)
    assert canned.requests[-1][:2] == ("DELETE", "/v1/clinic/dynamic_templates/template_123")
    assert not DynamicTemplate.objects.exists()


def test_an_id_that_is_not_a_path_segment_is_quoted(canned):
    template = DynamicTemplate.objects.create(paubox_id="a/b c", name="odd")
    canned.add(200, json.dumps({"message": "deleted"}))
    templates.delete_template(template)
    assert canned.requests[-1][:2] == ("DELETE", "/v1/clinic/dynamic_templates/a%2Fb%20c")


def test_the_sandboxs_openapi_ids_work_end_to_end(paubox_sandbox):
    created = templates.create_template("welcome", BODY)
    assert created.paubox_id.startswith("template_")  # the OpenAPI file's shape
    templates.update_template(created, body="<p>Hi {{name}}</p>")
    assert str(templates.sync_templates()) == "0 added, 0 updated, 0 removed"
    templates.delete_template(created)
    assert not DynamicTemplate.objects.exists()
