"""What was sent, to whom, and what became of it.

Rows are written only by :mod:`django_paubox.records`. Bodies and attachments (PHI) live in
``Message.payload`` only while a message waits in the Celery outbox, or when
``PAUBOX["STORE_CONTENT"]`` is set.
"""

from __future__ import annotations

from django.db import models
from django.utils import timezone

from .tracking.statuses import Status


class Message(models.Model):
    """One Django ``EmailMessage`` as sent (or attempted) through Paubox."""

    class State(models.TextChoices):
        QUEUED = "queued", "Queued"  # in the Celery outbox, not yet handed to Paubox
        SENDING = "sending", "Sending"  # a send is under way (or died: see the sweeper)
        SENT = "sent", "Sent"  # Paubox accepted it and returned a tracking id
        FAILED = "failed", "Failed"  # Paubox refused it, or it could not be sent
        #: A scheduled send called off before its time (Paubox will never send it).
        CANCELLED = "cancelled", "Cancelled"

    tracking_id = models.CharField(
        "Paubox tracking id", max_length=255, unique=True, null=True, blank=True
    )
    state = models.CharField(max_length=16, choices=State.choices, default=State.SENDING)
    #: Disposition over all recipients, kept by records.py for the admin badge and filter.
    status = models.CharField(
        max_length=16, choices=Status.choices, default=Status.QUEUED, db_index=True
    )
    subject = models.TextField(blank=True)
    from_email = models.CharField(max_length=320)
    sender_domain = models.CharField(max_length=255, blank=True, db_index=True)
    #: Which configured credentials sent it (a MAILERS alias, a DOMAINS entry or a connection's
    #: label), so that later calls about it (outbox send, receipts, cancel) use the same ones.
    #: A name, never the key nor anything derived from it.
    mailer = models.CharField(max_length=200, blank=True)
    #: ``paubox_metadata``: a flat str -> str object (not PHI by contract), echoed by Paubox.
    metadata = models.JSONField(default=dict, blank=True)
    #: ``paubox_tags``: a list of str.
    tags = models.JSONField(default=list, blank=True)
    recipient_count = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True)
    error_status = models.PositiveSmallIntegerField(
        null=True, blank=True, help_text="HTTP status of Paubox's refusal, if it answered."
    )
    attempts = models.PositiveSmallIntegerField(default=0)
    #: Outbox: when a queued message may next be sent (a retry waits for its back-off).
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    #: Outbox: when a worker claimed the message; a stale claim means the worker died.
    claimed_at = models.DateTimeField(null=True, blank=True)
    #: Paubox payload (PHI): kept while queued, or after sending when STORE_CONTENT is set.
    payload = models.JSONField(null=True, blank=True, editable=False)
    receipt_checked_at = models.DateTimeField(null=True, blank=True)
    next_receipt_check_at = models.DateTimeField(null=True, blank=True, db_index=True)
    #: A scheduled send (``paubox_send_at``): when Paubox is to send it. Such a message is
    #: ``sent`` once Paubox accepted it (it has a tracking id) and its ``sent_at`` is this time;
    #: its deliveries stay ``queued`` until Paubox reports on them.
    scheduled_at = models.DateTimeField(null=True, blank=True, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["state", "created_at"], name="paubox_msg_state_created"),
            # The admin's tag filter lists the tags of the latest tagged messages: without this
            # (small: only tagged messages are in it) it read every message on every page.
            models.Index(fields=["id"], name="paubox_msg_tagged", condition=~models.Q(tags=[])),
        ]

    def __str__(self) -> str:
        return self.tracking_id or f"Message #{self.pk} ({self.get_state_display()})"


class Delivery(models.Model):
    """One recipient (to, cc or bcc) of a :class:`Message`, and its disposition."""

    class Kind(models.TextChoices):
        TO = "to", "To"
        CC = "cc", "Cc"
        BCC = "bcc", "Bcc"

    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="deliveries")
    recipient = models.CharField(
        max_length=320, db_index=True, help_text="Bare address, lower-cased."
    )
    #: The display name the message gave the address ("Grace Hopper"), kept with the subject.
    display_name = models.CharField(max_length=255, blank=True)
    kind = models.CharField(max_length=3, choices=Kind.choices, default=Kind.TO)
    status = models.CharField(
        max_length=16, choices=Status.choices, default=Status.QUEUED, db_index=True
    )
    raw_status = models.CharField(
        max_length=255, blank=True, help_text="Paubox's own words for the latest status."
    )
    via_secure_portal = models.BooleanField(default=False)
    delivered_at = models.DateTimeField(null=True, blank=True)
    opened_at = models.DateTimeField(null=True, blank=True)
    total_opens = models.PositiveIntegerField(null=True, blank=True)
    distinct_opens = models.PositiveIntegerField(null=True, blank=True)
    total_click_count = models.PositiveIntegerField(null=True, blank=True)
    clicks_per_link = models.JSONField(null=True, blank=True)
    unsubscribed = models.BooleanField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "deliveries"
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(
                fields=["message", "recipient"], name="paubox_delivery_unique_recipient"
            )
        ]

    def __str__(self) -> str:
        # The address alone: the admin's heading and breadcrumbs use it, and a status word here
        # ("Delivered") would contradict the page's own ("Opened").
        return self.recipient


class WebhookEvent(models.Model):
    """A Paubox webhook event, stored once however often it arrives."""

    event_name = models.CharField(max_length=100, db_index=True)
    #: Hash identifying the event, so that a replay is recognised and stored only once.
    dedupe_key = models.CharField(max_length=64, unique=True)
    source_tracking_id = models.CharField(max_length=255, blank=True, db_index=True)
    message = models.ForeignKey(
        Message,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="webhook_events",
    )
    recipient = models.CharField(max_length=320, blank=True)
    occurred_at = models.DateTimeField(null=True, blank=True)
    received_at = models.DateTimeField(default=timezone.now, db_index=True)
    payload = models.JSONField()

    class Meta:
        ordering = ["-received_at", "-id"]

    def __str__(self) -> str:
        return f"{self.event_name} {self.source_tracking_id}".strip()


class DynamicTemplate(models.Model):
    """A local mirror of one Paubox dynamic template (Handlebars), keyed by Paubox's id.

    Paubox is the source of truth: the admin creates, changes and deletes templates through the
    API first and mirrors the answer here; "Sync from Paubox" rebuilds the mirror.
    ``sample_values`` exist only here, for the admin's preview: never put patient data in them.
    """

    #: Text: Paubox's OpenAPI description has string ids ("template_123"), its prose integers.
    paubox_id = models.CharField("Paubox id", max_length=255, unique=True)
    name = models.CharField(
        max_length=255,
        db_index=True,
        help_text="Messages name it in paubox_template_name (it must match exactly).",
    )
    body = models.TextField(blank=True, help_text="The Handlebars template.")
    sample_values = models.JSONField(
        default=dict,
        blank=True,
        help_text="Made-up values (a JSON object) for the preview. Never real patient data.",
    )
    paubox_created_at = models.CharField(max_length=64, blank=True)
    paubox_updated_at = models.CharField(max_length=64, blank=True)
    synced_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name", "paubox_id"]
        verbose_name = "dynamic template"

    def __str__(self) -> str:
        return self.name or f"Template {self.paubox_id}"


class Suppression(models.Model):
    """An address that is not mailed again: it hard bounced, unsubscribed, or staff said so."""

    class Reason(models.TextChoices):
        HARD_BOUNCE = "hard_bounce", "Hard bounce"
        UNSUBSCRIBED = "unsubscribed", "Unsubscribed"
        MANUAL = "manual", "Added by staff"

    address = models.CharField(max_length=320, unique=True, help_text="Bare address, lower-cased.")
    reason = models.CharField(max_length=16, choices=Reason.choices, db_index=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    #: The message whose bounce or unsubscribe caused it (none for a manual one).
    message = models.ForeignKey(
        Message,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="suppressions",
    )
    note = models.TextField(blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.address} ({self.get_reason_display()})"
