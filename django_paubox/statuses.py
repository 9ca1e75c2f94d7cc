"""Normalised delivery statuses; the one place that knows how Paubox's words map onto them."""

from __future__ import annotations

from django.db import models


class Status(models.TextChoices):
    """``Delivery.status``: where a message stands for one recipient."""

    QUEUED = "queued", "Queued"
    SENT = "sent", "Sent"
    PROCESSING = "processing", "Processing"
    DELIVERED = "delivered", "Delivered"
    SOFT_BOUNCED = "soft_bounced", "Soft bounced"
    HARD_BOUNCED = "hard_bounced", "Hard bounced"
    FAILED = "failed", "Failed"
