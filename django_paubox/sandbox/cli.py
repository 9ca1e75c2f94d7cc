"""Command line of the sandbox, shared by ``python -m django_paubox.sandbox`` and
``manage.py paubox_sandbox`` (which only changes where the key and username default from)."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from typing import Any, Protocol

from .faults import FaultRates
from .server import SandboxServer


class Writer(Protocol):
    """Where the banner goes: a text stream (or Django's OutputWrapper)."""

    def write(self, text: str, /) -> Any: ...

    def flush(self) -> Any: ...


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The sandbox's options (the same for both commands)."""
    parser.add_argument("--host", default="127.0.0.1", help="Address to listen on (127.0.0.1).")
    parser.add_argument(
        "--port", type=int, default=8025, help="Port to listen on (8025; 0 picks a free one)."
    )
    parser.add_argument(
        "--api-key", default=None, help="Accept only this API key (default: any non-empty key)."
    )
    parser.add_argument(
        "--api-username",
        default=None,
        help="Accept only this endpoint username in paths (default: any).",
    )
    parser.add_argument(
        "--processing-seconds",
        type=float,
        default=3.0,
        help="Seconds a message stays 'processing' before its final status (3).",
    )
    parser.add_argument(
        "--latency-ms", type=float, default=0.0, help="Delay every API answer (milliseconds)."
    )
    parser.add_argument(
        "--webhook-url", default=None, help="POST Paubox webhook events to this URL."
    )
    parser.add_argument(
        "--timeout-hold-seconds",
        type=float,
        default=30.0,
        help="How long an injected 'timeout' holds its answer (30).",
    )
    faults = parser.add_argument_group("random faults (shares of API requests, 0 to 1)")
    faults.add_argument("--error-rate", type=float, default=0.0, help="5xx answers.")
    faults.add_argument("--rate-limit-rate", type=float, default=0.0, help="429 answers.")
    faults.add_argument("--timeout-rate", type=float, default=0.0, help="Held answers.")
    faults.add_argument("--drop-rate", type=float, default=0.0, help="Dropped connections.")
    faults.add_argument("--seed", type=int, default=None, help="Seed for the fault draws.")
    parser.add_argument(
        "--quiet", action="store_true", help="Do not log each request (method, path, status)."
    )


def build_server(options: dict[str, Any]) -> SandboxServer:
    server = SandboxServer(
        host=options["host"],
        port=options["port"],
        api_key=options.get("api_key") or None,
        api_username=options.get("api_username") or None,
        processing_seconds=options["processing_seconds"],
        webhook_url=options.get("webhook_url") or None,
        latency=max(0.0, options.get("latency_ms") or 0.0) / 1000.0,
        timeout_hold_seconds=options.get("timeout_hold_seconds", 30.0),
    )
    try:
        rates = FaultRates(
            server_error=options.get("error_rate") or 0.0,
            rate_limit=options.get("rate_limit_rate") or 0.0,
            timeout=options.get("timeout_rate") or 0.0,
            drop=options.get("drop_rate") or 0.0,
            seed=options.get("seed"),
        )
    except ValueError:
        server.stop()
        raise
    if rates.shares():
        server.set_fault_rates(rates)
    return server


def banner(server: SandboxServer, *, key_source: str = "--api-key") -> str:
    """What to configure; names where the key comes from, never the key itself."""
    if server.api_key is None:
        key = '"any-non-empty-key"'
        key_note = "any key is accepted"
    else:
        key = f"<{key_source}>"
        key_note = "only that key is accepted"
    username_note = (
        "any username is accepted" if server.api_username is None else "only this username"
    )
    lines = [
        f"Paubox sandbox listening on {server.root_url} (nothing leaves this machine)",
        f"API_URL = {server.url}",
        "",
        "Settings:",
        "    PAUBOX = {",
        f'        "API_URL": "{server.url}",',
        f'        "API_USERNAME": "{server.username}",  # {username_note}',
        f'        "API_KEY": {key},  # {key_note}',
        "    }",
        "",
        f"Messages page: {server.root_url}",
        f"Control API:   {server.root_url}_sandbox/",
        f"Processing:    {server.processing_seconds:g} s"
        + (f"; webhooks to {server.webhook_url}" if server.webhook_url else ""),
    ]
    if server.host not in ("127.0.0.1", "::1", "localhost"):
        lines.append(
            "WARNING: listening beyond loopback; the messages page shows message content "
            "to anyone who can reach this port."
        )
    lines.append("Press Ctrl-C to stop.")
    return "\n".join(lines)


def log_requests() -> None:
    """The whole sandbox package's log (its modules log under their own names) at INFO, on
    stderr, unless a handler prints it already (a Django project's ``LOGGING`` for
    ``django_paubox``, under ``manage.py paubox_sandbox``): each line once."""
    package_logger = logging.getLogger(__package__)
    package_logger.setLevel(logging.INFO)
    if package_logger.hasHandlers():
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    package_logger.addHandler(handler)


def run(
    options: dict[str, Any],
    *,
    out: Writer | None = None,
    key_source: str = "--api-key",
    notes: Sequence[str] = (),
) -> None:
    """Build the server from parsed options, print the banner, serve until interrupted."""
    out = out or sys.stdout
    server = build_server(options)
    if not options.get("quiet"):
        log_requests()
    text = banner(server, key_source=key_source)
    if notes:
        text = "\n".join([*notes, text])
    print(text, file=out, flush=True)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    print("Paubox sandbox stopped.", file=out, flush=True)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m django_paubox.sandbox",
        description="A local Paubox Email API for development and tests.",
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        run(vars(args))
    except (OSError, ValueError) as error:
        parser.exit(1, f"paubox sandbox: {error}\n")
    return 0
