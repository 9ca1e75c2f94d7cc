"""Forget event times no page can show (issue #10): before 0.2, a webhook event with a time such
as ``0001-01-01T00:00:00+14:00`` was stored on PostgreSQL, and every admin page that loaded the
row answered 500 (psycopg cannot turn it into a Python datetime). Such times become unknown, as
the webhook now stores them; the filters run in SQL, so no bad row is ever loaded here."""

from datetime import datetime, timezone

from django.db import migrations

EARLIEST = datetime(2000, 1, 1, tzinfo=timezone.utc)
LATEST = datetime(9000, 1, 1, tzinfo=timezone.utc)  # the webhook's own bound is now + 1 day


def forget_implausible_times(apps, schema_editor):
    columns = {
        "WebhookEvent": ["occurred_at"],
        "Delivery": ["delivered_at", "opened_at"],
    }
    for model_name, fields in columns.items():
        model = apps.get_model("django_paubox", model_name)
        for field in fields:
            for lookup, bound in (("lt", EARLIEST), ("gt", LATEST)):
                model.objects.filter(**{f"{field}__{lookup}": bound}).update(**{field: None})


class Migration(migrations.Migration):
    dependencies = [("django_paubox", "0002_schema_for_0_2")]

    operations = [
        migrations.RunPython(forget_implausible_times, migrations.RunPython.noop, elidable=True)
    ]
