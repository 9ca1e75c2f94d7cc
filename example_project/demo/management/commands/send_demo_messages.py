from django.core.management.base import BaseCommand

from example_project.demo.mailer import default_mailer
from example_project.demo.messages import PATIENTS, demo_messages


class Command(BaseCommand):
    help = "Send one demo message for each disposition the sandbox simulates."

    def handle(self, *args, **options):
        messages = demo_messages()
        with default_mailer() as connection:
            sent = connection.send_messages(messages)
        for message, (_, address, outcome) in zip(messages, PATIENTS, strict=True):
            tracking_id = getattr(message, "paubox_tracking_id", None) or "(queued)"
            self.stdout.write(f"  {address:28} {tracking_id:38} expect: {outcome}")
        self.stdout.write(
            self.style.SUCCESS(f"{sent} of {len(messages)} demo messages handed over.")
        )
