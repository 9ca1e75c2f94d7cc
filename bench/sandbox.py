"""The Paubox sandbox in a process of its own, so its work never shares the client's GIL."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from types import TracebackType

from django_paubox.sandbox import SandboxControl

from .common import die_with_parent

ROOT = Path(__file__).resolve().parents[1]
API_KEY = "bench-sandbox-key"
API_USERNAME = "bench"
_URL_LINE = re.compile(r"API_URL = (\S+)")


class SandboxProcess:
    """``python -m django_paubox.sandbox`` on a free loopback port; steered by ``.control``."""

    def __init__(
        self,
        *,
        latency_ms: float = 0.0,
        processing_seconds: float = 3600.0,
        extra_args: list[str] | None = None,
    ) -> None:
        self.args = [
            sys.executable,
            "-m",
            "django_paubox.sandbox",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--api-key",
            API_KEY,
            "--api-username",
            API_USERNAME,
            "--processing-seconds",
            str(processing_seconds),
            "--latency-ms",
            str(latency_ms),
            "--quiet",
            *(extra_args or []),
        ]
        self.process: subprocess.Popen[str] | None = None
        self.url = ""
        self.control: SandboxControl | None = None

    def start(self, timeout: float = 20.0) -> SandboxProcess:
        self.process = subprocess.Popen(
            self.args,
            cwd=ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
        found: list[str] = []

        def read() -> None:
            assert self.process is not None and self.process.stdout is not None
            for line in self.process.stdout:
                match = _URL_LINE.search(line)
                if match and not found:
                    found.append(match.group(1))
            # keep draining so the pipe never fills

        threading.Thread(target=read, daemon=True).start()
        deadline = time.monotonic() + timeout
        while not found:
            if self.process.poll() is not None:
                raise RuntimeError("the sandbox exited at start")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the sandbox did not start")
            time.sleep(0.02)
        self.url = found[0]
        self.control = SandboxControl(self.url).wait_until_up()
        return self

    @property
    def base_url(self) -> str:
        """The URL the SDK takes as ``host`` (username included)."""
        return self.url + API_USERNAME

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def paubox_settings(self) -> dict[str, str]:
        return {"API_URL": self.url, "API_KEY": API_KEY, "API_USERNAME": API_USERNAME}

    def env(self) -> dict[str, str]:
        """Environment variables that point a bench process (worker, gunicorn) at the sandbox."""
        return {
            "PAUBOX_API_URL": self.url,
            "PAUBOX_API_KEY": API_KEY,
            "PAUBOX_API_USERNAME": API_USERNAME,
        }

    def api_requests(self) -> Counter[str]:
        """API requests answered so far, by endpoint (``POST messages``, ...)."""
        assert self.control is not None
        counts: Counter[str] = Counter()
        for method, path in self.control.requests:
            counts[f"{method} {path.split('?', 1)[0].rsplit('/', 1)[-1]}"] += 1
        return counts

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> SandboxProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class Relay:
    """``bench.netem`` in its own process: a new connection costs ``connect_delay_ms``."""

    def __init__(self, sandbox: SandboxProcess, connect_delay_ms: float) -> None:
        self.sandbox = sandbox
        self.connect_delay_ms = connect_delay_ms
        self.process: subprocess.Popen[str] | None = None
        self.port = 0

    def start(self) -> Relay:
        upstream = self.sandbox.url.split("//", 1)[1].split("/", 1)[0]
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.netem",
                "--upstream",
                upstream,
                "--connect-delay-ms",
                str(self.connect_delay_ms),
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line.startswith("PORT "):
            self.stop()
            raise RuntimeError("the relay did not start")
        self.port = int(line.split()[1])
        return self

    def rewrite(self, url: str) -> str:
        """``url`` of the sandbox, through the relay."""
        scheme, rest = url.split("//", 1)
        path = rest.split("/", 1)[1] if "/" in rest else ""
        return f"{scheme}//127.0.0.1:{self.port}/{path}"

    def paubox_settings(self) -> dict[str, str]:
        return {**self.sandbox.paubox_settings(), "API_URL": self.rewrite(self.sandbox.url)}

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)

    def __enter__(self) -> Relay:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
