"""The Django admin for Paubox messages: who got what, and when they opened it.

Everything here is read-only (but the suppression list, which staff may add to and remove
from), and nothing here deletes messages, deliveries or events (``paubox_purge`` does): rows
are written by :mod:`django_paubox.records` from sends, receipts and webhooks, never by hand.
``Message.payload`` (bodies and attachments: PHI) is
never selected for a list and never rendered; the resend action hands it straight to the
backend. Changelists cost a fixed number of queries however many rows there are (annotations
and subqueries instead of per-row lookups; a test compares 10 rows with 500).
"""

from django.contrib import admin

from ..models import Delivery, DynamicTemplate, Message, Suppression, WebhookEvent
from .deliveries import DeliveryAdmin
from .events import WebhookEventAdmin
from .index import list_dashboard
from .messages import MessageAdmin
from .suppressions import SuppressionAdmin
from .templates import DynamicTemplateAdmin

admin.site.register(Message, MessageAdmin)
admin.site.register(Delivery, DeliveryAdmin)
admin.site.register(WebhookEvent, WebhookEventAdmin)
admin.site.register(DynamicTemplate, DynamicTemplateAdmin)
admin.site.register(Suppression, SuppressionAdmin)
list_dashboard(admin.site)
