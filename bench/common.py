"""Helpers shared by the benchmarks: messages to send, settings, timing, memory, profiling."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from django.core.mail import EmailMultiAlternatives

ROOT = Path(__file__).resolve().parents[1]
SENDER = "Clinic <reminders@clinic.example>"
SUBJECT = "Your appointment reminder"
TEXT = "Hello,\n\nThis is a reminder of your appointment on Monday at 10:00.\n\nThe clinic"
HTML = "<p>Hello,</p><p>This is a reminder of your appointment on <b>Monday at 10:00</b>.</p>"


def results_dir() -> Path:
    return Path(os.environ.get("BENCH_RESULTS_DIR", ROOT / "bench" / "results"))


def recipient(prefix: str, index: int) -> str:
    return f"{prefix}{index}@example.com"


def email(prefix: str, index: int, *, html: bool = True) -> EmailMultiAlternatives:
    message = EmailMultiAlternatives(SUBJECT, TEXT, SENDER, [recipient(prefix, index)])
    if html:
        message.attach_alternative(HTML, "text/html")
    return message


def sdk_mail(prefix: str, index: int, *, html: bool = True) -> dict[str, Any]:
    """The same message for Paubox's SDK, built with its own helper."""
    from paubox.helpers.mail import Mail

    content = {"text/plain": TEXT}
    if html:
        content["text/html"] = HTML
    return Mail(SENDER, SUBJECT, [recipient(prefix, index)], content).get()  # type: ignore[no-any-return]


def default_mailer() -> Any:
    """A new connection of the default mailer: ``mailers.default`` on Django 6.1+, where
    ``get_connection()`` is deprecated; ``get_connection()`` before."""
    import django

    if django.VERSION >= (6, 1):
        from django.core.mail import mailers  # type: ignore[attr-defined]

        return mailers.default
    from django.core.mail import get_connection

    return get_connection()


def point_at(sandbox: Any, **extra: Any) -> None:
    """Point ``settings.PAUBOX`` of this process at ``sandbox`` (extra keys upper-case)."""
    from django.conf import settings

    settings.PAUBOX = {**settings.PAUBOX, **sandbox.paubox_settings(), **extra}


class Timer:
    def __init__(self) -> None:
        self.seconds = 0.0

    @contextmanager
    def measure(self) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds += time.perf_counter() - started


def proc_status_kib(field: str, pid: int | str = "self") -> int:
    """A ``/proc/<pid>/status`` memory field (VmRSS, VmHWM) in KiB."""
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise LookupError(field)


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux ``clear_refs`` 5); False where not allowed."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as refs:
            refs.write("5")
        return True
    except OSError:
        return False


@contextmanager
def profiled(name: str) -> Iterator[None]:
    """With ``BENCH_PROFILE=1``, profile the block with pyinstrument into the results dir."""
    if os.environ.get("BENCH_PROFILE") != "1":
        yield
        return
    from pyinstrument import Profiler

    profiler = Profiler(interval=0.001)
    profiler.start()
    try:
        yield
    finally:
        profiler.stop()
        out = results_dir()
        out.mkdir(parents=True, exist_ok=True)
        (out / f"profile-{name}.txt").write_text(
            profiler.output_text(unicode=True, show_all=False), encoding="utf-8"
        )
        (out / f"profile-{name}.html").write_text(profiler.output_html(), encoding="utf-8")


def wait_for_port(port: int, timeout: float = 30.0) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds used so far by the processes ``pids`` (gone ones count 0)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / ticks


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (gunicorn's workers, celery's pool)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children", encoding="ascii") as kids:
            return [int(p) for p in kids.read().split()]
    except OSError:
        return []


def postgres_pids() -> list[int]:
    """Every PostgreSQL server process on this machine (backends, WAL writer...)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/comm", encoding="ascii") as comm:
                if comm.read().strip() == "postgres":
                    pids.append(int(entry))
        except OSError:
            continue
    return pids


def die_with_parent() -> None:
    """``preexec_fn`` for helper processes: SIGTERM when the benchmark process dies (Linux).

    A benchmark stopped by the harness's timeout must not leave a sandbox, relay, gunicorn or
    worker behind.
    """
    import ctypes
    import signal

    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
