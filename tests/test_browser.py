"""A real browser in the admin, as a support desk uses it: at 1366x768 (and 1400x900) with the
admin's nav sidebar open (its default), log in, read the list, search a patient by name, filter
by status, open a message, open the dashboard from the admin index.

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
#: (local part, display name): the names a clinic's system gives its patients.
PATIENTS = (
    ("jane.doe", "Jane Doe"),
    ("r.alvarez", "Rosa Alvarez"),
    ("mwong", "Michael Wong"),
    ("k.okafor", "Kemi Okafor"),
    ("lucy.h", "Lucy Harper"),
    ("tom.baker", "Tom Baker"),
    ("a.novak", "Anna Novak"),
    ("sam.patel", "Sam Patel"),
    ("fatima.z", "Fatima Zahra"),
    ("j.smith", ""),
)
SUBJECTS = (
    "Appointment reminder: Tuesday 9:30 with Dr. Okoye",
    "Your lab results are ready to view",
    "Invoice 2026-0142",
    "Prescription renewal",
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
                (f"{p}@{rng.choice(DOMAINS)}", name)
                for p, name in rng.sample(PATIENTS, rng.choice((1, 1, 1, 2, 3)))
            ]
            message = Message(
                tracking_id=None if failed else str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                state=Message.State.FAILED if failed else Message.State.SENT,
                status=status,
                subject=rng.choice(SUBJECTS),
                from_email=rng.choice(SENDERS),
                sender_domain="riverside-clinic.example",
                recipient_count=len(recipients),
                created_at=created,
                sent_at=None if failed else created,
                error="401: Unauthorized" if failed else "",
                error_status=401 if failed else None,
            )
            messages.append(message)
            for address, name in recipients:
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
                        display_name=name,
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
        subject="Your MRI appointment on Friday",
        from_email=SENDERS[0],
        sender_domain="riverside-clinic.example",
        recipient_count=3,
        created_at=now - datetime.timedelta(minutes=50),
        sent_at=now - datetime.timedelta(minutes=50),
    )
    messages.append(star)
    # Grace's message, the newest: delivered and opened, the desk's question answered at once.
    grace = Message(
        tracking_id="9b1f0c52-5a7e-4f0e-9d7c-2f3f6c1e8a41",
        state=Message.State.SENT,
        status=Status.DELIVERED,
        subject="Your lab results are ready to view",
        from_email=SENDERS[0],
        sender_domain="riverside-clinic.example",
        recipient_count=1,
        created_at=now - datetime.timedelta(minutes=20),
        sent_at=now - datetime.timedelta(minutes=20),
    )
    messages.append(grace)
    Message.objects.bulk_create(messages)
    deliveries.append(
        Delivery(
            message=grace,
            recipient="grace@example.com",
            display_name="Grace Hopper",
            status=Status.DELIVERED,
            raw_status="delivered",
            delivered_at=grace.created_at + datetime.timedelta(seconds=12),
            opened_at=grace.created_at + datetime.timedelta(minutes=7, seconds=41),
            total_opens=1,
            distinct_opens=1,
        )
    )
    sent = now - datetime.timedelta(minutes=50)
    deliveries += [
        Delivery(
            message=star,
            recipient="jane.doe@example.com",
            display_name="Jane Doe",
            status=Status.DELIVERED,
            raw_status="delivered via secure portal",
            via_secure_portal=True,
            delivered_at=sent + datetime.timedelta(seconds=31),
            opened_at=sent + datetime.timedelta(minutes=12),
        ),
        Delivery(
            message=star,
            recipient="r.alvarez@example.org",
            display_name="Rosa Alvarez",
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
def playwright_browser(demo: Message) -> Any:
    """Chromium. It depends on ``demo`` so that no ORM call happens while Playwright's event
    loop runs in this thread: Django would refuse it (async-unsafe), and a connection opened
    in that context would outlive the test and block dropping the test database."""
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def new_page(browser: Any, width: int, height: int) -> Any:
    """A page the size of a clinic's screen, the admin's nav sidebar as Django leaves it: open.
    (Django keeps a person's choice in localStorage; a new context has none.)"""
    context = browser.new_context(
        viewport={"width": width, "height": height}, device_scale_factor=1, locale="en-US"
    )
    page = context.new_page()
    page.set_default_timeout(15_000)
    return page


def log_in(page: Any, base: str, path: str) -> None:
    page.goto(f"{base}{path}")
    page.fill("#id_username", "support")
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")


def assert_fits(page: Any) -> None:
    """The list's table fits its box: nothing to scroll sideways, no column cut off."""
    assert page.locator("#nav-sidebar").is_visible()  # the sidebar is open
    overflow = page.evaluate(
        "() => { const r = document.querySelector('#changelist .results');"
        " return [r.scrollWidth, r.clientWidth]; }"
    )
    assert overflow[0] <= overflow[1], (
        f"{page.url}: table {overflow[0]} px in a {overflow[1]} px box"
    )
    last = page.locator("#result_list thead th").last.bounding_box()
    assert last["x"] + last["width"] <= page.viewport_size["width"]


@pytest.mark.django_db(transaction=True)
def test_support_person_finds_a_delivery(
    live_server: Any, demo: Message, playwright_browser: Any, screenshot_dir: Path
):
    star = demo
    page = new_page(playwright_browser, 1366, 768)
    base = live_server.url

    # Log in through the real form; the message list, sidebar open.
    log_in(page, base, "/admin/django_paubox/message/")
    page.wait_for_selector("#result_list")
    assert page.locator("#result_list .paubox-badge").count() > 10
    assert_fits(page)
    # Rows are named by their subject; the newest, Grace's, says when she opened it.
    first = page.locator("#result_list tbody tr").first
    assert first.locator(".paubox-subject").inner_text() == "Your lab results are ready to view"
    assert first.get_by_text("Grace Hopper").is_visible()
    assert first.locator(".paubox-badge").inner_text() == "Opened"
    opened = first.locator(".paubox-opened")
    assert opened.is_visible()
    box = opened.bounding_box()
    assert box["x"] + box["width"] <= 1366  # on screen, not cut off at the right
    assert first.locator("td.field-when").is_visible()
    # No delete for anyone, a superuser included.
    assert page.locator("select[name=action] option[value=delete_selected]").count() == 0
    page.screenshot(path=str(screenshot_dir / "admin-changelist.png"), full_page=False)

    # Search a patient by name, as the desk hears it on the phone.
    page.fill("#searchbar", "Grace")
    page.press("#searchbar", "Enter")
    page.wait_for_url("**q=Grace**")
    rows = page.locator("#result_list tbody tr")
    assert rows.count() == 1
    assert rows.first.get_by_text("grace@example.com").is_visible()

    # Filter by status with the filter sidebar, as a person would.
    page.goto(f"{base}/admin/django_paubox/message/")
    page.locator("#changelist-filter a", has_text="Hard bounced").first.click()
    page.wait_for_url("**desk_status=hard_bounced**")
    badges = page.locator("#result_list tbody .paubox-badge")
    assert badges.count() >= 1
    assert set(badges.all_inner_texts()) == {"Hard bounced"}

    # Open the message and see every delivery: who got it, who opened it, who bounced.
    page.locator("#result_list a", has_text=star.subject).first.click()
    page.wait_for_selector("#deliveries-group")
    assert page.locator("#content h2").first.inner_text() == star.subject
    assert page.locator("#message_form").get_by_text(str(star.tracking_id), exact=True).is_visible()
    deliveries = page.locator("#deliveries-group")
    for address in (
        "jane.doe@example.com",
        "r.alvarez@example.org",
        "old.address@mail.example.net",
    ):
        assert deliveries.locator("td.field-who").get_by_text(address, exact=True).is_visible()
    assert deliveries.get_by_text("Jane Doe", exact=True).is_visible()
    assert deliveries.get_by_text("delivered via secure portal", exact=True).is_visible()
    assert deliveries.locator(".paubox-badge--hard_bounced").is_visible()
    assert deliveries.locator(".paubox-badge--opened").is_visible()
    events = page.locator("#webhook_events-group")
    assert events.get_by_text("api_mail_log_opened", exact=True).is_visible()
    assert events.get_by_text("Opened", exact=True).is_visible()
    assert page.locator("a.deletelink").count() == 0
    page.screenshot(path=str(screenshot_dir / "admin-message.png"), full_page=True)

    # The delivery and event lists fit too.
    for path in ("/admin/django_paubox/delivery/", "/admin/django_paubox/webhookevent/"):
        page.goto(f"{base}{path}")
        page.wait_for_selector("#result_list")
        assert_fits(page)
        assert page.locator("select[name=action] option[value=delete_selected]").count() == 0

    # The dashboard, from the app's section on the admin index.
    page.goto(f"{base}/admin/")
    section = page.locator("#content-main .app-django_paubox")
    section.get_by_role("link", name="Dashboard", exact=True).click()
    page.wait_for_selector("svg.paubox-chart")
    assert page.locator("svg.paubox-chart rect.paubox-fill").count() >= 25
    assert page.locator("#paubox-card-delivered .paubox-figure").inner_text().endswith("%")
    assert page.locator("#paubox-usage").get_by_text("of 300 messages").is_visible()
    page.screenshot(path=str(screenshot_dir / "admin-dashboard.png"), full_page=True)

    for name in ("admin-changelist.png", "admin-message.png", "admin-dashboard.png"):
        assert (screenshot_dir / name).stat().st_size > 10_000


@pytest.mark.django_db(transaction=True)
def test_lists_fit_at_1400_by_900_with_the_sidebar_open(
    live_server: Any, demo: Message, playwright_browser: Any
):
    page = new_page(playwright_browser, 1400, 900)
    log_in(page, live_server.url, "/admin/django_paubox/message/")
    page.wait_for_selector("#result_list")
    for path in (
        "/admin/django_paubox/message/",
        "/admin/django_paubox/delivery/",
        "/admin/django_paubox/webhookevent/",
    ):
        page.goto(f"{live_server.url}{path}")
        page.wait_for_selector("#result_list")
        assert_fits(page)
