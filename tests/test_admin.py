"""The admin: lists, filters, search, the message page, actions, the dashboard, query counts."""

from __future__ import annotations

import datetime
import itertools
import re
import time
from collections.abc import Sequence
from typing import Any

import django
import pytest
from django.contrib.auth.models import Permission, User
from django.core import mail as django_mail
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from django_paubox.admin import dashboard
from django_paubox.models import Delivery, Message, WebhookEvent
from django_paubox.tracking.statuses import DESK_STATUSES, Status
from tests.factories import stored_message as make_message
from tests.mailers import PLAIN, use_backend

pytestmark = pytest.mark.django_db

PHI = "PHI-BODY-7f3a must never be shown"
CHANGELIST = "admin:django_paubox_message_changelist"
DASHBOARD = "admin:django_paubox_message_dashboard"
_ids = itertools.count(1)


def bulk_messages(count: int, *, recipients: int = 2) -> None:
    """Many messages, each with deliveries and a webhook event, in a handful of queries."""
    now = timezone.now()
    statuses = list(Status.values)
    rows = [
        Message(
            tracking_id=f"bulk-{next(_ids):06d}",
            state=Message.State.SENT,
            status=statuses[i % len(statuses)],
            subject="Bulk",
            from_email=f"care@d{i % 7}.example",
            sender_domain=f"d{i % 7}.example",
            recipient_count=recipients,
            created_at=now - datetime.timedelta(hours=i % 700),
            sent_at=now - datetime.timedelta(hours=i % 700),
            payload={"message": {"content": {"text/plain": PHI}}} if i % 3 == 0 else None,
        )
        for i in range(count)
    ]
    Message.objects.bulk_create(rows)
    Delivery.objects.bulk_create(
        Delivery(
            message=m,
            recipient=f"r{j}-{m.tracking_id}@example.org",
            status=m.status,
            opened_at=now if j == 0 and m.status == Status.DELIVERED else None,
        )
        for m in rows
        for j in range(recipients)
    )
    WebhookEvent.objects.bulk_create(
        WebhookEvent(
            event_name="api_mail_log_delivered",
            dedupe_key=f"dk-{m.tracking_id}",
            source_tracking_id=m.tracking_id,
            message=m,
            recipient=f"r0-{m.tracking_id}@example.org",
            payload={"event_name": "api_mail_log_delivered", "payload": {"subject": PHI}},
        )
        for m in rows
    )


def count_queries(client: Client, url: str) -> int:
    with CaptureQueriesContext(connection) as ctx:
        response = client.get(url)
    assert response.status_code == 200, response.status_code
    return len(ctx.captured_queries)


def body(response: Any) -> str:
    return response.content.decode()


def listed_tracking_ids(response: Any) -> set[str]:
    return {str(m.tracking_id) for m in response.context["cl"].result_list}


# --- The message list -----------------------------------------------------------------------------


def test_changelist_shows_subject_badge_recipients_and_link_to_dashboard(admin_client: Client):
    m = make_message(
        recipients=["a@clinic.example", "b@clinic.example", "c@clinic.example"],
        status=Status.SOFT_BOUNCED,
        payload={"message": {"content": {"text/plain": PHI}}},
        subject="Your lab results",
    )
    Delivery.objects.filter(recipient="a@clinic.example").update(display_name="Ada Lovelace")
    response = admin_client.get(reverse(CHANGELIST))
    assert response.status_code == 200
    html = body(response)
    assert re.search(
        r'class="paubox-badge paubox-badge--soft_bounced" title="[^"]+">Soft bounced<', html
    )
    change = reverse("admin:django_paubox_message_change", args=[m.pk])
    assert re.search(
        rf'<a href="{change}[^"]*"><span class="paubox-subject"[^>]*>Your lab results<', html
    )
    # Rows are named by their subject, not a UUID (which only labels the row's checkbox, from
    # Django 5.0 on; Django 4.2's checkbox has no label).
    if django.VERSION >= (5, 0):
        assert (
            html.count(m.tracking_id) == 1
            and f'aria-label="Select this object for an action - {m.tracking_id}"' in html
        )
    else:
        assert m.tracking_id not in html
    assert "Ada Lovelace" in html and "a@clinic.example" in html and "+2 more" in html
    assert reverse(DASHBOARD) in html
    assert "django_paubox/admin.css" in html
    assert PHI not in html


def test_first_opened_column(admin_client: Client):
    opened = timezone.now() - datetime.timedelta(minutes=5)
    make_message(tracking_id="opened-one", opened_at=opened)
    make_message(tracking_id="never-opened")
    response = admin_client.get(reverse(CHANGELIST))
    rows = {m.tracking_id: m for m in response.context["cl"].result_list}
    assert rows["opened-one"].first_opened_at == opened
    assert rows["opened-one"].opened_count == 1
    assert rows["never-opened"].first_opened_at is None
    assert rows["never-opened"].opened_count == 0


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"status__exact": "delivered"}, {"delivered-1"}),
        ({"status__exact": "hard_bounced"}, {"bounced-1"}),
        ({"state__exact": "failed"}, {"failed-1"}),
        ({"sender_domain": "other.example"}, {"other-1"}),
    ],
)
def test_filters(admin_client: Client, query: dict[str, str], expected: set[str]):
    make_message(tracking_id="delivered-1", status=Status.DELIVERED)
    make_message(tracking_id="bounced-1", status=Status.HARD_BOUNCED)
    make_message(tracking_id="failed-1", status=Status.FAILED, state=Message.State.FAILED)
    make_message(tracking_id="other-1", status=Status.SENT, from_email="x@other.example")
    response = admin_client.get(reverse(CHANGELIST), query)
    assert response.status_code == 200
    assert listed_tracking_ids(response) == expected


def test_date_filter(admin_client: Client):
    now = timezone.now()
    make_message(tracking_id="recent", created_at=now - datetime.timedelta(days=1))
    make_message(tracking_id="old", created_at=now - datetime.timedelta(days=40))
    midnight = timezone.localtime(now).replace(hour=0, minute=0, second=0, microsecond=0)
    since = str(midnight - datetime.timedelta(days=7))  # what the filter's own links send
    response = admin_client.get(reverse(CHANGELIST), {"created_at__gte": since})
    assert listed_tracking_ids(response) == {"recent"}


def test_status_filter_lists_every_desk_word_and_no_state_filter(admin_client: Client):
    make_message()
    html = body(admin_client.get(reverse(CHANGELIST)))
    for key in DESK_STATUSES:
        assert f"desk_status={key}" in html, key
    assert "state__exact" not in html and "status__exact" not in html


def test_desk_status_filter(admin_client: Client):
    now = timezone.now()
    make_message(tracking_id="delivered", status=Status.DELIVERED)
    make_message(tracking_id="opened", status=Status.DELIVERED, opened_at=now)
    make_message(tracking_id="bounced-opened", status=Status.HARD_BOUNCED, opened_at=now)
    make_message(tracking_id="processing", status=Status.PROCESSING)
    make_message(tracking_id="sent", status=Status.SENT)
    make_message(tracking_id=None, status=Status.QUEUED, state=Message.State.QUEUED)
    make_message(tracking_id=None, status=Status.FAILED, state=Message.State.FAILED)
    pending = make_message(tracking_id="scheduled", status=Status.QUEUED)
    due = make_message(tracking_id="due", status=Status.QUEUED)
    cancelled = make_message(tracking_id="cancelled", status=Status.FAILED)
    Message.objects.filter(pk=pending.pk).update(scheduled_at=now + datetime.timedelta(hours=3))
    Message.objects.filter(pk=due.pk).update(scheduled_at=now - datetime.timedelta(hours=3))
    Message.objects.filter(pk=cancelled.pk).update(
        state=Message.State.CANCELLED, scheduled_at=now + datetime.timedelta(hours=3)
    )
    expected = {
        "queued": {"None"},
        "scheduled": {"scheduled"},
        "sent": {"sent", "due"},
        "processing": {"processing"},
        "delivered": {"delivered"},
        "opened": {"opened"},
        "hard_bounced": {"bounced-opened"},
        "failed": {"None"},
        "cancelled": {"cancelled"},
        "soft_bounced": set(),
    }
    for key, ids in expected.items():
        response = admin_client.get(reverse(CHANGELIST), {"desk_status": key})
        assert listed_tracking_ids(response) == ids, key
    # Each row's badge says the same word as the filter that lists it.
    html = body(admin_client.get(reverse(CHANGELIST), {"desk_status": "scheduled"}))
    assert 'paubox-badge--scheduled"' in html


def test_one_status_column_says_opened_and_when(admin_client: Client):
    opened = timezone.now() - datetime.timedelta(minutes=5)
    make_message(tracking_id="one", opened_at=opened)
    three = make_message(
        tracking_id="three",
        recipients=["a@x.example", "b@x.example", "c@x.example"],
        status=Status.HARD_BOUNCED,
    )
    Delivery.objects.filter(message=three, recipient="a@x.example").update(opened_at=opened)
    html = body(admin_client.get(reverse(CHANGELIST)))
    when = timezone.localtime(opened)
    assert re.search(
        r'paubox-badge--opened" title="[^"]+">Opened</span><span class="paubox-opened">', html
    )
    assert f"{when:%H:%M:%S} UTC" in html  # the exact time (with seconds, zone) in the tooltip
    # A bounce stays the badge; the open is said beside it.
    assert 'paubox-badge--hard_bounced"' in html
    assert re.search(
        r'class="paubox-opened">opened <span[^>]*>[^<]+</span>'
        r'<span class="paubox-muted"> \(1 of 3\)',
        html,
    )
    assert ">First opened<" not in html  # one column, not two


def test_search_finds_a_patient_by_display_name(admin_client: Client, settings):
    grace = make_message(tracking_id="t-1", recipients=["grace@example.com", "x@example.com"])
    make_message(tracking_id="t-other", recipients=["alan@example.com"])
    Delivery.objects.filter(recipient="grace@example.com").update(display_name="Grace Hopper")
    url = reverse(CHANGELIST)
    for term in ("Grace", "grace hopper", "HOPPER", "grace@"):
        response = admin_client.get(url, {"q": term})
        assert [m.pk for m in response.context["cl"].result_list] == [grace.pk], term
    assert listed_tracking_ids(admin_client.get(url, {"q": "Grace Turing"})) == set()
    deliveries = reverse("admin:django_paubox_delivery_changelist")
    listed = admin_client.get(deliveries, {"q": "grace"}).context["cl"].result_list
    assert [d.recipient for d in listed] == ["grace@example.com"]


def test_a_search_scans_once_and_the_page_looks_its_matches_up_by_id(admin_client: Client):
    """A name matches few messages: one scan finds their ids, and the count and the rows use
    them; search results come without the date bar (two more queries over the matches)."""
    grace = make_message(tracking_id="t-1", recipients=["grace@example.com"])
    make_message(tracking_id="t-2", recipients=["alan@example.com"])
    Delivery.objects.filter(recipient="grace@example.com").update(display_name="Grace Hopper")
    with CaptureQueriesContext(connection) as ctx:
        response = admin_client.get(reverse(CHANGELIST), {"q": "hopper"})
    assert [m.pk for m in response.context["cl"].result_list] == [grace.pk]
    scans = [q["sql"] for q in ctx.captured_queries if "LIKE" in q["sql"].upper()]
    assert len(scans) == 1, scans
    assert response.context["cl"].date_hierarchy is None
    assert 'class="toplinks"' not in response.content.decode()  # Django's date bar
    browsing = admin_client.get(reverse(CHANGELIST))
    assert browsing.context["cl"].date_hierarchy == "created_at"
    assert 'class="toplinks"' in browsing.content.decode()


def test_a_search_matching_many_messages_lists_them_all(admin_client: Client, monkeypatch):
    """Past SEARCH_IDS_AT_MOST matches the word stays a subquery: nothing is cut off."""
    from django_paubox.admin import messages as message_admin

    monkeypatch.setattr(message_admin, "SEARCH_IDS_AT_MOST", 2)
    for n in range(4):
        make_message(tracking_id=f"t-{n}", recipients=[f"p{n}@clinic.example"])
    make_message(tracking_id="t-other", recipients=["p9@lab.example"])
    url = reverse(CHANGELIST)
    assert listed_tracking_ids(admin_client.get(url, {"q": "clinic"})) == {
        "t-0",
        "t-1",
        "t-2",
        "t-3",
    }
    # Two words: one resolved to ids (p2 matches one message), one a subquery (clinic).
    assert listed_tracking_ids(admin_client.get(url, {"q": "clinic p2@"})) == {"t-2"}


def test_sender_domain_filter_lists_each_domain_once_and_filters(admin_client: Client):
    from django_paubox.records import sql

    for sender in ("a@b-clinic.example", "b@b-clinic.example", "c@a-lab.example"):
        make_message(from_email=sender, tracking_id=f"t-{sender}")
    assert sql.sender_domains() == ["a-lab.example", "b-clinic.example"]
    response = admin_client.get(reverse(CHANGELIST))
    html = response.content.decode()
    assert html.count("?sender_domain=a-lab.example") == 1  # one choice per domain
    assert html.count("?sender_domain=b-clinic.example") == 1
    # Django's own field filter used the same parameter: its links still work.
    listed = admin_client.get(reverse(CHANGELIST), {"sender_domain": "a-lab.example"})
    assert listed_tracking_ids(listed) == {"t-c@a-lab.example"}


def test_search_by_recipient_tracking_id_and_subject(admin_client: Client):
    make_message(
        tracking_id="t-patient",
        recipients=["jane.doe@clinic.example", "nurse@clinic.example"],
        subject="Lab results ready",
    )
    make_message(tracking_id="t-other", recipients=["someone@else.example"])
    url = reverse(CHANGELIST)

    response = admin_client.get(url, {"q": "jane.doe@clinic.example"})
    assert listed_tracking_ids(response) == {"t-patient"}
    # Two deliveries match "clinic.example": the message is still listed once.
    response = admin_client.get(url, {"q": "clinic.example"})
    assert [m.tracking_id for m in response.context["cl"].result_list] == ["t-patient"]
    assert listed_tracking_ids(admin_client.get(url, {"q": "t-other"})) == {"t-other"}
    assert listed_tracking_ids(admin_client.get(url, {"q": "lab results"})) == {"t-patient"}
    assert listed_tracking_ids(admin_client.get(url, {"q": "nobody@nowhere"})) == set()


def test_a_whole_address_is_looked_up_exactly_through_the_index(admin_client: Client):
    make_message(tracking_id="t-jane", recipients=["jane@clinic.example"])
    make_message(tracking_id="t-mary", recipients=["mary.jane@clinic.example"])
    url = reverse(CHANGELIST)
    with CaptureQueriesContext(connection) as queries:
        response = admin_client.get(url, {"q": " Jane@Clinic.example "})
    assert listed_tracking_ids(response) == {"t-jane"}  # not mary.jane: exact, any case
    # No leading-wildcard LIKE: that is the scan over every delivery this lookup avoids.
    assert not any("LIKE '%" in q["sql"].upper() for q in queries.captured_queries)
    # Part of an address still finds both, the usual way.
    assert listed_tracking_ids(admin_client.get(url, {"q": "jane@"})) == {"t-jane", "t-mary"}


# --- The message page -----------------------------------------------------------------------------


def test_message_page_shows_deliveries_and_events_never_the_payload(admin_client: Client):
    delivered = timezone.now() - datetime.timedelta(hours=2)
    m = make_message(
        recipients=["jane@clinic.example", "bob@clinic.example"],
        delivery_statuses=[Status.DELIVERED, Status.HARD_BOUNCED],
        payload={"message": {"content": {"text/plain": PHI, "text/html": f"<p>{PHI}</p>"}}},
    )
    Delivery.objects.filter(message=m, recipient="jane@clinic.example").update(
        via_secure_portal=True,
        raw_status="delivered via secure portal",
        delivered_at=delivered,
        opened_at=delivered + datetime.timedelta(minutes=3),
        total_opens=4,
        distinct_opens=2,
        total_click_count=3,
        clicks_per_link=[{"click_count": 3, "target_url": "https://portal.example/<x>"}],
    )
    WebhookEvent.objects.create(
        event_name="api_mail_log_permanent_failure",
        dedupe_key="dk-page",
        source_tracking_id=m.tracking_id,
        message=m,
        recipient="bob@clinic.example",
        payload={"event_name": "api_mail_log_permanent_failure", "payload": {"subject": PHI}},
    )
    response = admin_client.get(reverse("admin:django_paubox_message_change", args=[m.pk]))
    assert response.status_code == 200
    html = body(response)
    assert "jane@clinic.example" in html and "bob@clinic.example" in html
    assert "delivered via secure portal" in html
    assert re.search(r'paubox-badge--hard_bounced" title="[^"]+">Hard bounced<', html)
    assert re.search(r'paubox-badge--opened" title="[^"]+">Opened<', html)  # jane's delivery
    assert "4 opens (2 distinct), 3 clicks" in html
    assert "https://portal.example/&lt;x&gt;" in html  # escaped, and not a live link
    assert 'href="https://portal.example' not in html
    event = WebhookEvent.objects.get()
    event_url = reverse("admin:django_paubox_webhookevent_change", args=[event.pk])
    assert (
        f'<a href="{event_url}"><span class="paubox-event">Hard bounced (permanent failure)</span>'
        ' <code class="paubox-raw">api_mail_log_permanent_failure</code></a>'
    ) in html
    assert "Deliveries" in html and "Deliverys" not in html
    assert "Yes (it can be resent; it is never shown here)" in html
    assert PHI not in html
    # Read-only: no save buttons, no form inputs for the message or its inlines.
    assert 'name="_save"' not in html
    assert 'name="deliveries-0-recipient"' not in html
    assert 'name="deliveries-MAX_NUM_FORMS" value="0"' in html
    assert 'name="webhook_events-MAX_NUM_FORMS" value="0"' in html


def test_message_page_shows_the_error_only_when_there_is_one(admin_client: Client):
    failed = make_message(
        status=Status.FAILED, state=Message.State.FAILED, tracking_id=None, payload=None
    )
    Message.objects.filter(pk=failed.pk).update(
        error="Paubox refused the message: 422 unverified from domain", error_status=422
    )
    ok = make_message()
    url = "admin:django_paubox_message_change"
    html = body(admin_client.get(reverse(url, args=[failed.pk])))
    assert "422 unverified from domain" in html
    assert ">Error</h2>" in html
    assert ">Error</h2>" not in body(admin_client.get(reverse(url, args=[ok.pk])))


def test_detail_page_query_count_does_not_grow_with_deliveries(admin_client: Client):
    few = make_message(recipients=["a@x.example"])
    many = make_message(recipients=[f"p{i}@x.example" for i in range(60)])
    for m in (few, many):
        WebhookEvent.objects.bulk_create(
            WebhookEvent(
                event_name="api_mail_log_delivered",
                dedupe_key=f"dk-{m.pk}-{i}",
                message=m,
                payload={},
            )
            for i in range(1 if m is few else 60)
        )
    url = "admin:django_paubox_message_change"
    admin_client.get(reverse(url, args=[few.pk]))  # warm the session
    assert count_queries(admin_client, reverse(url, args=[few.pk])) == count_queries(
        admin_client, reverse(url, args=[many.pk])
    )


def test_messages_cannot_be_added_changed_or_deleted(admin_client: Client):
    m = make_message()
    assert admin_client.get(reverse("admin:django_paubox_message_add")).status_code == 403
    change = reverse("admin:django_paubox_message_change", args=[m.pk])
    response = admin_client.post(change, {"subject": "changed"})
    assert response.status_code == 403
    m.refresh_from_db()
    assert m.subject == "Your appointment"
    # The record of what was sent to whom: purge deletes it, never a person (a superuser here).
    delete = reverse("admin:django_paubox_message_delete", args=[m.pk])
    assert admin_client.get(delete).status_code == 403
    assert admin_client.post(delete, {"post": "yes"}).status_code == 403
    assert "/delete/" not in body(admin_client.get(change))
    assert Message.objects.filter(pk=m.pk).exists()
    assert Delivery.objects.filter(message_id=m.pk).exists()


@pytest.mark.parametrize("model", ["message", "delivery", "webhookevent"])
def test_no_delete_action_or_page_for_records(admin_client: Client, model: str):
    m = make_message()
    event = WebhookEvent.objects.create(event_name="x", dedupe_key="dk-del", message=m, payload={})
    pk = {"message": m.pk, "delivery": m.deliveries.get().pk, "webhookevent": event.pk}[model]
    response = admin_client.get(reverse(f"admin:django_paubox_{model}_changelist"))
    form = response.context["action_form"]
    assert form is None or "delete_selected" not in dict(form.fields["action"].choices)
    url = reverse(f"admin:django_paubox_{model}_delete", args=[pk])
    assert admin_client.get(url).status_code == 403
    data = {"action": "delete_selected", "_selected_action": [pk], "post": "yes"}
    admin_client.post(reverse(f"admin:django_paubox_{model}_changelist"), data)
    assert (Message.objects.count(), Delivery.objects.count(), WebhookEvent.objects.count()) == (
        1,
        1,
        1,
    )


def test_message_page_heading_is_the_subject_and_times_have_seconds_and_zone(
    admin_client: Client, settings
):
    sent = timezone.now().replace(microsecond=0) - datetime.timedelta(minutes=3)
    m = make_message(subject="Your lab results", created_at=sent)
    html = body(admin_client.get(reverse("admin:django_paubox_message_change", args=[m.pk])))
    assert "<h2>Your lab results</h2>" in html
    assert m.tracking_id in html  # still on the page
    assert f"{sent:%H:%M:%S} UTC" in html
    settings.TIME_ZONE = "America/New_York"
    html = body(admin_client.get(reverse("admin:django_paubox_message_change", args=[m.pk])))
    local = timezone.localtime(sent, timezone.get_fixed_timezone(0)).astimezone(
        __import__("zoneinfo").ZoneInfo("America/New_York")
    )
    assert f"{local:%H:%M:%S} {local:%Z}" in html
    nameless = make_message(subject="", recipients=["grace@example.com", "b@example.com"])
    Delivery.objects.filter(recipient="grace@example.com").update(display_name="Grace Hopper")
    url = reverse("admin:django_paubox_message_change", args=[nameless.pk])
    assert "<h2>(no subject) to Grace Hopper and 1 more</h2>" in body(admin_client.get(url))


# --- Deliveries and webhook events ----------------------------------------------------------------


def test_delivery_admin_is_read_only_and_links_to_the_message(admin_client: Client):
    m = make_message(recipients=["jane@clinic.example"])
    d = m.deliveries.get()
    response = admin_client.get(reverse("admin:django_paubox_delivery_changelist"))
    assert response.status_code == 200
    html = body(response)
    assert "jane@clinic.example" in html
    assert reverse("admin:django_paubox_message_change", args=[m.pk]) in html
    detail = admin_client.get(reverse("admin:django_paubox_delivery_change", args=[d.pk]))
    assert detail.status_code == 200
    assert 'name="_save"' not in body(detail)
    assert admin_client.get(reverse("admin:django_paubox_delivery_add")).status_code == 403
    assert (
        admin_client.post(
            reverse("admin:django_paubox_delivery_change", args=[d.pk]), {"recipient": "x@y.z"}
        ).status_code
        == 403
    )


def test_webhook_event_payload_is_pretty_escaped_json(admin_client: Client):
    m = make_message()
    event = WebhookEvent.objects.create(
        event_name="api_mail_log_delivered",
        dedupe_key="dk-json",
        source_tracking_id=m.tracking_id,
        message=m,
        payload={"event_name": "api_mail_log_delivered", "payload": {"from": "<script>x</script>"}},
    )
    orphan = WebhookEvent.objects.create(
        event_name="api_mail_log_opened",
        dedupe_key="dk-orphan",
        source_tracking_id="not-ours",
        payload={},
    )
    url = reverse("admin:django_paubox_webhookevent_change", args=[event.pk])
    html = body(admin_client.get(url))
    assert '<pre class="paubox-json">' in html
    assert "&lt;script&gt;x&lt;/script&gt;" in html and "<script>x</script>" not in html
    assert "\n  &quot;event_name&quot;: &quot;api_mail_log_delivered&quot;," in html
    assert 'name="_save"' not in html
    changelist = reverse("admin:django_paubox_webhookevent_changelist")
    listed = admin_client.get(changelist, {"linked": "no"}).context["cl"].result_list
    assert [e.pk for e in listed] == [orphan.pk]
    listed = admin_client.get(changelist, {"linked": "yes"}).context["cl"].result_list
    assert [e.pk for e in listed] == [event.pk]
    assert admin_client.get(reverse("admin:django_paubox_webhookevent_add")).status_code == 403


def test_webhook_subjects_hidden_when_subjects_are_not_stored(admin_client: Client, settings):
    event = WebhookEvent.objects.create(
        event_name="api_mail_log_delivered",
        dedupe_key="dk-subj",
        payload={"payload": {"subject": "Biopsy results"}},
    )
    url = reverse("admin:django_paubox_webhookevent_change", args=[event.pk])
    assert "Biopsy results" in body(admin_client.get(url))
    settings.PAUBOX = {**settings.PAUBOX, "STORE_SUBJECT": False}
    html = body(admin_client.get(url))
    assert "Biopsy results" not in html
    assert "STORE_SUBJECT is off" in html


# --- Query counts ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url_name", "query"),
    [
        (CHANGELIST, {}),
        (CHANGELIST, {"q": "example"}),
        (CHANGELIST, {"status__exact": "delivered", "sender_domain": "d1.example"}),
        pytest.param(
            CHANGELIST,
            {"_facets": "1"},
            marks=pytest.mark.skipif(django.VERSION < (5, 0), reason="facets are Django 5.0+"),
        ),
        ("admin:django_paubox_delivery_changelist", {}),
        ("admin:django_paubox_delivery_changelist", {"q": "example", "status__exact": "sent"}),
        ("admin:django_paubox_webhookevent_changelist", {}),
        ("admin:django_paubox_webhookevent_changelist", {"q": "bulk", "linked": "yes"}),
        (DASHBOARD, {}),
    ],
)
def test_query_count_is_the_same_for_10_and_500_rows(
    admin_client: Client, url_name: str, query: dict[str, str]
):
    url = reverse(url_name)
    if query:
        url += "?" + "&".join(f"{k}={v}" for k, v in query.items())
    bulk_messages(10)
    admin_client.get(url)  # warm the session and the content types
    small = count_queries(admin_client, url)
    bulk_messages(490)
    assert Message.objects.count() == 500
    large = count_queries(admin_client, url)
    assert small == large
    if url_name == "admin:django_paubox_message_changelist" and "_facets" not in query:
        # Issue #14's budget, the session's and the user's lookups included (facets, which a
        # user asks for, count each filter's choices on top).
        assert large <= 8


def test_changelist_never_loads_payloads(admin_client: Client):
    bulk_messages(20)
    with CaptureQueriesContext(connection) as ctx:
        admin_client.get(reverse(CHANGELIST))
    message_selects = [
        q["sql"] for q in ctx.captured_queries if 'FROM "django_paubox_message"' in q["sql"]
    ]
    assert message_selects
    for sql in message_selects:
        assert '"django_paubox_message"."payload" FROM' not in sql
        assert not re.search(r'"django_paubox_message"\."payload",', sql)


# --- Actions --------------------------------------------------------------------------------------


def post_action(client: Client, action: str, messages: Sequence[Message], **extra: str) -> Any:
    data = {"action": action, "_selected_action": [m.pk for m in messages], **extra}
    return client.post(reverse(CHANGELIST), data, follow=True)


def flash(response: Any) -> list[str]:
    return [str(m) for m in response.context["messages"]]


@pytest.fixture
def store_content(settings) -> None:
    settings.PAUBOX = {**settings.PAUBOX, "STORE_CONTENT": True}


def test_resend_is_not_offered_without_store_content(admin_client: Client, settings):
    make_message(payload=None)
    choices = dict(
        admin_client.get(reverse(CHANGELIST)).context["action_form"].fields["action"].choices
    )
    assert "resend" not in choices and "refresh_receipts" in choices
    settings.PAUBOX = {**settings.PAUBOX, "STORE_CONTENT": True}
    choices = dict(
        admin_client.get(reverse(CHANGELIST)).context["action_form"].fields["action"].choices
    )
    assert "resend" in choices


def test_schedule_actions_offered_only_with_a_scheduled_send_to_come(admin_client: Client):
    m = make_message(status=Status.QUEUED)
    url = reverse(CHANGELIST)
    choices = dict(admin_client.get(url).context["action_form"].fields["action"].choices)
    assert "cancel_scheduled" not in choices and "reschedule" not in choices
    Message.objects.filter(pk=m.pk).update(scheduled_at=timezone.now() + datetime.timedelta(days=1))
    choices = dict(admin_client.get(url).context["action_form"].fields["action"].choices)
    assert "cancel_scheduled" in choices and "reschedule" in choices


@pytest.mark.usefixtures("store_content")
def test_resend_refused_without_stored_content(admin_client: Client):
    m = make_message(payload=None)
    response = post_action(admin_client, "resend", [m])
    assert response.status_code == 200
    (text,) = flash(response)
    assert "Cannot resend 1 message" in text
    assert "content was not stored" in text and "STORE_CONTENT" in text and "HIPAA" in text
    assert Message.objects.count() == 1


@pytest.mark.usefixtures("store_content")
def test_resend_refused_while_still_sending(admin_client: Client):
    m = make_message(
        state=Message.State.QUEUED, status=Status.QUEUED, payload={"message": {}}, tracking_id=None
    )
    (text,) = flash(post_action(admin_client, "resend", [m]))
    assert "still queued or being sent" in text
    assert Message.objects.count() == 1


@pytest.mark.usefixtures("store_content")
def test_resend_asks_for_confirmation_and_explains_refusals(admin_client: Client):
    stored = make_message(payload={"message": {"content": {"text/plain": PHI}}})
    not_stored = make_message(payload=None)
    response = post_action(admin_client, "resend", [stored, not_stored])
    html = body(response)
    assert "Yes, resend 1 message" in html
    assert stored.tracking_id in html and not_stored.tracking_id in html
    assert "content was not stored" in html
    assert PHI not in html
    assert f'name="_selected_action" value="{stored.pk}"' in html
    assert f'name="_selected_action" value="{not_stored.pk}"' not in html
    assert Message.objects.count() == 2  # nothing sent yet


def test_resend_needs_the_add_permission(client: Client):
    user = User.objects.create_user("support", password="pw", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_message"))
    client.force_login(user)
    response = client.get(reverse(CHANGELIST))
    assert response.status_code == 200
    choices = dict(response.context["action_form"].fields["action"].choices)
    assert "refresh_receipts" in choices
    assert "resend" not in choices
    assert "delete_selected" not in choices


def test_refresh_skips_messages_paubox_never_accepted(admin_client: Client):
    m = make_message(state=Message.State.FAILED, status=Status.FAILED, tracking_id=None)
    (text,) = flash(post_action(admin_client, "refresh_receipts", [m]))
    assert "never accepted" in text


@pytest.fixture
def sandbox(paubox_sandbox: Any, settings) -> Any:
    """The sandbox fixture (it points ``settings.PAUBOX`` at itself), with quick outcomes."""
    use_backend(settings, PLAIN)
    paubox_sandbox.processing_seconds = 0.05
    return paubox_sandbox


def send_one(to: str) -> Message:
    django_mail.send_mail("Appointment", "See you on Monday.", "care@hospital.example", [to])
    return Message.objects.latest("id")


@pytest.mark.django_db(transaction=True)
def test_display_names_are_recorded_with_the_subject(admin_client: Client, sandbox: Any, settings):
    django_mail.send_mail(
        "Appointment",
        "See you on Monday.",
        "care@hospital.example",
        ["Grace Hopper <Grace@Example.com>", "plain@example.com"],
    )
    names = dict(Delivery.objects.values_list("recipient", "display_name"))
    assert names == {"grace@example.com": "Grace Hopper", "plain@example.com": ""}
    html = body(admin_client.get(reverse(CHANGELIST), {"q": "Grace"}))
    assert "Grace Hopper" in html and "grace@example.com" in html
    # Without STORE_SUBJECT the name is not kept either (it is PHI-adjacent, like the subject).
    Delivery.objects.all().delete()
    settings.PAUBOX = {**settings.PAUBOX, "STORE_SUBJECT": False}
    django_mail.send_mail("Results", "Ready.", "care@hospital.example", ["Ada <ada@example.com>"])
    assert list(Delivery.objects.values_list("recipient", "display_name")) == [
        ("ada@example.com", "")
    ]
    assert Message.objects.latest("id").subject == ""


@pytest.mark.django_db(transaction=True)
def test_refresh_receipts_action_against_the_sandbox(admin_client: Client, sandbox: Any):
    delivered = send_one("jane@clinic.example")
    bounced = send_one("bounce@clinic.example")
    assert delivered.tracking_id and bounced.tracking_id
    deadline = time.monotonic() + 10
    while True:
        time.sleep(0.2)
        response = post_action(admin_client, "refresh_receipts", [delivered, bounced])
        statuses = dict(Delivery.objects.values_list("recipient", "status"))
        if (
            statuses
            == {
                "jane@clinic.example": Status.DELIVERED,
                "bounce@clinic.example": Status.HARD_BOUNCED,
            }
            or time.monotonic() > deadline
        ):
            break
    assert statuses["jane@clinic.example"] == Status.DELIVERED
    assert statuses["bounce@clinic.example"] == Status.HARD_BOUNCED
    assert any("Asked Paubox about 2 messages" in text for text in flash(response))
    html = body(admin_client.get(reverse(CHANGELIST)))
    assert re.search(r'paubox-badge--hard_bounced" title="[^"]+">Hard bounced<', html)
    # Both are final now: asking again changes nothing a person can see, and says so.
    (text,) = flash(post_action(admin_client, "refresh_receipts", [delivered, bounced]))
    assert "nothing changed" in text, text


@pytest.mark.django_db(transaction=True)
def test_resend_with_stored_content_against_the_sandbox(
    admin_client: Client, sandbox: Any, settings
):
    settings.PAUBOX = {**settings.PAUBOX, "STORE_CONTENT": True}
    original = send_one("Jane Doe <jane@clinic.example>")
    assert len(sandbox.messages) == 1
    # The action first asks; the confirmation page's own form then does it.
    page = body(post_action(admin_client, "resend", [original]))
    form = page.split('<form method="post">', 1)[1].split("</form>", 1)[0]
    fields: dict[str, list[str]] = {}
    for name, value in re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', form):
        fields.setdefault(name, []).append(value)
    assert fields["_selected_action"] == [str(original.pk)]
    assert len(sandbox.messages) == 1  # nothing sent by the question
    response = admin_client.post(reverse(CHANGELIST), fields, follow=True)
    (text,) = flash(response)
    assert "Resent 1 message" in text
    new = Message.objects.exclude(pk=original.pk).get()
    assert new.tracking_id and new.tracking_id != original.tracking_id
    assert reverse("admin:django_paubox_message_change", args=[new.pk]) in text
    assert list(new.deliveries.values_list("recipient", "display_name")) == [
        ("jane@clinic.example", "Jane Doe")
    ]
    assert len(sandbox.messages) == 2


# --- The dashboard --------------------------------------------------------------------------------


def test_dashboard_numbers_for_known_data(admin_client: Client, settings):
    settings.PAUBOX = {**settings.PAUBOX, "MONTHLY_LIMIT": 10}
    now = timezone.now()
    today = timezone.localdate()
    midday = timezone.make_aware(datetime.datetime.combine(today, datetime.time(12)))
    if midday > now:
        midday = now
    three_days_ago = midday - datetime.timedelta(days=3)
    # Today: 2 delivered messages (3 recipients: 2 opened, 1 via portal), 1 hard bounce.
    make_message(recipients=["a@x.example"], created_at=midday, opened_at=midday)
    m = make_message(recipients=["b@x.example", "c@x.example"], created_at=midday, opened_at=midday)
    Delivery.objects.filter(message=m, recipient="c@x.example").update(
        opened_at=None, via_secure_portal=True
    )
    make_message(status=Status.HARD_BOUNCED, recipients=["d@x.example"], created_at=midday)
    # Three days ago: a soft bounce, a message still processing, one that failed to send.
    make_message(status=Status.SOFT_BOUNCED, recipients=["e@x.example"], created_at=three_days_ago)
    make_message(status=Status.PROCESSING, recipients=["f@x.example"], created_at=three_days_ago)
    make_message(
        status=Status.FAILED,
        state=Message.State.FAILED,
        recipients=["g@x.example"],
        created_at=three_days_ago,
        tracking_id=None,
    )
    # Outside the window: ignored by the chart and the rates.
    make_message(recipients=["old@x.example"], created_at=now - datetime.timedelta(days=45))

    data = dashboard.build_dashboard()
    assert len(data.daily) == 30
    assert data.daily[-1].day == today
    assert data.daily[-1].counts == {
        "delivered": 2,
        "in_progress": 0,
        "soft_bounced": 0,
        "hard_bounced": 1,
        "failed": 0,
    }
    assert data.daily[-4].counts == {
        "delivered": 0,
        "in_progress": 1,
        "soft_bounced": 1,
        "hard_bounced": 0,
        "failed": 1,
    }
    assert sum(d.total for d in data.daily) == data.messages == 6
    r = data.rates
    assert (r.recipients, r.delivered, r.bounced, r.failed, r.in_progress) == (7, 3, 2, 1, 1)
    assert (r.opened, r.reached, r.via_secure_portal) == (2, 3, 1)
    assert r.delivery_rate == pytest.approx(3 / 7)
    assert r.bounce_rate == pytest.approx(2 / 7)
    assert r.open_rate == pytest.approx(2 / 3)
    # Usage counts messages Paubox accepted since the first of the month.
    expected_usage = Message.objects.filter(
        state=Message.State.SENT, sent_at__gte=dashboard.month_start()
    ).count()
    assert data.usage.used == expected_usage
    assert data.usage.limit == 10

    response = admin_client.get(reverse(DASHBOARD))
    assert response.status_code == 200
    html = body(response)
    assert "42.9%" in html  # delivery rate, 3 of 7
    assert "28.6%" in html  # bounce rate, 2 of 7
    assert "66.7%" in html  # open rate, 2 of 3
    assert f'<strong class="paubox-figure-inline">{expected_usage}</strong> of 10' in html
    assert f'data-day="{today.isoformat()}" data-total="3"' in html
    assert "<svg" in html and "<script" not in html.split("<svg", 1)[1].split("</svg>", 1)[0]
    assert "cdn" not in html.lower()


def test_usage_counts_this_month_only_and_flags_overage():
    now = timezone.now()
    start = dashboard.month_start(now)
    for _ in range(3):
        make_message(sent_at=start + datetime.timedelta(seconds=1), created_at=start)
    make_message(sent_at=start - datetime.timedelta(seconds=1), created_at=start)
    make_message(state=Message.State.FAILED, status=Status.FAILED, tracking_id=None)
    usage = dashboard.monthly_usage(dashboard.get_settings(monthly_limit=2), now=now)
    assert usage.used == 3
    assert (usage.over, usage.level, usage.bar_percent) == (1, "over", 100)
    assert dashboard.monthly_usage(dashboard.get_settings(monthly_limit=300), now=now).level == "ok"


def test_dashboard_with_no_data(admin_client: Client):
    html = body(admin_client.get(reverse(DASHBOARD)))
    assert "No messages in the last 30 days" in html
    assert "—" in html  # rates with nothing to divide by


def test_dashboard_needs_view_permission(client: Client):
    user = User.objects.create_user("nobody", password="pw", is_staff=True)
    client.force_login(user)
    assert client.get(reverse(DASHBOARD)).status_code == 403
    user.user_permissions.add(Permission.objects.get(codename="view_message"))
    user = User.objects.get(pk=user.pk)
    client.force_login(user)
    assert client.get(reverse(DASHBOARD)).status_code == 200


def test_dashboard_is_listed_on_the_admin_index_for_those_who_may_view_messages(
    client: Client,
):
    user = User.objects.create_user("desk", password="pw", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_delivery"))
    client.force_login(user)
    link = f'<a href="{reverse(DASHBOARD)}">Dashboard</a>'
    assert link not in body(client.get(reverse("admin:index")))
    user.user_permissions.add(Permission.objects.get(codename="view_message"))
    client.force_login(User.objects.get(pk=user.pk))
    index = body(client.get(reverse("admin:index")))
    section = index.split('class="app-django_paubox ', 1)[1].split("</table>", 1)[0]
    assert link in section
    # The app's own page and the nav sidebar of every admin page list it too.
    assert link in body(client.get(reverse("admin:app_list", args=["django_paubox"])))
    assert link in body(client.get(reverse(CHANGELIST)))


def test_dashboard_requires_login(client: Client):
    response = client.get(reverse(DASHBOARD))
    assert response.status_code == 302
    assert reverse("admin:login") in response["Location"]


# --- Chart geometry -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("peak", "step"), [(0, 1), (1, 1), (4, 1), (6, 2), (10, 2), (11, 5), (42, 10), (480, 100)]
)
def test_nice_step(peak: int, step: int):
    assert dashboard.nice_step(peak) == step


def test_chart_stacks_segments_to_scale():
    days = [
        dashboard.DaySends(datetime.date(2024, 1, 1) + datetime.timedelta(days=i))
        for i in range(30)
    ]
    days[5].counts.update(delivered=6, hard_bounced=2, in_progress=1)
    days[29].counts.update(failed=3)
    chart = dashboard.build_chart(days)
    assert chart.y_max == 10
    assert [t.value for t in chart.ticks] == [0, 2, 4, 6, 8, 10]
    bar = chart.bars[5]
    assert [s.outcome for s in bar.segments] == ["delivered", "in_progress", "hard_bounced"]
    assert sum(s.height for s in bar.segments) == pytest.approx(
        chart.plot_height * 9 / 10, abs=0.05
    )
    assert bar.segments[0].y + bar.segments[0].height == pytest.approx(chart.bottom_y)
    for lower, upper in zip(bar.segments, bar.segments[1:], strict=False):
        assert upper.y + upper.height == pytest.approx(lower.y, abs=0.02)
    assert chart.bars[29].show_label and chart.bars[24].show_label and not chart.bars[28].show_label
    assert all(chart.left <= b.x and b.x + b.width <= chart.right for b in chart.bars)
    assert not chart.empty
    assert dashboard.build_chart([dashboard.DaySends(datetime.date(2024, 1, 1))]).empty


def test_every_status_belongs_to_one_outcome():
    for status in Status.values:
        assert sum(status in o.statuses for o in dashboard.OUTCOMES) == 1
    assert dashboard.outcome_of("something new") == "in_progress"


def test_refresh_without_credentials_says_so(admin_client: Client, settings, monkeypatch):
    monkeypatch.delenv("PAUBOX_API_KEY", raising=False)
    settings.PAUBOX = {"API_URL": "http://127.0.0.1:9/v1/", "API_USERNAME": "u"}
    m = make_message()
    (text,) = flash(post_action(admin_client, "refresh_receipts", [m]))
    assert text.startswith("Cannot refresh receipts:")
    assert 'PAUBOX["API_KEY"] is not set' in text


def test_the_message_page_names_the_credentials_that_sent_it(admin_client):
    message = make_message()
    Message.objects.filter(pk=message.pk).update(mailer="mailer:billing")
    page = admin_client.get(reverse("admin:django_paubox_message_change", args=[message.pk]))
    assert b"mailer:billing" in page.content
