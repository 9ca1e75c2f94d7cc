from urllib.parse import urlsplit

from django.contrib import messages as flash
from django.contrib.admin.views.decorators import staff_member_required
from django.shortcuts import redirect, render

from django_paubox.conf import get_settings
from example_project.demo.mailer import default_mailer
from example_project.demo.messages import demo_messages

LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def sandbox_url() -> str | None:
    """The sandbox's message list at the address the app sends to (run.sh's SANDBOX_PORT), or
    None when PAUBOX points at something that is not a local sandbox (the real Paubox)."""
    parts = urlsplit(get_settings().api_url)
    if parts.hostname not in LOOPBACK:
        return None
    return f"{parts.scheme}://{parts.netloc}/"


@staff_member_required
def home(request):
    if request.method == "POST":
        with default_mailer() as connection:
            sent = connection.send_messages(demo_messages())
        flash.success(request, f"{sent} demo messages sent. Watch their dispositions change.")
        return redirect("admin:django_paubox_message_changelist")
    return render(request, "demo/home.html", {"sandbox_url": sandbox_url()})
