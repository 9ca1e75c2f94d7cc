"""Demo messages: one for every disposition the sandbox can simulate."""

from __future__ import annotations

from django.conf import settings
from django.core.mail import EmailMultiAlternatives

# The sandbox steers outcomes by the recipient's local part (see django_paubox.sandbox).
PATIENTS = [
    ("Ada Lovelace", "ada@patients.example", "delivered"),
    ("Grace Hopper", "open@patients.example", "delivered and opened"),
    ("Alan Turing", "portal@patients.example", "delivered via the secure portal"),
    ("Katherine Johnson", "soft@patients.example", "soft bounce"),
    ("Edsger Dijkstra", "bounce@patients.example", "hard bounce"),
    ("Barbara Liskov", "full@patients.example", "mailbox full"),
]


def demo_messages() -> list[EmailMultiAlternatives]:
    messages = []
    for name, address, _ in PATIENTS:
        first = name.split()[0]
        message = EmailMultiAlternatives(
            subject="Your appointment reminder",
            body=f"Hello {first},\n\nThis is a reminder of your appointment on Monday at 10:00.",
            from_email=settings.DEFAULT_FROM_EMAIL,
            to=[f"{name} <{address}>"],
            headers={"X-Demo": "django-paubox"},
        )
        message.attach_alternative(
            f"<p>Hello {first},</p><p>This is a reminder of your appointment on "
            "<strong>Monday at 10:00</strong>.</p>",
            "text/html",
        )
        messages.append(message)
    return messages
