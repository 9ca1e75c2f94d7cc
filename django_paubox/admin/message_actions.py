"""What a desk person can do to messages: refresh receipts, resend, cancel or move a send."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.db.models import (
    Count,
    Min,
    QuerySet,
)
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.utils import formats, timezone
from django.utils.html import format_html, format_html_join
from django.utils.translation import ngettext

from ..conf import get_settings
from ..exceptions import PauboxConfigError, PauboxError
from ..models import Delivery, Message
from ..sending import scheduled as scheduled_sends
from ..tracking.statuses import DESK_STATUSES, desk_status
from .display import (
    admin_link,
    desk_badge,
    message_desk_key,
)

#: What the desk sees of a message: its desk word, how many opened, the first open.
Visible = tuple[str, int, Any]


def _not_pending_text(count: int) -> str:
    return ngettext(
        "%(n)d selected message is not a scheduled send still to come; it was left alone.",
        "%(n)d selected messages are not scheduled sends still to come; they were left alone.",
        count,
    ) % {"n": count}


class RescheduleForm(forms.Form):
    """The new time of a scheduled send, in the admin's current time zone."""

    scheduled_at = forms.DateTimeField(
        label="New time",
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"),
        input_formats=["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M"],
    )

    def clean_scheduled_at(self) -> Any:
        when = self.cleaned_data["scheduled_at"]
        if when <= timezone.now():
            raise forms.ValidationError("Choose a time in the future.")
        return when


# --- Messages ---------------------------------------------------------------------------------


class MessageActions(admin.ModelAdmin):
    """The actions of :class:`~.messages.MessageAdmin` (the base it adds them to)."""

    def get_actions(self, request: HttpRequest, action_location: Any = None) -> Any:
        """Resend only with ``STORE_CONTENT``: without it no message can ever be resent.

        (``action_location``: Django 6.1 adds it, and deprecates overrides without it.)"""
        if action_location is None:
            actions = super().get_actions(request)
        else:
            actions = super().get_actions(request, action_location=action_location)  # type: ignore[call-arg,unused-ignore]
        if not get_settings().store_content:
            actions.pop("resend", None)
        return actions

    def get_changelist_instance(self, request: HttpRequest) -> Any:
        changelist = super().get_changelist_instance(request)
        request._paubox_changelist = changelist  # type: ignore[attr-defined]
        return changelist

    def get_action_choices(
        self, request: HttpRequest, default_choices: Any = None, action_location: Any = None
    ) -> Any:
        """Cancel and reschedule are offered when the page lists a scheduled send still to
        come. The page's rows are read once, by the list itself (no query of their own).

        (``action_location``: Django 6.1 adds it, and deprecates overrides without it.)"""
        given = {"default_choices": default_choices, "action_location": action_location}
        kwargs = {name: value for name, value in given.items() if value is not None}
        choices = super().get_action_choices(request, **kwargs)
        changelist = getattr(request, "_paubox_changelist", None)
        if changelist is not None and not any(
            scheduled_sends.is_pending(m) for m in changelist.result_list
        ):
            choices = [c for c in choices if c[0] not in ("cancel_scheduled", "reschedule")]
        return choices

    # Actions.

    @admin.action(description="Refresh receipts now", permissions=["view"])
    def refresh_receipts(self, request: HttpRequest, queryset: QuerySet[Message]) -> None:
        """Ask Paubox for the receipts of the selected messages now, not at the next poll."""
        from ..tracking.polling import poll_receipts

        selected = list(queryset)
        sent = [m for m in selected if m.tracking_id]
        unsent = len(selected) - len(sent)
        if not sent:
            self.message_user(
                request,
                "None of the selected messages has a tracking id: Paubox never accepted them, "
                "so there is no receipt to ask for.",
                messages.WARNING,
            )
            return
        before = visible_state([m.pk for m in sent])
        try:
            summary = poll_receipts(sent, conf=get_settings())
        except PauboxConfigError as exc:
            self.message_user(request, f"Cannot refresh receipts: {exc}", messages.ERROR)
            return
        except PauboxError as exc:
            self.message_user(request, f"Refreshing receipts failed: {exc}", messages.ERROR)
            return
        for reason in dict.fromkeys(summary.unresolved.values()):
            self.message_user(request, f"Cannot refresh receipts: {reason}", messages.ERROR)
        if summary.unresolved and summary.errors == summary.checked:
            return  # none could be asked about: the reasons say it all
        after = visible_state([m.pk for m in sent])
        parts = [
            ngettext(
                "Asked Paubox about %(n)d message: ",
                "Asked Paubox about %(n)d messages: ",
                len(sent),
            )
            % {"n": len(sent)},
            describe_changes(before, after),
        ]
        if summary.not_found_yet:
            parts.append(
                ngettext(
                    " %(n)d is not known to Paubox yet (asked again later).",
                    " %(n)d are not known to Paubox yet (asked again later).",
                    summary.not_found_yet,
                )
                % {"n": summary.not_found_yet}
            )
        if summary.errors:
            parts.append(
                ngettext(
                    " %(n)d could not be asked (see the logs).",
                    " %(n)d could not be asked (see the logs).",
                    summary.errors,
                )
                % {"n": summary.errors}
            )
        if unsent:
            parts.append(
                ngettext(
                    " %(n)d was skipped: it was never accepted by Paubox.",
                    " %(n)d were skipped: they were never accepted by Paubox.",
                    unsent,
                )
                % {"n": unsent}
            )
        level = messages.WARNING if summary.errors else messages.SUCCESS
        self.message_user(request, "".join(parts), level)

    @admin.action(description="Resend", permissions=["resend"])
    def resend(self, request: HttpRequest, queryset: QuerySet[Message]) -> HttpResponse | None:
        """Send stored messages again, after a confirmation page; say why others cannot be."""
        selected = list(queryset.order_by("pk"))
        resendable, refused = classify_for_resend(selected)
        if not resendable:
            self._report_refused(request, refused)
            return None
        if request.POST.get("post") != "yes":
            for message in resendable:  # the desk's word, as on the list
                badge = desk_badge(message_desk_key(message), raw=message.status)
                message.paubox_desk_badge = badge  # type: ignore[attr-defined]
            context = {
                **self.admin_site.each_context(request),
                "title": "Resend messages?",
                "opts": self.opts,
                "resendable": resendable,
                "refused": refused,
                "action_checkbox_name": ACTION_CHECKBOX_NAME,
                "media": self.media,
            }
            return TemplateResponse(
                request, "django_paubox/admin/resend_confirmation.html", context
            )
        self._report_refused(request, refused)
        self._resend(request, resendable)
        return None

    @admin.action(description="Cancel scheduled send", permissions=["schedule"])
    def cancel_scheduled(self, request: HttpRequest, queryset: QuerySet[Message]) -> None:
        """Ask Paubox not to send the selected scheduled messages (those still to come)."""
        selected = list(queryset.order_by("pk"))
        pending = [m for m in selected if scheduled_sends.is_pending(m)]
        skipped = len(selected) - len(pending)
        done = 0
        for message in pending:
            try:
                scheduled_sends.cancel(message)
            except PauboxError as exc:
                self.message_user(request, f"Cancelling {message} failed: {exc}", messages.ERROR)
                continue
            done += 1
        if done:
            self.message_user(
                request,
                ngettext(
                    "Cancelled %(n)d scheduled send: Paubox will not send it.",
                    "Cancelled %(n)d scheduled sends: Paubox will not send them.",
                    done,
                )
                % {"n": done},
                messages.SUCCESS,
            )
        if skipped:
            self.message_user(request, _not_pending_text(skipped), messages.WARNING)

    @admin.action(description="Reschedule", permissions=["schedule"])
    def reschedule(self, request: HttpRequest, queryset: QuerySet[Message]) -> HttpResponse | None:
        """Move the selected scheduled sends to a new time, chosen on a small form."""
        selected = list(queryset.order_by("pk"))
        pending = [m for m in selected if scheduled_sends.is_pending(m)]
        skipped = len(selected) - len(pending)
        if not pending:
            self.message_user(request, _not_pending_text(skipped), messages.WARNING)
            return None
        form = RescheduleForm(request.POST if request.POST.get("post") == "yes" else None)
        if not form.is_valid():
            context = {
                **self.admin_site.each_context(request),
                "title": "Reschedule scheduled sends",
                "opts": self.opts,
                "pending": pending,
                "skipped": skipped,
                "form": form,
                "action_checkbox_name": ACTION_CHECKBOX_NAME,
                "timezone": timezone.get_current_timezone_name(),
                "media": self.media,
            }
            return TemplateResponse(request, "django_paubox/admin/reschedule.html", context)
        when = form.cleaned_data["scheduled_at"]
        done = 0
        for message in pending:
            try:
                scheduled_sends.reschedule(message, when)
            except PauboxError as exc:
                self.message_user(request, f"Rescheduling {message} failed: {exc}", messages.ERROR)
                continue
            done += 1
        if done:
            shown = formats.date_format(timezone.localtime(when), "DATETIME_FORMAT")
            self.message_user(
                request,
                ngettext(
                    "Rescheduled %(n)d message to %(when)s.",
                    "Rescheduled %(n)d messages to %(when)s.",
                    done,
                )
                % {"n": done, "when": shown},
                messages.SUCCESS,
            )
        if skipped:
            self.message_user(request, _not_pending_text(skipped), messages.WARNING)
        return None

    def _report_refused(self, request: HttpRequest, refused: list[tuple[Message, str]]) -> None:
        for reason, group in _group_reasons(refused).items():
            names = ", ".join(str(m) for m in group[:10]) + (" …" if len(group) > 10 else "")
            self.message_user(
                request,
                ngettext(
                    "Cannot resend %(n)d message (%(names)s): %(reason)s",
                    "Cannot resend %(n)d messages (%(names)s): %(reason)s",
                    len(group),
                )
                % {"n": len(group), "names": names, "reason": reason},
                messages.WARNING,
            )

    def _resend(self, request: HttpRequest, resendable: list[Message]) -> None:
        from ..sending.dispatch import resend_stored

        done: list[Message] = []
        for old in resendable:
            # Loaded one at a time: the payload (PHI, maybe large) of a single message in memory.
            message = Message.objects.get(pk=old.pk)
            try:
                new = resend_stored(message)
            except PauboxError as exc:
                self.message_user(request, f"Resending {old} failed: {exc}", messages.ERROR)
                continue
            if new.state == Message.State.FAILED:
                self.message_user(
                    request,
                    format_html(
                        "Resending {} failed ({}): {}",
                        old,
                        admin_link(Message, new.pk, str(new)),
                        new.error,
                    ),
                    messages.ERROR,
                )
                continue
            done.append(new)
        if done:
            links = format_html_join(
                ", ", "{}", ((admin_link(Message, m.pk, str(m)),) for m in done)
            )
            self.message_user(
                request,
                format_html(
                    "{} {}",
                    ngettext("Resent %(n)d message:", "Resent %(n)d messages:", len(done))
                    % {"n": len(done)},
                    links,
                ),
                messages.SUCCESS,
            )

    # The dashboard.


RESEND_REASONS = {
    "no_content": (
        'its content was not stored. PAUBOX["STORE_CONTENT"] is off, so bodies and attachments '
        "are not kept after sending (they are PHI, for HIPAA); send it again from the "
        "application instead."
    ),
    "in_flight": "it is still queued or being sent; wait for the outcome first.",
}


def classify_for_resend(
    selected: Iterable[Message],
) -> tuple[list[Message], list[tuple[Message, str]]]:
    """Split messages into those that can be resent and those that cannot, with the reason."""
    resendable: list[Message] = []
    refused: list[tuple[Message, str]] = []
    for message in selected:
        stored = getattr(message, "has_content", None)
        if stored is None:
            stored = Message.objects.filter(pk=message.pk, payload__isnull=False).exists()
        if message.state in (Message.State.QUEUED, Message.State.SENDING):
            refused.append((message, RESEND_REASONS["in_flight"]))
        elif not stored:
            refused.append((message, RESEND_REASONS["no_content"]))
        else:
            resendable.append(message)
    return resendable, refused


def visible_state(pks: list[int]) -> dict[int, Visible]:
    """What the desk sees of each message (two queries): to tell what a refresh changed."""
    opens = {
        row["message"]: (row["n"], row["first"])
        for row in Delivery.objects.filter(message__in=pks, opened_at__isnull=False)
        .values("message")
        .annotate(n=Count("id"), first=Min("opened_at"))
    }
    now = timezone.now()
    out: dict[int, Visible] = {}
    for pk, status, state, scheduled_at in Message.objects.filter(pk__in=pks).values_list(
        "pk", "status", "state", "scheduled_at"
    ):
        count, first = opens.get(pk, (0, None))
        key = desk_status(
            status,
            state=state,
            opened=bool(count),
            scheduled_pending=bool(scheduled_at and scheduled_at > now),
        )
        out[pk] = (key, count, first)
    return out


def describe_changes(before: dict[int, Visible], after: dict[int, Visible]) -> str:
    """ "2 changed (1 now Delivered, 1 now Opened); 4 unchanged." from two snapshots: only what
    a person can see (the status word and the opens), never counters nobody shows."""
    now_shows: dict[str, int] = {}
    newly_opened = 0
    unchanged = 0
    for pk, (key, count, first) in after.items():
        old_key, old_count, old_first = before.get(pk, ("", 0, None))
        if key != old_key:
            now_shows[key] = now_shows.get(key, 0) + 1
        elif (count, first) != (old_count, old_first):
            newly_opened += 1
        else:
            unchanged += 1
    changed = sum(now_shows.values()) + newly_opened
    if not changed:
        return "nothing changed (every status and open time is as it was)."
    details = [
        f"{n} now {DESK_STATUSES.get(key, (key or 'unknown', ''))[0]}"
        for key, n in now_shows.items()
    ]
    if newly_opened:
        details.append(f"{newly_opened} with new opens")
    return f"{changed} changed ({', '.join(details)}), {unchanged} unchanged."


def _group_reasons(refused: list[tuple[Message, str]]) -> dict[str, list[Message]]:
    groups: dict[str, list[Message]] = {}
    for message, reason in refused:
        groups.setdefault(reason, []).append(message)
    return groups


# --- Deliveries and webhook events ------------------------------------------------------------
