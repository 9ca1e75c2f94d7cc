"""A local Paubox: an HTTP server on loopback that speaks the Paubox Email API as documented.

Paubox cannot be reached from development machines and CI, and local development should never
send real mail; so tests, benchmarks and the example project talk to this sandbox over real
HTTP. Standard library only (and ``django.core.exceptions``, through
:mod:`django_paubox.exceptions`), and importable without a configured Django project.

Start it::

    python -m django_paubox.sandbox --port 8025      # or: manage.py paubox_sandbox
    PAUBOX = {"API_URL": "http://127.0.0.1:8025/v1/", "API_USERNAME": "sandbox", "API_KEY": "x"}

or from Python (and the ``paubox_sandbox`` pytest fixture)::

    with SandboxServer(api_key="k", api_username="u", processing_seconds=0.2) as sandbox:
        ...  # PAUBOX["API_URL"] = sandbox.url; sandbox.messages, sandbox.fail_next(503) ...

What it serves (paths ``/v1/<username>/<endpoint>``; ``/v1/email/<endpoint>``, Paubox's newer
username-less form, is accepted too): ``POST messages``, ``POST bulk_messages`` and
``GET message_receipt`` with Paubox's auth (``Token token=<key>`` or ``Bearer <key>``),
validation and error bodies; dynamic templates (``/dynamic_templates[/<id>]``,
``POST templated_messages``, rendered with the Handlebars subset of
:mod:`django_paubox.handlebars`; see :mod:`.templates`) and scheduled sends (``/schedule``,
``/schedule/<id>``, ``/schedule/<id>/cancel``, sent at their time; see :mod:`.schedule`).
Template ids and the template list follow Paubox's OpenAPI file (``"template_1"``,
``{"templates": [...]}``). Any other path answers the gateway's HTML 404, as Paubox does for a
wrong base path; a method Paubox does not define for a path it has answers 405 with ``Allow``.
``/`` lists captured messages in a small HTML page; ``/_sandbox/`` is the JSON control API (see
:mod:`.control_routes` and :class:`SandboxControl`).

The modules import one way, top to bottom: ``cli``, ``pytest_plugin``, ``harness``,
``control``, ``server``, ``handler``, the routes (``control_routes``, ``pages``, ``schedule``,
``templates``, ``messages``), ``routing``, ``core``, the stores (``webhooks``,
``schedule_store``, ``template_store``), ``state``, then ``times``, ``validation``,
``outcomes`` and ``faults``; docs/sandbox.md has the list for an import-linter contract.

Simulated outcomes, steered by the recipient's local part (a ``+tag`` is ignored, so
``bounce+42@example.com`` bounces too); each stage happens a multiple of ``processing_seconds``
after the send (``processing`` until then):

=============  ================================================  =================================
local part     deliveryStatus                                    webhook event
=============  ================================================  =================================
(any other)    ``delivered``                                     ``api_mail_log_delivered``
``bounce@``,   ``hard bounced``                                  ``api_mail_log_permanent_failure``
``hard@``
``soft@``      ``soft bounced``                                  ``api_mail_log_temporary_failure``
``full@``      ``soft bounced - mailbox full``                   ``api_mail_log_temporary_failure``
``portal@``    ``delivered via secure portal``                   ``api_mail_log_delivered``
``notls@``     ``TLS not offered, sending via Secure Portal``,   (none), then
               then at 2x ``delivered via secure portal``        ``api_mail_log_delivered``
``error@``     ``Internal error. Please check back later.``      (none)
``open@``      ``delivered``, then at 2x opened                  ``api_mail_log_delivered``, then
               (``openedStatus``/``openedTime``,                 ``api_mail_log_opened``
               ``total_opens``/``distinct_opens``)
=============  ================================================  =================================

Opens are tracked for single-recipient messages only (as Paubox): ``open@`` among several
recipients is just delivered, and only single-recipient receipts carry ``openedStatus``
(``not opened`` until the open). ``forceSecureNotification`` turns a plain delivery into
``delivered via secure portal``; ``allowNonTLS`` lets ``notls@`` be plainly ``delivered``.
``set_outcome(address, outcome)`` overrides any address with an outcome name (``delivered``,
``hard_bounced``, ``soft_bounced``, ``mailbox_full``, ``portal``, ``notls``, ``error``,
``opened``, or ``processing``: never finishes), a local-part word above, or a Paubox string.
"""

from __future__ import annotations

from .control import SandboxControl, SandboxControlError
from .faults import FaultRates
from .outcomes import LOCAL_PARTS, OUTCOMES
from .server import DEFAULT_USERNAME, SandboxServer
from .state import CapturedMessage

__all__ = [
    "DEFAULT_USERNAME",
    "LOCAL_PARTS",
    "OUTCOMES",
    "CapturedMessage",
    "FaultRates",
    "SandboxControl",
    "SandboxControlError",
    "SandboxServer",
]
