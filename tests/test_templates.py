"""Dynamic templates: the Handlebars subset, payloads, the client and backend against the
sandbox over real HTTP, the Celery outbox, bad input, and the DynamicTemplate admin."""

from __future__ import annotations

import base64
import datetime
import decimal
import json
from typing import Any

import pytest
import requests
from django.core.mail import EmailMessage, EmailMultiAlternatives
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from django_paubox import handlebars, tasks
from django_paubox.client import PauboxClient
from django_paubox.conf import get_settings
from django_paubox.exceptions import PauboxAPIError, PauboxPayloadError
from django_paubox.models import DynamicTemplate, Message
from django_paubox.sandbox.templates import parse_form
from django_paubox.sending import templates as templates_api
from django_paubox.sending.options import send_options, template_of
from django_paubox.sending.payload import build_message
from tests.mailers import new_connection

FROM = "Clinic <reminders@clinic.example>"
REMINDER = (
    "<p>Hello {{name}},</p>{{#if slot}}<p>See you at {{slot}}.</p>{{else}}<p>Call us.</p>{{/if}}"
    "<ul>{{#each items}}<li>{{@index}}. {{this}}</li>{{/each}}</ul>{{{signature}}}"
)
VALUES = {
    "name": "Ada <Lovelace>",
    "slot": "9:30",
    "items": ["ID", "Card"],
    "signature": "<b>C</b>",
}
RENDERED = (
    "<p>Hello Ada &lt;Lovelace&gt;,</p><p>See you at 9:30.</p>"
    "<ul><li>0. ID</li><li>1. Card</li></ul><b>C</b>"
)


def templated(to: str = "pat@example.com", **kw: Any) -> EmailMessage:
    email = EmailMessage(kw.pop("subject", "Hi {{name}}"), kw.pop("body", ""), FROM, [to])
    email.paubox_template_name = kw.pop("name", "reminder")  # type: ignore[attr-defined]
    email.paubox_template_values = kw.pop("values", VALUES)  # type: ignore[attr-defined]
    for key, value in kw.items():
        setattr(email, key, value)
    return email


def html_of(captured: Any) -> str:
    return base64.b64decode(captured.content["text/html"]).decode()


def posts(sandbox: Any, endpoint: str) -> int:
    return sum(1 for m, p in sandbox.requests if m == "POST" and p.endswith("/" + endpoint))


@pytest.fixture
def api_client(paubox_sandbox: Any) -> Any:
    with PauboxClient(get_settings()) as api:
        yield api


# --- The Handlebars subset --------------------------------------------------------------------


@pytest.mark.parametrize(
    "template, values, expected",
    [
        (
            "{{name}}",
            {"name": "<a href='x'>&=`"},
            "&lt;a href&#x3D;&#x27;x&#x27;&gt;&amp;&#x3D;&#x60;",
        ),
        ("{{{name}}}|{{&name}}", {"name": "<b>"}, "<b>|<b>"),
        ("{{a.b.c}}|{{missing}}|{{missing.deep}}", {"a": {"b": {"c": 1}}}, "1||"),
        (
            "{{t}} {{f}} {{n}} {{x}} {{l}} {{o}}",
            {"t": True, "f": False, "n": 2.0, "x": 2.5, "l": [1, "a"], "o": {}},
            "true false 2 2.5 1,a [object Object]",
        ),
        ("{{#if v}}y{{else}}n{{/if}}", {"v": "false"}, "y"),
        ("{{#if v}}y{{else}}n{{/if}}", {"v": 0}, "n"),
        ("{{#if v}}y{{else}}n{{/if}}", {"v": []}, "n"),
        ("{{#if v}}y{{else}}n{{/if}}", {"v": {}}, "y"),
        ("{{#if a}}A{{else if b}}B{{else}}C{{/if}}", {"b": 1}, "B"),
        ("{{#unless a}}not a{{else}}a{{/unless}}", {"a": ""}, "not a"),
        (
            "{{#each l}}{{@index}}{{this}}{{#if @first}}F{{/if}}{{#if @last}}L{{/if}},{{/each}}",
            {"l": ["x", "y"]},
            "0xF,1yL,",
        ),
        ("{{#each o}}{{@key}}={{this}};{{/each}}", {"o": {"a": 1, "b": 2}}, "a=1;b=2;"),
        ("{{#each l}}x{{else}}empty{{/each}}", {"l": []}, "empty"),
        (
            "{{#each people}}{{name}}@{{../org}} {{/each}}",
            {"people": [{"name": "A"}, {"name": "B"}], "org": "O"},
            "A@O B@O ",
        ),
        ("{{#with a}}{{b}}{{else}}none{{/with}}", {"a": {"b": "in"}}, "in"),
        ("a {{! note }}{{!-- {{x}} --}}b", {}, "a b"),
        ("a  {{~x~}}  b", {"x": "-"}, "a-b"),
        ("{{l.length}} {{l.1}} {{@root.n}}", {"l": [1, 2], "n": "r"}, "2 2 r"),
    ],
)
def test_handlebars_renders_the_documented_subset(template, values, expected):
    assert handlebars.render(template, values) == expected


def test_handlebars_renders_pauboxs_documented_example():
    values = json.loads('{ "name": "Howard", "conditional":"true","items":["one","two","three"] }')
    template = "Hi {{name}}{{#if conditional}}!{{/if}} {{#each items}}[{{this}}]{{/each}}"
    assert handlebars.render(template, values) == "Hi Howard! [one][two][three]"


@pytest.mark.parametrize(
    "template, error",
    [
        ("{{#if x}}", handlebars.HandlebarsSyntaxError),
        ("{{/if}}", handlebars.HandlebarsSyntaxError),
        ("{{#if x}}{{/each}}", handlebars.HandlebarsSyntaxError),
        ("{{#if x}}{{else}}{{else}}{{/if}}", handlebars.HandlebarsSyntaxError),
        ("{{name", handlebars.HandlebarsSyntaxError),
        ("{{}}", handlebars.HandlebarsSyntaxError),
        ("{{uppercase name}}", handlebars.HandlebarsUnsupported),
        ("{{> header}}", handlebars.HandlebarsUnsupported),
        ("{{#custom x}}{{/custom}}", handlebars.HandlebarsUnsupported),
        ("{{#each l as |item|}}{{/each}}", handlebars.HandlebarsUnsupported),
        ("{{{{raw}}}}x{{{{/raw}}}}", handlebars.HandlebarsUnsupported),
    ],
)
def test_handlebars_refuses_what_it_cannot_render(template, error):
    with pytest.raises(error):
        handlebars.check(template)


# --- Payloads ---------------------------------------------------------------------------------


def test_templated_payload_has_no_content_and_values_as_a_json_string():
    email = templated()
    options = send_options(email)
    assert options["template"]["name"] == "reminder"
    assert isinstance(options["template"]["values"], str)
    assert json.loads(options["template"]["values"]) == VALUES
    message = build_message(email, get_settings())
    assert "content" not in message
    assert message["headers"]["subject"] == "Hi {{name}}"  # Paubox renders it
    assert "content" in build_message(
        EmailMessage("s", "b", FROM, ["a@example.com"]), get_settings()
    )


def test_template_values_default_to_an_empty_object_and_may_be_json_text():
    assert template_of(templated(values=None)) == ("reminder", "{}")
    assert template_of(templated(values='{"a": [1]}')) == ("reminder", '{"a":[1]}')


@pytest.mark.parametrize(
    "values, where",
    [
        (
            {"appointment": {"when": datetime.datetime(2030, 1, 1)}},
            "['appointment']['when'] is a datetime",
        ),
        ({"copay": decimal.Decimal("12.50")}, "['copay'] is a Decimal"),
        ({"tags": {"a", "b"}}, "['tags'] is a set"),
        ({"score": float("nan")}, "['score'] is not a finite number"),
        ({"items": [1, object()]}, "['items'][1] is a object"),
        ({"m": {1: "x"}}, "['m'] has a key that is a int"),
        ("[1, 2]", "must be a JSON object"),
        ("not json", "is a string that is not JSON"),
        (["a"], "must be a dict"),
    ],
)
def test_values_that_are_not_json_are_refused_naming_the_key_not_the_value(values, where):
    with pytest.raises(PauboxPayloadError) as caught:
        template_of(templated(values=values))
    assert where in str(caught.value)
    assert "12.50" not in str(caught.value) and "2030" not in str(caught.value)


def test_self_referencing_values_are_refused():
    values: dict[str, Any] = {"a": {}}
    values["a"]["self"] = values
    with pytest.raises(PauboxPayloadError, match="contains itself"):
        template_of(templated(values=values))


@pytest.mark.parametrize(
    "kw, message",
    [
        ({"body": "Plain body too"}, "leave the body empty"),
        ({"name": ""}, "non-empty string"),
        ({"name": 42}, "non-empty string"),
        ({"name": "bad\nname"}, "control characters"),
    ],
)
def test_bad_template_attributes_are_refused(kw, message):
    with pytest.raises(PauboxPayloadError, match=message):
        template_of(templated(**kw))


def test_values_without_a_name_and_alternatives_are_refused():
    email = EmailMessage("s", "b", FROM, ["a@example.com"])
    email.paubox_template_values = {"a": 1}  # type: ignore[attr-defined]
    with pytest.raises(PauboxPayloadError, match="paubox_template_name is not"):
        template_of(email)
    alt = EmailMultiAlternatives("s", "", FROM, ["a@example.com"])
    alt.attach_alternative("<p>x</p>", "text/html")
    alt.paubox_template_name = "reminder"  # type: ignore[attr-defined]
    with pytest.raises(PauboxPayloadError, match="alternative"):
        template_of(alt)


# --- The client and the sandbox's template endpoints --------------------------------------------


def test_template_crud_through_the_client(api_client, paubox_sandbox):
    created = api_client.create_template("reminder", REMINDER)
    assert isinstance(created["id"], str) and created["name"] == "reminder"
    assert created["body"] == REMINDER
    second = api_client.create_template("welcome", "Welcome {{name}} ✓")
    listed = api_client.list_templates()
    assert [t["id"] for t in listed] == [created["id"], second["id"]]
    assert all(t["body"] is None for t in listed)  # the sandbox lists without bodies
    assert api_client.get_template(second["id"])["body"] == "Welcome {{name}} ✓"  # UTF-8 survives

    renamed = api_client.update_template(second["id"], name="welcome-v2")
    assert (renamed["name"], renamed["body"]) == ("welcome-v2", "Welcome {{name}} ✓")
    rebodied = api_client.update_template(second["id"], body="Hi {{name}}")
    assert (rebodied["name"], rebodied["body"]) == ("welcome-v2", "Hi {{name}}")
    api_client.delete_template(second["id"])
    assert [t.name for t in paubox_sandbox.templates] == ["reminder"]
    with pytest.raises(PauboxAPIError) as caught:
        api_client.get_template(second["id"])
    assert caught.value.status == 404
    with pytest.raises(PauboxAPIError) as caught:
        api_client.delete_template(second["id"])
    assert caught.value.status == 404


def test_requests_are_multipart_with_a_hbs_file(paubox_sandbox):
    session = requests.Session()
    session.headers["Authorization"] = f"Token token={paubox_sandbox.api_key}"
    url = paubox_sandbox.base_url + "/dynamic_templates"
    prepared = session.prepare_request(
        requests.Request(
            "POST", url, files={"data[name]": (None, b"x"), "data[body]": ("x.hbs", b"{{a}}")}
        )
    )
    assert prepared.headers["Content-Type"].startswith("multipart/form-data; boundary=")
    form = parse_form(prepared.body, prepared.headers["Content-Type"])  # type: ignore[arg-type]
    assert form == {"data[name]": b"x", "data[body]": b"{{a}}"}
    # The list is {"templates": [...]} with string ids (Paubox's OpenAPI file).
    assert session.send(prepared).status_code == 200
    answer = session.get(url)
    assert answer.status_code == 200 and isinstance(answer.json()["templates"], list)
    assert answer.json()["templates"][0]["id"] == "template_1"


@pytest.mark.parametrize(
    "files, detail",
    [
        ({"data[name]": (None, b"x")}, "data[body] is required"),
        ({"data[body]": ("x.hbs", b"{{a}}")}, "data[name] is required"),
        ({"data[name]": (None, b"x"), "data[body]": ("x.hbs", b"{{#if a}}")}, "never closed"),
        ({"data[name]": (None, b"x"), "data[body]": ("x.hbs", b"{{upper a}}")}, "helper calls"),
        ({"data[name]": (None, b"dup"), "data[body]": ("x.hbs", b"{{a}}")}, "already been taken"),
    ],
)
def test_bad_uploads_are_400_in_paubox_shape(api_client, paubox_sandbox, files, detail):
    paubox_sandbox.add_template("dup", "{{a}}")
    answer = requests.post(
        paubox_sandbox.base_url + "/dynamic_templates",
        files=files,
        headers={"Authorization": f"Token token={paubox_sandbox.api_key}"},
        timeout=5,
    )
    assert answer.status_code == 400
    assert detail in answer.json()["errors"][0]["details"]
    with pytest.raises(PauboxAPIError) as caught:
        api_client.create_template("dup", "{{a}}")
    assert caught.value.status == 400 and "already been taken" in str(caught.value)


def test_send_templated_renders_like_paubox(api_client, paubox_sandbox):
    paubox_sandbox.add_template("reminder", REMINDER)
    message = {
        "recipients": ["pat@example.com"],
        "headers": {"from": FROM, "subject": "Hi {{name}}"},
    }
    tracking_id = api_client.send_templated(message, "reminder", VALUES)
    captured = paubox_sandbox.get_message(tracking_id)
    assert captured.endpoint == "templated_messages"
    assert captured.subject == "Hi Ada <Lovelace>"
    assert html_of(captured) == RENDERED
    assert captured.options["template_name"] == "reminder"
    assert captured.options["template_values"] == VALUES


@pytest.mark.parametrize("status", [200, 404, 422])
def test_unknown_template_is_an_api_error_even_with_status_200(api_client, paubox_sandbox, status):
    paubox_sandbox.unknown_template_status = status
    message = {"recipients": ["pat@example.com"], "headers": {"from": FROM, "subject": "s"}}
    with pytest.raises(PauboxAPIError) as caught:
        api_client.send_templated(message, "nope", "{}")
    assert caught.value.status == status
    assert "Template nope not found" in str(caught.value)
    assert paubox_sandbox.messages == []


def test_unknown_template_status_is_validated_and_reset(paubox_sandbox):
    with pytest.raises(ValueError):
        paubox_sandbox.unknown_template_status = 500
    paubox_sandbox.unknown_template_status = 404
    paubox_sandbox.add_template("t", "x")
    paubox_sandbox.reset()
    assert paubox_sandbox.unknown_template_status == 200 and paubox_sandbox.templates == []


@pytest.mark.parametrize(
    "data, detail",
    [
        ({"template_values": "{}"}, "data.template_name is missing"),
        ({"template_name": "t"}, "data.template_values is missing"),
        ({"template_name": "t", "template_values": {"a": 1}}, "JSON-encoded string"),
        ({"template_name": "t", "template_values": "[1]"}, "JSON object"),
        ({"template_name": "t", "template_values": "{", "x": 1}, "not valid JSON"),
        ({"template_name": "t", "template_values": "{}", "content": True}, "content must not"),
    ],
)
def test_sandbox_validates_templated_requests(paubox_sandbox, data, detail):
    paubox_sandbox.add_template("t", "x")
    message: dict[str, Any] = {
        "recipients": ["a@example.com"],
        "headers": {"from": FROM, "subject": "s"},
    }
    if data.pop("content", None):
        message["content"] = {"text/plain": "x"}
    answer = requests.post(
        paubox_sandbox.base_url + "/templated_messages",
        json={"data": {**data, "message": message}},
        headers={"Authorization": f"Token token={paubox_sandbox.api_key}"},
        timeout=5,
    )
    assert answer.status_code == 400
    assert any(detail in e["details"] for e in answer.json()["errors"])


def test_unknown_template_paths_are_the_gateways_404(paubox_sandbox):
    auth = {"Authorization": f"Token token={paubox_sandbox.api_key}"}
    for method, path in [
        ("GET", "/dynamic_templates/1/extra"),
        ("POST", "/messages/extra"),
    ]:
        answer = requests.request(method, paubox_sandbox.base_url + path, headers=auth, timeout=5)
        assert answer.status_code == 404 and answer.text.lstrip().startswith("<"), (method, path)
    for method, path in [  # a path Paubox has, with a method it does not define there
        ("PUT", "/dynamic_templates/1"),
        ("POST", "/dynamic_templates/1"),
        ("GET", "/templated_messages"),
    ]:
        answer = requests.request(method, paubox_sandbox.base_url + path, headers=auth, timeout=5)
        assert answer.status_code == 405 and "Allow" in answer.headers, (method, path)
    answer = requests.get(
        paubox_sandbox.base_url + "/dynamic_templates/abc", headers=auth, timeout=5
    )
    assert answer.status_code == 404 and answer.json()["errors"][0]["code"] == 404


def test_template_endpoints_need_auth_and_take_faults(api_client, paubox_sandbox):
    answer = requests.get(paubox_sandbox.base_url + "/dynamic_templates", timeout=5)
    assert answer.status_code == 401
    paubox_sandbox.fail_next(503, endpoint="templated_messages")
    paubox_sandbox.add_template("t", "x")
    message = {"recipients": ["a@example.com"], "headers": {"from": FROM, "subject": "s"}}
    with pytest.raises(PauboxAPIError) as caught:
        api_client.send_templated(message, "t", "{}")
    assert caught.value.status == 503 and caught.value.retryable
    assert api_client.send_templated(message, "t", "{}")


# --- The backend ------------------------------------------------------------------------------


@pytest.mark.django_db
def test_send_mail_with_a_template_goes_to_templated_messages(paubox_sandbox):
    paubox_sandbox.add_template("reminder", REMINDER)
    email = templated()
    assert email.send() == 1
    captured = paubox_sandbox.last_message
    assert captured.endpoint == "templated_messages"
    assert email.paubox_tracking_id == captured.tracking_id  # type: ignore[attr-defined]
    assert html_of(captured) == RENDERED
    row = Message.objects.get()
    assert (row.state, row.status, row.tracking_id) == ("sent", "sent", captured.tracking_id)
    assert row.payload is None
    assert posts(paubox_sandbox, "messages") == 0


@pytest.mark.django_db
def test_a_batch_of_templated_messages_goes_one_by_one_beside_the_bulk(paubox_sandbox):
    paubox_sandbox.add_template("reminder", REMINDER)
    emails = [templated(f"p{i}@example.com", values={**VALUES, "name": f"P{i}"}) for i in range(3)]
    plain = [EmailMessage("Plain", "Body", FROM, [f"q{i}@example.com"]) for i in range(2)]
    assert (
        new_connection().send_messages([emails[0], plain[0], emails[1], plain[1], emails[2]]) == 5
    )
    assert posts(paubox_sandbox, "templated_messages") == 3
    assert posts(paubox_sandbox, "bulk_messages") == 1
    for i, email in enumerate(emails):
        captured = paubox_sandbox.get_message(email.paubox_tracking_id)  # type: ignore[attr-defined]
        assert f"Hello P{i}," in html_of(captured)
    assert set(Message.objects.values_list("state", flat=True)) == {"sent"}


@pytest.mark.django_db
@pytest.mark.parametrize("status", [200, 404])
def test_unknown_template_fails_the_row_with_pauboxs_words(paubox_sandbox, status):
    paubox_sandbox.unknown_template_status = status
    email = templated(name="no-such-template")
    with pytest.raises(PauboxAPIError):
        email.send()
    row = Message.objects.get()
    assert (row.state, row.status, row.error_status) == ("failed", "failed", status)
    assert "Template no-such-template not found" in row.error
    assert set(row.deliveries.values_list("status", flat=True)) == {"failed"}
    assert email.paubox_tracking_id is None  # type: ignore[attr-defined]


@pytest.mark.django_db
def test_unknown_template_in_a_batch_fails_only_that_message(paubox_sandbox):
    paubox_sandbox.add_template("reminder", REMINDER)
    good, bad = templated("a@example.com"), templated("b@example.com", name="gone")
    sent = new_connection(fail_silently=True).send_messages([good, bad])
    assert sent == 1
    states = dict(Message.objects.values_list("deliveries__recipient", "state"))
    assert states == {"a@example.com": "sent", "b@example.com": "failed"}


@pytest.mark.django_db
def test_values_that_are_not_json_fail_the_row_before_any_http(paubox_sandbox):
    email = templated(values={"when": datetime.date(2030, 1, 2)})
    with pytest.raises(PauboxPayloadError, match=r"\['when'\] is a date"):
        email.send()
    row = Message.objects.get()
    assert (row.state, row.status) == ("failed", "failed")
    assert "['when'] is a date" in row.error and "2030" not in row.error
    assert paubox_sandbox.requests == []


@pytest.mark.django_db
def test_templated_message_through_the_celery_outbox(paubox_sandbox, monkeypatch, settings):
    paubox_sandbox.add_template("reminder", REMINDER)
    monkeypatch.setattr(tasks.send_queued, "apply_async", lambda *a, **kw: None)
    backend = new_connection("django_paubox.backends.PauboxCeleryEmailBackend")
    assert backend.send_messages([templated(), templated("b@example.com")]) == 2
    rows = list(Message.objects.order_by("pk"))
    assert rows[0].state == "queued"
    assert rows[0].payload["template"]["name"] == "reminder"
    assert json.loads(rows[0].payload["template"]["values"]) == VALUES
    assert paubox_sandbox.requests == []
    summary = tasks.send_queued([r.pk for r in rows])
    assert summary["sent"] == 2
    assert posts(paubox_sandbox, "templated_messages") == 2
    for row in rows:
        row.refresh_from_db()
        assert row.state == "sent" and row.payload is None
        assert html_of(paubox_sandbox.get_message(row.tracking_id)) == RENDERED


@pytest.mark.django_db
def test_unknown_template_through_the_outbox_fails_without_retrying(paubox_sandbox, monkeypatch):
    monkeypatch.setattr(tasks.send_queued, "apply_async", lambda *a, **kw: None)
    backend = new_connection("django_paubox.backends.PauboxCeleryEmailBackend")
    backend.send_messages([templated(name="missing")])
    row = Message.objects.get()
    assert tasks.send_queued([row.pk])["failed"] == 1
    row.refresh_from_db()
    assert row.state == "failed" and "Template missing not found" in row.error


# --- Mirror and admin -------------------------------------------------------------------------


@pytest.mark.django_db
def test_sync_mirrors_pauboxs_templates_and_keeps_sample_values(paubox_sandbox):
    first = paubox_sandbox.add_template("reminder", REMINDER)
    paubox_sandbox.add_template("welcome", "Welcome {{name}}")
    assert str(templates_api.sync_templates()) == "2 added, 0 updated, 0 removed"
    mirror = DynamicTemplate.objects.get(paubox_id=str(first.id))
    assert (mirror.name, mirror.body) == ("reminder", REMINDER)
    mirror.sample_values = {"name": "Sample"}
    mirror.save()
    paubox_sandbox.template_store.update(first.id, body="New {{name}}")
    paubox_sandbox.template_store.delete(2)
    assert str(templates_api.sync_templates()) == "0 added, 1 updated, 1 removed"
    mirror.refresh_from_db()
    assert mirror.body == "New {{name}}" and mirror.sample_values == {"name": "Sample"}
    assert DynamicTemplate.objects.count() == 1


@pytest.mark.django_db
def test_create_update_delete_go_to_paubox_first(paubox_sandbox):
    template = templates_api.create_template("reminder", REMINDER, sample_values={"name": "S"})
    assert paubox_sandbox.template_store.get(template.paubox_id).body == REMINDER
    templates_api.update_template(template, name="reminder-2")
    assert paubox_sandbox.template_store.get(template.paubox_id).name == "reminder-2"
    assert DynamicTemplate.objects.get().name == "reminder-2"
    with pytest.raises(PauboxAPIError):
        templates_api.create_template("reminder-2", "dup")
    assert DynamicTemplate.objects.count() == 1  # refused by Paubox: nothing mirrored
    paubox_sandbox.template_store.delete(template.paubox_id)  # gone at Paubox already
    templates_api.delete_template(template)
    assert DynamicTemplate.objects.count() == 0


ADMIN = "admin:django_paubox_dynamictemplate_"


@pytest.mark.django_db
def test_admin_creates_through_paubox_and_previews(admin_client: Client, paubox_sandbox):
    response = admin_client.post(
        reverse(ADMIN + "add"),
        {"name": "reminder", "body": REMINDER, "sample_values": json.dumps(VALUES)},
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    mirror = DynamicTemplate.objects.get()
    assert [t.name for t in paubox_sandbox.templates] == ["reminder"]
    assert mirror.paubox_id == str(paubox_sandbox.templates[0].id)
    page = admin_client.get(reverse(ADMIN + "change", args=[mirror.pk])).content.decode()
    assert 'sandbox=""' in page and "srcdoc=" in page
    # The rendered HTML is escaped into the frame's srcdoc: never live in the admin page.
    assert "&lt;b&gt;C&lt;/b&gt;" in page and "<b>C</b>" not in page
    assert "Hello Ada &amp;lt;Lovelace&amp;gt;" in page


@pytest.mark.django_db
def test_admin_shows_pauboxs_refusal_on_the_form(admin_client: Client, paubox_sandbox):
    paubox_sandbox.add_template("taken", "x")
    response = admin_client.post(reverse(ADMIN + "add"), {"name": "taken", "body": "{{a}}"})
    assert response.status_code == 200
    assert "Paubox refused the template" in response.content.decode()
    assert "already been taken" in response.content.decode()
    assert DynamicTemplate.objects.count() == 0


@pytest.mark.django_db
def test_admin_updates_only_what_changed_and_sample_values_stay_local(
    admin_client: Client, paubox_sandbox
):
    template = templates_api.create_template("reminder", REMINDER)
    url = reverse(ADMIN + "change", args=[template.pk])
    before = len(paubox_sandbox.requests)
    response = admin_client.post(
        url, {"name": "reminder", "body": REMINDER, "sample_values": '{"name": "S"}'}
    )
    assert response.status_code == 302
    assert len(paubox_sandbox.requests) == before  # sample values never go to Paubox
    response = admin_client.post(
        url, {"name": "reminder", "body": "Hi {{name}}", "sample_values": "{}"}
    )
    assert response.status_code == 302
    assert paubox_sandbox.requests[-1][0] == "PATCH"
    assert paubox_sandbox.template_store.get(template.paubox_id).body == "Hi {{name}}"
    template.refresh_from_db()
    assert template.body == "Hi {{name}}"


@pytest.mark.django_db
def test_admin_preview_explains_what_it_cannot_render(admin_client: Client, paubox_sandbox):
    template = DynamicTemplate.objects.create(paubox_id=77, name="fancy", body="{{upper name}}")
    page = admin_client.get(reverse(ADMIN + "change", args=[template.pk])).content.decode()
    assert "No preview" in page and "helper calls" in page


@pytest.mark.django_db
def test_admin_sample_values_must_be_an_object(admin_client: Client, paubox_sandbox):
    template = templates_api.create_template("reminder", REMINDER)
    response = admin_client.post(
        reverse(ADMIN + "change", args=[template.pk]),
        {"name": "reminder", "body": REMINDER, "sample_values": "[1, 2]"},
    )
    assert response.status_code == 200 and "JSON object" in response.content.decode()


@pytest.mark.django_db
def test_admin_delete_goes_through_paubox(admin_client: Client, paubox_sandbox):
    template = templates_api.create_template("reminder", REMINDER)
    url = reverse(ADMIN + "delete", args=[template.pk])
    paubox_sandbox.fail_next(503, endpoint="dynamic_templates")
    response = admin_client.post(url, {"post": "yes"}, follow=True)
    assert "Paubox did not delete reminder" in response.content.decode()
    assert DynamicTemplate.objects.count() == 1 and len(paubox_sandbox.templates) == 1
    response = admin_client.post(url, {"post": "yes"})
    assert response.status_code == 302
    assert DynamicTemplate.objects.count() == 0 and paubox_sandbox.templates == []


@pytest.mark.django_db
def test_admin_sync_button_and_action(admin_client: Client, paubox_sandbox):
    paubox_sandbox.add_template("reminder", REMINDER)
    changelist = reverse(ADMIN + "changelist")
    assert "Sync from Paubox" in admin_client.get(changelist).content.decode()
    assert admin_client.get(reverse(ADMIN + "sync")).status_code == 405
    response = admin_client.post(reverse(ADMIN + "sync"), follow=True)
    assert "Synced templates from Paubox: 1 added" in response.content.decode()
    paubox_sandbox.add_template("welcome", "x")
    response = admin_client.post(
        changelist,
        {"action": "sync_from_paubox", "_selected_action": [DynamicTemplate.objects.get().pk]},
        follow=True,
    )
    assert "1 added, 0 updated" in response.content.decode()
    assert "delete_selected" not in admin_client.get(changelist).content.decode()
    paubox_sandbox.fail_next(403, endpoint="dynamic_templates")  # 5xx GETs are retried
    response = admin_client.post(reverse(ADMIN + "sync"), follow=True)
    assert "Syncing templates failed" in response.content.decode()


@pytest.mark.django_db
def test_template_changelist_query_count_is_flat(admin_client: Client):
    url = reverse(ADMIN + "changelist")

    def count() -> int:
        with CaptureQueriesContext(connection) as ctx:
            assert admin_client.get(url).status_code == 200
        return len(ctx.captured_queries)

    DynamicTemplate.objects.bulk_create(
        DynamicTemplate(paubox_id=i, name=f"t{i}", body="x") for i in range(1, 6)
    )
    few = count()
    DynamicTemplate.objects.bulk_create(
        DynamicTemplate(paubox_id=i, name=f"t{i}", body="x") for i in range(6, 90)
    )
    assert count() == few


def test_control_api_and_html_page_know_templates(api_client, paubox_sandbox):
    from django_paubox.sandbox import SandboxControl, SandboxControlError

    control = SandboxControl(paubox_sandbox.url)
    created = control.add_template("reminder", REMINDER)
    assert created["id"] == "template_1" and control.templates[0]["body"] == REMINDER
    with pytest.raises(SandboxControlError, match="400"):
        control.add_template("bad", "{{#if x}}")
    control.set_unknown_template_status(404)
    assert paubox_sandbox.unknown_template_status == 404
    with pytest.raises(SandboxControlError, match="400"):
        control.set_unknown_template_status(500)
    message = {"recipients": ["pat@example.com"], "headers": {"from": FROM, "subject": "Hi"}}
    tracking_id = api_client.send_templated(message, "reminder", VALUES)
    page = requests.get(paubox_sandbox.root_url + "message/" + tracking_id, timeout=5).text
    assert "See you at 9:30." in page and "<b>C</b>" not in page  # shown escaped


@pytest.mark.django_db
def test_an_outage_stops_a_batch_of_templated_messages_after_one_request(paubox_sandbox):
    paubox_sandbox.add_template("reminder", REMINDER)
    paubox_sandbox.fail_next(503, count=10)
    emails = [templated(f"p{i}@example.com") for i in range(4)]
    emails.append(EmailMessage("Plain", "Body", FROM, ["q@example.com"]))
    assert new_connection(fail_silently=True).send_messages(emails) == 0
    assert len(paubox_sandbox.requests) == 1  # not one timeout per message
    rows = Message.objects.order_by("pk")
    assert {r.state for r in rows} == {"failed"}
    assert "Service Unavailable" in rows[0].error
    assert all("not attempted after an earlier request failed" in r.error for r in rows[1:])
