"""The sandbox's dynamic templates over raw HTTP, in the shape of Paubox's OpenAPI file: string
ids (``template_1``; the number alone names the same template in a path) and the list as
``{"templates": [...]}``. The client's side is in ``test_templates.py``."""

from __future__ import annotations

from typing import Any

import pytest
import requests

from django_paubox.sandbox import SandboxControl, SandboxServer

from .sandbox_support import KEY, error_details

AUTH = {"Authorization": f"Token token={KEY}"}


def call(sandbox: SandboxServer, method: str, path: str, **kwargs: Any) -> requests.Response:
    return requests.request(method, sandbox.base_url + path, headers=AUTH, timeout=5, **kwargs)


def upload(name: str, body: str) -> dict[str, Any]:
    return {"files": {"data[name]": (None, name.encode()), "data[body]": ("t.hbs", body.encode())}}


def test_ids_are_strings_and_the_list_is_an_object(paubox_sandbox):
    created = call(paubox_sandbox, "POST", "/dynamic_templates", **upload("welcome", "Hi {{a}}"))
    assert created.status_code == 200, created.text
    assert created.json()["id"] == "template_1"
    assert set(created.json()) == {"id", "name", "body", "created_at", "updated_at"}
    call(paubox_sandbox, "POST", "/dynamic_templates", **upload("reminder", "{{b}}"))
    listed = call(paubox_sandbox, "GET", "/dynamic_templates")
    assert listed.status_code == 200
    assert set(listed.json()) == {"templates"}
    assert [(t["id"], t["name"]) for t in listed.json()["templates"]] == [
        ("template_1", "welcome"),
        ("template_2", "reminder"),
    ]
    assert all("body" not in t for t in listed.json()["templates"])


@pytest.mark.parametrize("named_as", ["template_2", "2"])
def test_a_path_takes_the_string_id_or_its_number(paubox_sandbox, named_as):
    paubox_sandbox.add_template("first", "{{a}}")
    paubox_sandbox.add_template("second", "{{b}}")
    fetched = call(paubox_sandbox, "GET", f"/dynamic_templates/{named_as}")
    assert (fetched.status_code, fetched.json()["id"]) == (200, "template_2")
    assert fetched.json()["body"] == "{{b}}"
    renamed = call(
        paubox_sandbox,
        "PATCH",
        f"/dynamic_templates/{named_as}",
        files={"data[name]": (None, b"x")},
    )
    assert (renamed.status_code, renamed.json()["name"]) == (200, "x")
    deleted = call(paubox_sandbox, "DELETE", f"/dynamic_templates/{named_as}")
    assert deleted.json() == {"message": "Template deleted successfully"}
    assert [t.id for t in paubox_sandbox.templates] == ["template_1"]
    assert call(paubox_sandbox, "GET", f"/dynamic_templates/{named_as}").status_code == 404


@pytest.mark.parametrize(
    "template_id", ["template_9", "9", "0", "template_0", "template_", "abc", "01", "1.0", "%FF"]
)
def test_an_unknown_or_malformed_id_is_404_in_paubox_shape(paubox_sandbox, template_id):
    paubox_sandbox.add_template("first", "{{a}}")
    for method in ("GET", "DELETE"):
        answer = call(paubox_sandbox, method, f"/dynamic_templates/{template_id}")
        assert answer.status_code == 404
        assert error_details(answer) == ["Dynamic template not found"]
    assert len(paubox_sandbox.templates) == 1


def test_ids_start_again_after_reset_and_are_never_reused_before(paubox_sandbox):
    first = paubox_sandbox.add_template("a", "x")
    call(paubox_sandbox, "DELETE", f"/dynamic_templates/{first.id}")
    assert paubox_sandbox.add_template("b", "x").id == "template_2"
    paubox_sandbox.reset()
    assert paubox_sandbox.add_template("c", "x").id == "template_1"


def test_the_control_api_shows_string_ids(paubox_sandbox):
    control = SandboxControl(paubox_sandbox.url)
    assert control.add_template("a", "{{x}}")["id"] == "template_1"
    assert [t["id"] for t in control.templates] == ["template_1"]
