"""The sandbox against Paubox's published OpenAPI file (``../shared/paubox-openapi.json``).

Two ways: Schemathesis fuzzes every operation of the file on a sandbox of this module's own
(on 127.0.0.1, under the file's base path ``/v1/{api_username}``), and a hand-written walk
through every outcome validates the answers against the file's schemas with ``jsonschema``.

Schemathesis runs bounded and deterministic: a few examples per operation, derandomized (the
same cases every run), no example database, no shrinking; the module takes seconds.

- Positive cases (the file's examples, coverage cases and generated valid requests): no 5xx,
  a status the file documents for the operation, the documented schema and content type.
  ``positive_data_acceptance`` is left out on purpose: the file's ``recipients`` are any
  strings, but Paubox (and the sandbox) answer ``"0"`` as an address with a 400, which the file
  documents.
- Negative coverage cases (invalid values, and every HTTP method the file does not define for
  a path): no 5xx, invalid data refused with a 4xx, a 405 with ``Allow`` for an undefined
  method, answers in the documented schema and content type. Statuses are not checked there:
  the file documents no 400 for ``GET /message_receipt`` without its required parameter.

Without the file every test here skips, saying so loudly.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from django_paubox.sandbox import LOCAL_PARTS, SandboxServer

from .sandbox_support import KEY, SPEC, SPEC_MISSING, Api, message

try:
    import schemathesis
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        negative_data_rejection,
        response_headers_conformance,
        response_schema_conformance,
        status_code_conformance,
        unsupported_method,
    )
except ImportError:  # Schemathesis needs Python 3.11; the test extra leaves it out on 3.10
    schemathesis = None

USERNAME = "conformance-user"
AUTH = {"Authorization": f"Token token={KEY}"}
NO_SCHEMATHESIS = "schemathesis is not installed: the Schemathesis conformance tests did not run"


def _load(mode: str, phases: list[str]) -> Any:
    """The file for one Schemathesis run; None when it (or Schemathesis) is absent."""
    if schemathesis is None or not SPEC.is_file():
        return None
    loaded = schemathesis.openapi.from_path(SPEC)
    loaded.config.update(request_timeout=10)
    loaded.config.phases.update(phases=phases)
    loaded.config.generation.update(
        modes=[mode], max_examples=25, deterministic=True, no_shrink=True, database="none"
    )
    return loaded


POSITIVE = _load("positive", ["examples", "coverage", "fuzzing"])
NEGATIVE = _load("negative", ["coverage"])


@pytest.fixture(scope="module")
def conformance_sandbox() -> Iterator[SandboxServer]:
    """A sandbox of this module's own, holding the templates the file's examples name."""
    with SandboxServer(api_key=KEY, api_username=USERNAME, processing_seconds=0) as server:
        server.add_template("welcome_template", "Hello {{name}}, welcome to our service!")
        server.add_template("detailed_test", "{{#if conditional}}{{name}}{{/if}}")
        yield server


if POSITIVE is None or NEGATIVE is None:
    SKIPPED_BECAUSE = NO_SCHEMATHESIS if schemathesis is None else SPEC_MISSING

    def test_every_operation_answers_as_the_spec_says() -> None:
        pytest.skip(SKIPPED_BECAUSE)

    def test_invalid_requests_and_undefined_methods_are_refused_as_the_spec_says() -> None:
        pytest.skip(SKIPPED_BECAUSE)

else:
    POSITIVE_CHECKS = [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_schema_conformance,
        response_headers_conformance,
    ]
    NEGATIVE_CHECKS = [
        not_a_server_error,
        negative_data_rejection,
        unsupported_method,
        content_type_conformance,
        response_schema_conformance,
    ]

    @POSITIVE.parametrize()
    def test_every_operation_answers_as_the_spec_says(
        case: Any, conformance_sandbox: SandboxServer
    ) -> None:
        case.call_and_validate(
            base_url=conformance_sandbox.base_url, headers=AUTH, checks=POSITIVE_CHECKS
        )

    @NEGATIVE.parametrize()
    def test_invalid_requests_and_undefined_methods_are_refused_as_the_spec_says(
        case: Any, conformance_sandbox: SandboxServer
    ) -> None:
        case.call_and_validate(
            base_url=conformance_sandbox.base_url, headers=AUTH, checks=NEGATIVE_CHECKS
        )


# -- every outcome, validated against the file's schemas -------------------------------------
@pytest.fixture(scope="module")
def spec_validator() -> Callable[[str, Any], None]:
    if not SPEC.is_file():
        pytest.skip(SPEC_MISSING)
    jsonschema = pytest.importorskip("jsonschema")
    spec = json.loads(SPEC.read_text(encoding="utf-8"))

    def validate(schema_name: str, instance: Any) -> None:
        schema = {"$ref": f"#/components/schemas/{schema_name}", "components": spec["components"]}
        jsonschema.Draft7Validator(schema).validate(instance)

    return validate


def test_answers_match_paubox_openapi_spec(paubox_sandbox, spec_validator):
    api = Api(paubox_sandbox)
    paubox_sandbox.processing_seconds = 0
    sent = api.send(message(headers={"from": "a@example.org", "subject": "s", "X-A": "b"}))
    spec_validator("SingleSendResponse", sent.json())
    bulk = api.post("bulk_messages", {"data": {"messages": [message(), message()]}})
    spec_validator("BulkSendResponse", bulk.json())
    spec_validator("ErrorResponse", api.send(message(recipients=[])).json())
    spec_validator("MessageReceiptErrorResponse", api.receipt("missing").json())
    for local in ["someone", *LOCAL_PARTS, "bounce+42", "processing"]:
        if local == "processing":
            paubox_sandbox.processing_seconds = 60
        tracking_id = api.send_ok(message(recipients=[f"{local}@example.com"]))
        spec_validator("MessageReceiptResponse", api.receipt(tracking_id).json())
    multi = api.send_ok(message(recipients=["a@example.com", "open@example.com"]))
    spec_validator("MessageReceiptResponse", api.receipt(multi).json())


def test_template_answers_match_paubox_openapi_spec(paubox_sandbox, spec_validator):
    template = paubox_sandbox.add_template("welcome", "Hi {{name}}")
    listed = Api(paubox_sandbox).session.get(paubox_sandbox.base_url + "/dynamic_templates")
    spec_validator("DynamicTemplateListResponse", listed.json())
    assert listed.json()["templates"][0]["id"] == template.id
    one = Api(paubox_sandbox).session.get(
        f"{paubox_sandbox.base_url}/dynamic_templates/{template.id}"
    )
    spec_validator("DynamicTemplateResponse", one.json())
