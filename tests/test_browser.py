"""A real browser in the admin: log in, filter by status, open a message, open the dashboard.

Headless Debian Chromium (``apt-get install chromium chromium-driver``) driven by Playwright
(``pip install playwright``; never ``playwright install``, which downloads a browser). Skipped
when either is missing. With ``DJANGO_PAUBOX_SCREENSHOTS=1`` the screenshots land in
``docs/img/`` for the documentation; otherwise in the test's temporary directory.
"""

from __future__ import annotations

import datetime
import os
import random
import uuid
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.utils import timezone

from django_paubox.models import Delivery, Message, WebhookEvent
from django_paubox.tracking.statuses import Status

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DOCS_IMG = Path(__file__).resolve().parent.parent / "docs" / "img"
PASSWORD = "correct horse battery staple"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} is not installed"),
]

SENDERS = ("appointments@riverside-clinic.example", "billing@riverside-clinic.example")
PATIENTS = (
    "jane.doe",
    "r.alvarez",
    "mwong",
    "k.okafor",
    "lucy.h",
    "tom.baker",
    "a.novak",
    "sam.patel",
    "fatima.z",
    "j.smith",
)
DOMAINS = ("example.com", "example.org", "mail.example.net")
#: Message outcomes, weighted like a typical week of clinic mail.
OUTCOMES = (
    (Status.DELIVERED, 70),
    (Status.PROCESSING, 6),
    (Status.SENT, 4),
    (Status.SOFT_BOUNCED, 8),
    (Status.HARD_BOUNCED, 7),
    (Status.FAILED, 5),
)


def demo_data(seed: int = 7) -> Message:
    """A month of plausible (fictional) clinic mail; returns a message worth opening."""
    rng = random.Random(seed)
    now = timezone.now()
    statuses = [s for s, _ in OUTCOMES]
    weights = [w for _, w in OUTCOMES]
    messages, deliveries, events = [], [], []
    for day in range(30):
        for i in range(rng.randint(2, 9) if day else 5):
            created = now - datetime.timedelta(days=day, minutes=rng.randint(5, 600))
            status = rng.choices(statuses, weights)[0]
            if day > 1 and status in (Status.PROCESSING, Status.SENT):
                status = Status.DELIVERED  # older mail has settled
            elif day == 0 and i < 2:
                status = Status.PROCESSING  # the last hour's mail is still on its way
            failed = status == Status.FAILED
            recipients = [
                f"{p}@{rng.choice(DOMAINS)}"
                for p in rng.sample(PATIENTS, rng.choice((1, 1, 1, 2, 3)))
            ]
            message = Message(
                tracking_id=None if failed else str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                state=Message.State.FAILED if failed else Message.State.SENT,
                status=status,
                subject=rng.choice(("Appointment reminder", "Your lab results", "Invoice")),
                from_email=rng.choice(SENDERS),
                sender_domain="riverside-clinic.example",
                recipient_count=len(recipients),
                created_at=created,
                sent_at=None if failed else created,
                error="401: Unauthorized" if failed else "",
                error_status=401 if failed else None,
            )
            messages.append(message)
            for address in recipients:
                delivered = status == Status.DELIVERED
                opened = delivered and len(recipients) == 1 and rng.random() < 0.6
                portal = delivered and rng.random() < 0.15
                raw = {
                    Status.DELIVERED: "delivered via secure portal" if portal else "delivered",
                    Status.PROCESSING: "processing",
                    Status.SOFT_BOUNCED: "soft bounced - mailbox full",
                    Status.HARD_BOUNCED: "hard bounced",
                }.get(status, "")
                deliveries.append(
                    Delivery(
                        message=message,
                        recipient=address,
                        status=status,
                        raw_status=raw,
                        via_secure_portal=portal,
                        delivered_at=created + datetime.timedelta(seconds=40)
                        if delivered
                        else None,
                        opened_at=created + datetime.timedelta(minutes=rng.randint(3, 300))
                        if opened
                        else None,
                        total_opens=rng.randint(1, 4) if opened else None,
                        distinct_opens=1 if opened else None,
                        total_click_count=rng.randint(0, 2) if opened else None,
                    )
                )
    # The message the test opens: delivered to two patients, one bounced, with webhook events.
    star = Message(
        tracking_id="3d38ab13-0af8-4028-bd45-52e882e0d584",
        state=Message.State.SENT,
        status=Status.HARD_BOUNCED,
        subject="Appointment reminder",
        from_email=SENDERS[0],
        sender_domain="riverside-clinic.example",
        recipient_count=3,
        created_at=now - datetime.timedelta(minutes=50),
        sent_at=now - datetime.timedelta(minutes=50),
    )
    messages.append(star)
    Message.objects.bulk_create(messages)
    sent = now - datetime.timedelta(minutes=50)
    deliveries += [
        Delivery(
            message=star,
            recipient="jane.doe@example.com",
            status=Status.DELIVERED,
            raw_status="delivered via secure portal",
            via_secure_portal=True,
            delivered_at=sent + datetime.timedelta(seconds=31),
            opened_at=sent + datetime.timedelta(minutes=12),
        ),
        Delivery(
            message=star,
            recipient="r.alvarez@example.org",
            status=Status.DELIVERED,
            raw_status="delivered",
            delivered_at=sent + datetime.timedelta(seconds=28),
        ),
        Delivery(
            message=star,
            kind=Delivery.Kind.CC,
            recipient="old.address@mail.example.net",
            status=Status.HARD_BOUNCED,
            raw_status="hard bounced",
        ),
    ]
    Delivery.objects.bulk_create(deliveries)
    for i, (name, recipient, minutes) in enumerate(
        (
            ("api_mail_log_delivered", "r.alvarez@example.org", 1),
            ("api_mail_log_delivered", "jane.doe@example.com", 1),
            ("api_mail_log_permanent_failure", "old.address@mail.example.net", 2),
            ("api_mail_log_opened", "jane.doe@example.com", 12),
        )
    ):
        at = sent + datetime.timedelta(minutes=minutes, seconds=i)
        events.append(
            WebhookEvent(
                event_name=name,
                dedupe_key=f"demo-{i}",
                source_tracking_id=star.tracking_id,
                message=star,
                recipient=recipient,
                occurred_at=at,
                received_at=at + datetime.timedelta(seconds=1),
                payload={"event_name": name, "payload": {"to": recipient}},
            )
        )
    WebhookEvent.objects.bulk_create(events)
    return star


@pytest.fixture
def screenshot_dir(tmp_path: Path) -> Path:
    if os.environ.get("DJANGO_PAUBOX_SCREENSHOTS") == "1":
        DOCS_IMG.mkdir(parents=True, exist_ok=True)
        return DOCS_IMG
    return tmp_path


@pytest.fixture
def demo(transactional_db: None) -> Message:
    """The data and the user, written before the browser starts (see ``browser_page``)."""
    User.objects.create_superuser("support", "support@riverside-clinic.example", PASSWORD)
    return demo_data()


@pytest.fixture
def browser_page(demo: Message) -> Any:
    """A Chromium page. It depends on ``demo`` so that no ORM call happens while Playwright's
    event loop runs in this thread: Django would refuse it (async-unsafe), and a connection
    opened in that context would outlive the test and block dropping the test database."""
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(
                viewport={"width": 1440, "height": 900}, device_scale_factor=1, locale="en-US"
            )
            # The admin's app sidebar, folded (a person's choice the admin remembers): the
            # screenshots are about the Paubox pages.
            context.add_init_script(
                "window.localStorage.setItem('django.admin.navSidebarIsOpen', 'false');"
            )
            page = context.new_page()
            page.set_default_timeout(15_000)
            yield page
            context.close()
        finally:
            browser.close()


@pytest.mark.django_db(transaction=True)
def test_support_person_finds_a_delivery(
    live_server: Any, demo: Message, browser_page: Any, screenshot_dir: Path
):
    star = demo
    page = browser_page
    base = live_server.url

    # Log in through the real form.
    page.goto(f"{base}/admin/django_paubox/message/")
    page.fill("#id_username", "support")
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_selector("#result_list")
    assert page.locator("#result_list .paubox-badge").count() > 10
    assert page.locator(".paubox-badge--delivered").first.is_visible()
    page.screenshot(path=str(screenshot_dir / "admin-changelist.png"), full_page=False)

    # Filter by status with the sidebar, as a person would.
    page.locator("#changelist-filter a", has_text="Hard bounced").first.click()
    page.wait_for_url("**status__exact=hard_bounced**")
    badges = page.locator("#result_list tbody .paubox-badge")
    assert badges.count() >= 1
    assert set(badges.all_inner_texts()) == {"Hard bounced"}

    # Open the message and see every delivery: who got it, who opened it, who bounced.
    page.locator(f'#result_list a:has([title="{star.tracking_id}"])').click()
    page.wait_for_selector("#deliveries-group")
    deliveries = page.locator("#deliveries-group")
    for address in (
        "jane.doe@example.com",
        "r.alvarez@example.org",
        "old.address@mail.example.net",
    ):
        assert deliveries.get_by_text(address, exact=True).is_visible()
    assert deliveries.get_by_text("delivered via secure portal", exact=True).is_visible()
    assert deliveries.locator(".paubox-badge--hard_bounced").is_visible()
    assert (
        page.locator("#webhook_events-group")
        .get_by_text("api_mail_log_opened", exact=True)
        .is_visible()
    )
    page.screenshot(path=str(screenshot_dir / "admin-message.png"), full_page=True)

    # The dashboard, from the link on the message list.
    page.goto(f"{base}/admin/django_paubox/message/")
    page.click("a.paubox-dashboard-link")
    page.wait_for_selector("svg.paubox-chart")
    assert page.locator("svg.paubox-chart rect.paubox-fill").count() >= 25
    assert page.locator("#paubox-card-delivered .paubox-figure").inner_text().endswith("%")
    assert page.locator("#paubox-usage").get_by_text("of 300 messages").is_visible()
    page.screenshot(path=str(screenshot_dir / "admin-dashboard.png"), full_page=True)

    for name in ("admin-changelist.png", "admin-message.png", "admin-dashboard.png"):
        assert (screenshot_dir / name).stat().st_size > 10_000
