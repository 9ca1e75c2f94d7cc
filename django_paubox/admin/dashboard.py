"""Numbers for the admin dashboard: a few aggregate queries, however many rows there are.

Each function runs one query (``GROUP BY`` day and status, or one row of filtered counts), so the
dashboard costs the same with ten messages or ten million. Chart geometry is computed here, in
plain Python, so that the template only draws rectangles: no JavaScript, no CDN (clinics often run
offline networks).
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from django.db.models import Count, Q
from django.db.models.functions import TruncDate
from django.utils import formats, timezone

from ..conf import PauboxSettings, get_settings
from ..models import Delivery, Message
from ..tracking.statuses import Status

DEFAULT_DAYS = 30


@dataclass(frozen=True)
class OutcomeGroup:
    """One series of the chart: a group of ``Message.status`` values with a colour class."""

    key: str
    label: str
    statuses: tuple[str, ...]


#: Bottom to top in each stacked bar; every Status belongs to exactly one outcome.
OUTCOMES: tuple[OutcomeGroup, ...] = (
    OutcomeGroup("delivered", "Delivered", (str(Status.DELIVERED),)),
    OutcomeGroup(
        "in_progress",
        "In progress",
        (str(Status.QUEUED), str(Status.SENT), str(Status.PROCESSING)),
    ),
    OutcomeGroup("soft_bounced", "Soft bounced", (str(Status.SOFT_BOUNCED),)),
    OutcomeGroup("hard_bounced", "Hard bounced", (str(Status.HARD_BOUNCED),)),
    OutcomeGroup("failed", "Failed", (str(Status.FAILED),)),
)
_OUTCOME_OF_STATUS = {status: o.key for o in OUTCOMES for status in o.statuses}


def outcome_of(status: str) -> str:
    """The chart series of a ``Message.status``; unknown values count as in progress."""
    return _OUTCOME_OF_STATUS.get(status, "in_progress")


@dataclass
class DaySends:
    day: datetime.date
    counts: dict[str, int] = field(default_factory=lambda: {o.key: 0 for o in OUTCOMES})

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def ordered_counts(self) -> list[int]:
        """Counts in the order of :data:`OUTCOMES` (the columns of the dashboard's table)."""
        return [self.counts.get(o.key, 0) for o in OUTCOMES]


def window_start(
    days: int = DEFAULT_DAYS, *, today: datetime.date | None = None
) -> datetime.datetime:
    """Midnight (current time zone) of the first day of a window of ``days`` days ending today."""
    today = today or timezone.localdate()
    first = today - datetime.timedelta(days=days - 1)
    start = datetime.datetime.combine(first, datetime.time.min)
    return timezone.make_aware(start) if timezone.is_naive(start) else start


def daily_sends(days: int = DEFAULT_DAYS, *, today: datetime.date | None = None) -> list[DaySends]:
    """Messages created per day over the last ``days`` days, by outcome; days without any kept.

    One query: ``GROUP BY`` the local date and ``Message.status``.
    """
    today = today or timezone.localdate()
    first = today - datetime.timedelta(days=days - 1)
    result = [DaySends(first + datetime.timedelta(days=i)) for i in range(days)]
    by_day = {d.day: d for d in result}
    rows = (
        Message.objects.filter(created_at__gte=window_start(days, today=today))
        .annotate(day=TruncDate("created_at"))
        .values("day", "status")
        .annotate(n=Count("id"))
        .order_by()
    )
    for row in rows:
        day = row["day"]
        if isinstance(day, datetime.datetime):  # some backends hand back a datetime
            day = day.date()
        bucket = by_day.get(day)
        if bucket is not None:
            bucket.counts[outcome_of(row["status"])] += row["n"]
    return result


@dataclass(frozen=True)
class Rates:
    """Per-recipient dispositions of the messages created in a window."""

    recipients: int = 0
    delivered: int = 0
    in_progress: int = 0
    soft_bounced: int = 0
    hard_bounced: int = 0
    failed: int = 0
    opened: int = 0
    #: Recipients that were delivered or opened: the denominator of the open rate.
    reached: int = 0
    via_secure_portal: int = 0

    @property
    def bounced(self) -> int:
        return self.soft_bounced + self.hard_bounced

    @property
    def delivery_rate(self) -> float | None:
        return _ratio(self.delivered, self.recipients)

    @property
    def bounce_rate(self) -> float | None:
        return _ratio(self.bounced, self.recipients)

    @property
    def failure_rate(self) -> float | None:
        return _ratio(self.failed, self.recipients)

    @property
    def open_rate(self) -> float | None:
        return _ratio(self.opened, self.reached)

    @property
    def delivery_percent(self) -> str:
        return percent(self.delivery_rate)

    @property
    def bounce_percent(self) -> str:
        return percent(self.bounce_rate)

    @property
    def failure_percent(self) -> str:
        return percent(self.failure_rate)

    @property
    def open_percent(self) -> str:
        return percent(self.open_rate)


def _ratio(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def percent(rate: float | None) -> str:
    """``"92.5 %"``-style text for a rate, or a dash when there is nothing to divide by."""
    if rate is None:
        return "—"
    return f"{formats.number_format(round(100 * rate, 1), 1)}%"


def rates(since: datetime.datetime) -> Rates:
    """Count recipients of messages created since ``since`` by disposition, in one query."""
    in_progress = (Status.QUEUED, Status.SENT, Status.PROCESSING)
    opened = Q(opened_at__isnull=False)
    row = Delivery.objects.filter(message__created_at__gte=since).aggregate(
        recipients=Count("id"),
        delivered=Count("id", filter=Q(status=Status.DELIVERED)),
        in_progress=Count("id", filter=Q(status__in=in_progress)),
        soft_bounced=Count("id", filter=Q(status=Status.SOFT_BOUNCED)),
        hard_bounced=Count("id", filter=Q(status=Status.HARD_BOUNCED)),
        failed=Count("id", filter=Q(status=Status.FAILED)),
        opened=Count("id", filter=opened),
        reached=Count("id", filter=Q(status=Status.DELIVERED) | opened),
        via_secure_portal=Count("id", filter=Q(via_secure_portal=True)),
    )
    return Rates(**{k: v or 0 for k, v in row.items()})


@dataclass(frozen=True)
class Usage:
    """Messages Paubox accepted this calendar month against the plan's allowance."""

    used: int
    limit: int
    month_start: datetime.datetime

    @property
    def fraction(self) -> float:
        return self.used / self.limit if self.limit > 0 else 0.0

    @property
    def percent(self) -> int:
        return round(100 * self.fraction)

    @property
    def bar_percent(self) -> int:
        """Width of the usage bar, capped at 100."""
        return min(100, self.percent)

    @property
    def over(self) -> int:
        """Messages beyond the allowance (billed as overage on paid plans)."""
        return max(0, self.used - self.limit)

    @property
    def level(self) -> str:
        """``ok``, ``warn`` (80 % or more) or ``over``: a CSS class and a word for the reader."""
        if self.used > self.limit:
            return "over"
        return "warn" if self.fraction >= 0.8 else "ok"


def month_start(now: datetime.datetime | None = None) -> datetime.datetime:
    """Midnight on the first of the current month, in the current time zone."""
    local = timezone.localtime(now) if now else timezone.localtime()
    return local.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def monthly_usage(
    conf: PauboxSettings | None = None, *, now: datetime.datetime | None = None
) -> Usage:
    """This month's accepted messages (one query) against ``PAUBOX["MONTHLY_LIMIT"]``."""
    conf = conf or get_settings()
    start = month_start(now)
    used = Message.objects.filter(state=Message.State.SENT, sent_at__gte=start).count()
    return Usage(used=used, limit=conf.monthly_limit, month_start=start)


# --- Chart geometry ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Segment:
    outcome: str
    label: str
    count: int
    y: float
    height: float


@dataclass(frozen=True)
class Bar:
    day: datetime.date
    label: str
    total: int
    x: float
    width: float
    segments: tuple[Segment, ...]
    show_label: bool

    @property
    def label_x(self) -> float:
        return self.x + self.width / 2

    @property
    def top(self) -> float:
        return min((s.y for s in self.segments), default=0.0)


@dataclass(frozen=True)
class Tick:
    value: int
    y: float


@dataclass(frozen=True)
class Chart:
    width: int
    height: int
    left: int
    top: int
    plot_width: float
    plot_height: float
    bottom_y: float
    bars: tuple[Bar, ...]
    ticks: tuple[Tick, ...]
    y_max: int

    @property
    def empty(self) -> bool:
        return self.y_max == 0 or not any(b.total for b in self.bars)

    @property
    def right(self) -> float:
        return self.left + self.plot_width

    @property
    def label_y(self) -> float:
        return self.bottom_y + 18

    @property
    def center_x(self) -> float:
        return self.left + self.plot_width / 2

    @property
    def center_y(self) -> float:
        return self.top + self.plot_height / 2


def nice_step(maximum: int, max_ticks: int = 5) -> int:
    """The smallest step of 1, 2 or 5 times a power of ten giving at most ``max_ticks`` steps."""
    if maximum <= 0:
        return 1
    raw = maximum / max_ticks
    magnitude = 10 ** max(0, math.floor(math.log10(raw))) if raw >= 1 else 1
    for multiple in (1, 2, 5, 10):
        step = multiple * magnitude
        if step >= raw:
            return int(step)
    return int(10 * magnitude)  # pragma: no cover - the loop always returns


def build_chart(
    days: Sequence[DaySends],
    *,
    width: int = 760,
    height: int = 260,
    left: int = 44,
    right: int = 12,
    top: int = 12,
    bottom: int = 30,
    label_every: int = 5,
) -> Chart:
    """Lay out a stacked bar per day in SVG user units; the newest day is labelled too."""
    plot_width = width - left - right
    plot_height = height - top - bottom
    bottom_y = top + plot_height
    peak = max((d.total for d in days), default=0)
    step = nice_step(peak)
    y_max = step * math.ceil(peak / step) if peak else 0
    slot = plot_width / max(1, len(days))
    bar_width = max(2.0, slot * 0.7)
    scale = plot_height / y_max if y_max else 0.0
    labels = {o.key: o.label for o in OUTCOMES}
    bars = []
    last = len(days) - 1
    for i, day in enumerate(days):
        x = left + i * slot + (slot - bar_width) / 2
        y = float(bottom_y)
        segments = []
        for outcome in OUTCOMES:
            count = day.counts.get(outcome.key, 0)
            if not count:
                continue
            h = count * scale
            y -= h
            segments.append(
                Segment(outcome.key, labels[outcome.key], count, round(y, 2), round(h, 2))
            )
        bars.append(
            Bar(
                day=day.day,
                label=formats.date_format(day.day, "M j"),
                total=day.total,
                x=round(x, 2),
                width=round(bar_width, 2),
                segments=tuple(segments),
                show_label=(last - i) % label_every == 0,
            )
        )
    ticks = (
        tuple(
            Tick(value, round(bottom_y - value * scale, 2)) for value in range(0, y_max + 1, step)
        )
        if y_max
        else (Tick(0, bottom_y),)
    )
    return Chart(
        width=width,
        height=height,
        left=left,
        top=top,
        plot_width=plot_width,
        plot_height=plot_height,
        bottom_y=bottom_y,
        bars=tuple(bars),
        ticks=ticks,
        y_max=y_max,
    )


# --- Everything the dashboard page shows --------------------------------------------------------


@dataclass(frozen=True)
class Dashboard:
    days: int
    since: datetime.datetime
    daily: tuple[DaySends, ...]
    chart: Chart
    rates: Rates
    usage: Usage
    outcomes: tuple[OutcomeGroup, ...] = OUTCOMES

    @property
    def messages(self) -> int:
        return sum(d.total for d in self.daily)

    def outcome_totals(self) -> dict[str, int]:
        totals = {o.key: 0 for o in OUTCOMES}
        for day in self.daily:
            for key, n in day.counts.items():
                totals[key] += n
        return totals

    @property
    def legend(self) -> list[tuple[OutcomeGroup, int]]:
        totals = self.outcome_totals()
        return [(o, totals[o.key]) for o in OUTCOMES]


def build_dashboard(
    conf: PauboxSettings | None = None,
    *,
    days: int = DEFAULT_DAYS,
    now: datetime.datetime | None = None,
) -> Dashboard:
    """Three queries: sends per day by outcome, recipient rates, and this month's usage."""
    conf = conf or get_settings()
    today = timezone.localtime(now).date() if now else timezone.localdate()
    since = window_start(days, today=today)
    daily = daily_sends(days, today=today)
    return Dashboard(
        days=days,
        since=since,
        daily=tuple(daily),
        chart=build_chart(daily),
        rates=rates(since),
        usage=monthly_usage(conf, now=now),
    )
