"""A real Celery worker process on a real broker (Redis; RabbitMQ too for the main path), with
PostgreSQL as the shared database and the sandbox as Paubox: every message arrives exactly
once, and the fault drills end with every message sent or failed with a reason.

Runs with DJANGO_PAUBOX_TEST_DB=postgres (the worker must share the test database) and skips
when the broker is not reachable.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest
from celery import Celery
from celery._state import get_current_app
from django.core import mail
from django.core.mail import EmailMessage
from django.db import connection
from django.utils import timezone

from django_paubox import tasks
from django_paubox.models import Message
from django_paubox.sandbox import SandboxServer
from django_paubox.sandbox.pytest_plugin import SANDBOX_API_KEY, SANDBOX_API_USERNAME
from django_paubox.sending import scheduled as scheduled_sends
from django_paubox.tracking.polling import poll_receipts
from django_paubox.tracking.schedule import due_messages
from tests.mailers import DJANGO_61, new_connection

ROOT = Path(__file__).resolve().parents[1]
CELERY_BACKEND = "django_paubox.backends.PauboxCeleryEmailBackend"
BROKERS = {
    "redis": ("redis://127.0.0.1:6379/15", 6379),
    "rabbitmq": ("amqp://guest:guest@127.0.0.1:5672//", 5672),
}
DEAD_BROKERS = {"redis": "redis://127.0.0.1:1/0", "rabbitmq": "amqp://guest:guest@127.0.0.1:1//"}
WORKER_PAUBOX = {
    "OUTBOX_RETRY_DELAY": 0.2,
    "OUTBOX_RETRY_DELAY_MAX": 1,
    "TIMEOUT": [2, 5],
    "MAX_RETRIES": 0,
}

pytestmark = [
    pytest.mark.celery,
    pytest.mark.postgres,
    pytest.mark.skipif(
        os.environ.get("DJANGO_PAUBOX_TEST_DB") != "postgres",
        reason="the worker shares the test database: run with DJANGO_PAUBOX_TEST_DB=postgres",
    ),
    pytest.mark.django_db(transaction=True),
]


def reachable(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


BILLING_KEY = "billing-worker-key"
BILLING_USER = "billing-worker"


def billing_options(billing) -> dict[str, str]:
    return {"api_key": BILLING_KEY, "api_username": BILLING_USER, "api_url": billing.url}


def billing_settings(billing) -> dict[str, str]:
    """A second Paubox account, named the way the Django version can: a MAILERS alias (6.1+)
    or a PAUBOX["CONNECTIONS"] entry for get_connection(label="billing") (before)."""
    if DJANGO_61:
        mailers = {"billing": {"BACKEND": CELERY_BACKEND, "OPTIONS": billing_options(billing)}}
        return {"DJANGO_PAUBOX_TEST_MAILERS": json.dumps(mailers)}
    entry = {key.upper(): value for key, value in billing_options(billing).items()}
    return {
        "DJANGO_PAUBOX_TEST_PAUBOX": json.dumps(
            {**WORKER_PAUBOX, "CONNECTIONS": {"billing": entry}}
        )
    }


class Worker:
    """A `celery worker` subprocess for one broker and a queue of its own."""

    def __init__(
        self, broker: str, url: str, sandbox, db_name: str, log: Path, billing=None
    ) -> None:
        self.broker, self.url, self.log = broker, url, log
        self.queue = f"django-paubox-test-{uuid.uuid4().hex[:8]}"
        self.env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "tests.settings",
            "DJANGO_PAUBOX_TEST_DB": "postgres",
            "DJANGO_PAUBOX_DB_NAME": db_name,
            "CELERY_BROKER_URL": url,
            "CELERY_TASK_DEFAULT_QUEUE": self.queue,
            "PAUBOX_API_URL": sandbox.url,
            "PAUBOX_API_KEY": SANDBOX_API_KEY,
            "PAUBOX_API_USERNAME": SANDBOX_API_USERNAME,
            "DJANGO_PAUBOX_TEST_PAUBOX": json.dumps(WORKER_PAUBOX),
            **(billing_settings(billing) if billing is not None else {}),
        }
        self.app = Celery("worker-tests", broker=url, set_as_current=False)
        self.app.conf.update(
            task_default_queue=self.queue, broker_transport_options={"visibility_timeout": 10}
        )
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.name = f"w{uuid.uuid4().hex[:6]}@test"
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "tests.celery_app",
                "worker",
                "-l",
                "INFO",
                "-c",
                "2",
                "-Q",
                self.queue,
                "-n",
                self.name,
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
            ],
            cwd=ROOT,
            env=self.env,
            stdout=self.log.open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"worker exited: {self.log.read_text()[-3000:]}")
            if self.app.control.ping(destination=[self.name], timeout=0.5):
                return
        raise RuntimeError(f"worker did not start: {self.log.read_text()[-3000:]}")

    def kill(self) -> None:
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture(scope="module")
def billing_server():
    """The second account's Paubox: it demands its own key and username."""
    server = SandboxServer(
        api_key=BILLING_KEY, api_username=BILLING_USER, processing_seconds=0.2
    ).start()
    yield server
    server.stop()


@pytest.fixture
def billing(billing_server):
    billing_server.reset()
    yield billing_server
    billing_server.reset()


@pytest.fixture(scope="module", params=["redis", "rabbitmq"])
def worker(
    request,
    django_db_setup,
    django_db_blocker,
    paubox_sandbox_server,
    billing_server,
    tmp_path_factory,
):
    url, port = BROKERS[request.param]
    if not reachable(port):
        pytest.skip(f"{request.param} is not running on 127.0.0.1:{port}")
    with django_db_blocker.unblock():
        db_name = connection.settings_dict["NAME"]
    log = tmp_path_factory.mktemp("worker") / f"{request.param}.log"
    w = Worker(request.param, url, paubox_sandbox_server, db_name, log, billing_server)
    w.start()
    with w.app.connection_for_write() as conn:  # a queue of our own, emptied at the end
        yield w
        w.stop()
        w.app.control.purge(connection=conn)


@pytest.fixture
def publish_to(worker):
    """Make this process publish tasks to ``worker``'s broker and queue (or a dead one)."""
    previous = get_current_app()

    def use(app: Celery) -> None:
        app.set_current()
        app.set_default()

    use(worker.app)
    yield use
    use(previous)


def send(n: int, prefix: str) -> list[EmailMessage]:
    messages = [
        EmailMessage(
            f"Reminder {i}",
            "Your appointment is on Monday.",
            "reminders@clinic.example",
            [f"{prefix}{i}@example.com"],
        )
        for i in range(n)
    ]
    assert new_connection(CELERY_BACKEND).send_messages(messages) == n
    return messages


def settle(timeout: float = 60.0, sweep_every: float | None = None) -> None:
    """Wait until no message is queued or sending, sweeping the outbox now and then."""
    deadline = time.monotonic() + timeout
    last_sweep = time.monotonic()
    while time.monotonic() < deadline:
        if not Message.objects.filter(state__in=["queued", "sending"]).exists():
            return
        if sweep_every and time.monotonic() - last_sweep > sweep_every:
            tasks.sweep_outbox()
            last_sweep = time.monotonic()
        time.sleep(0.2)
    states = Counter(Message.objects.values_list("state", flat=True))
    raise AssertionError(f"messages did not settle: {dict(states)}")


def assert_exactly_once(sandbox, prefix: str) -> None:
    """Every sent row arrived once with its own tracking id; nothing arrived twice."""
    arrived = Counter(r for m in sandbox.messages for r in m.recipients if r.startswith(prefix))
    assert [r for r, n in arrived.items() if n > 1] == []
    by_id = {m.tracking_id: m.recipients for m in sandbox.messages}
    for row in Message.objects.prefetch_related("deliveries"):
        recipient = row.deliveries.get().recipient
        if row.state == "sent":
            assert by_id[row.tracking_id] == [recipient]
        else:
            assert row.state == "failed" and row.error


def test_every_message_arrives_exactly_once(worker, publish_to, paubox_sandbox):
    send(120, "once")
    settle()
    assert set(Message.objects.values_list("state", flat=True)) == {"sent"}
    assert len(paubox_sandbox.messages) == 120
    assert sum(p.endswith("/bulk_messages") for _, p in paubox_sandbox.requests) == 3
    assert_exactly_once(paubox_sandbox, "once")
    assert Message.objects.filter(payload__isnull=False).count() == 0
    from django_celery_results.models import TaskResult

    results = TaskResult.objects.filter(task_name="django_paubox.send_queued")
    deadline = time.monotonic() + 10  # a result is stored just after its task's rows settle
    while results.count() < 3 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert results.count() == 3
    assert sum(json.loads(r.result)["sent"] for r in results) == 120


def test_maintenance_tasks_store_no_result(worker, publish_to, paubox_sandbox):
    """Beat runs them every minute: a result row per run would only grow the results table."""
    from django_celery_results.models import TaskResult

    sent = [tasks.sweep_outbox.delay(), tasks.refresh_receipts.delay(), tasks.purge.delay()]
    done = [f"[{result.id}] succeeded" for result in sent]
    deadline = time.monotonic() + 30
    while not all(line in worker.log.read_text() for line in done):
        assert time.monotonic() < deadline, worker.log.read_text()[-3000:]
        time.sleep(0.1)
    assert not TaskResult.objects.filter(task_id__in=[r.id for r in sent]).exists()
    # The task that sends does store its counts (test_every_message_arrives_exactly_once).
    assert not tasks.send_queued.ignore_result


def test_broker_unreachable_at_send_time(worker, publish_to, paubox_sandbox, settings):
    if worker.broker != "redis":
        pytest.skip("fault drills run on Redis")
    publish_to(Celery("dead", broker=DEAD_BROKERS[worker.broker], set_as_current=False))
    send(30, "nobroker")
    assert set(Message.objects.values_list("state", flat=True)) == {"queued"}
    assert paubox_sandbox.messages == []
    publish_to(worker.app)  # the broker is back; the sweeper finds the stranded rows
    settings.PAUBOX = {**settings.PAUBOX, "OUTBOX_STALE_SECONDS": 0}
    assert tasks.sweep_outbox()["reenqueued"] == 30
    settle()
    assert set(Message.objects.values_list("state", flat=True)) == {"sent"}
    assert_exactly_once(paubox_sandbox, "nobroker")


def test_worker_killed_in_the_middle_of_a_batch(worker, publish_to, paubox_sandbox, settings):
    if worker.broker != "redis":
        pytest.skip("fault drills run on Redis")
    paubox_sandbox.set_latency(3)
    send(120, "killed")
    deadline = time.monotonic() + 30
    while not any(p.endswith("/bulk_messages") for _, p in paubox_sandbox.requests):
        assert time.monotonic() < deadline, "the worker never started sending"
        time.sleep(0.05)
    worker.kill()
    paubox_sandbox.set_latency(0)
    worker.start()
    settings.PAUBOX = {**settings.PAUBOX, "OUTBOX_STALE_SECONDS": 5}
    settle(timeout=90, sweep_every=2)
    states = Counter(Message.objects.values_list("state", flat=True))
    assert states["sent"] + states["failed"] == 120
    assert states["sent"] >= 20  # the batch nobody had claimed was sent by the new worker
    assert states["failed"] >= 50  # the batch in flight when the worker died: ambiguous
    for row in Message.objects.filter(state="failed"):
        assert "may or may not have reached Paubox" in row.error
    assert_exactly_once(paubox_sandbox, "killed")


def test_paubox_503_then_recovering(worker, publish_to, paubox_sandbox):
    if worker.broker != "redis":
        pytest.skip("fault drills run on Redis")
    paubox_sandbox.fail_next(503, count=3)
    send(100, "flaky")
    settle()
    assert set(Message.objects.values_list("state", flat=True)) == {"sent"}
    assert Message.objects.filter(attempts__gt=1).exists()
    assert_exactly_once(paubox_sandbox, "flaky")


def test_two_accounts_each_message_goes_out_and_is_tracked_with_its_own(
    worker, publish_to, paubox_sandbox, billing, settings
):
    """Issue #12: the worker sends each queued message with the credentials of the mailer (or
    label) that queued it, never the global ones; receipts and cancel follow."""
    if worker.broker != "redis":
        pytest.skip("runs on Redis")
    later = timezone.now() + timedelta(hours=1)
    statement = EmailMessage(
        "Statement", "Balance due.", "billing@clinic.example", ["b@example.com"]
    )
    scheduled = EmailMessage("Statement", "Due soon.", "billing@clinic.example", ["s@example.com"])
    scheduled.paubox_send_at = later  # type: ignore[attr-defined]
    if DJANGO_61:
        settings.MAILERS = {
            **settings.MAILERS,
            "billing": {"BACKEND": CELERY_BACKEND, "OPTIONS": billing_options(billing)},
        }
        assert mail.mailers["billing"].send_messages([statement, scheduled]) == 2
    else:
        entry = {key.upper(): value for key, value in billing_options(billing).items()}
        settings.PAUBOX = {**settings.PAUBOX, "CONNECTIONS": {"billing": entry}}
        connection = new_connection(CELERY_BACKEND, **billing_options(billing))
        assert connection.send_messages([statement, scheduled]) == 2
    send(3, "front")
    settle()
    rows = Message.objects.order_by("pk")
    assert [r.state for r in rows] == ["sent"] * 5
    billing_name = "mailer:billing" if DJANGO_61 else "label:billing"
    assert [r.mailer for r in rows] == [billing_name] * 2 + ["default"] * 3
    assert len(paubox_sandbox.messages) == 3 and len(billing.messages) == 1
    assert len(billing.scheduled) == 1 and paubox_sandbox.scheduled == []

    assert poll_receipts(due_messages(include_all=True)).errors == 0
    for sandbox, count in ((paubox_sandbox, 3), (billing, 2)):
        paths = [p for _, p in sandbox.requests if "message_receipt" in p]
        assert len(paths) == count
        assert all(f"/v1/{sandbox.username}/" in p for p in paths)
    scheduled_sends.cancel(Message.objects.get(scheduled_at__isnull=False))
    assert billing.scheduled[0].status == "cancelled"
