"""The physical limit of a Paubox client: prebuilt bodies over one kept-alive connection.

:class:`Wire` is the least any client can do per API call: ``http.client`` on one HTTP/1.1
connection opened once, the body serialised before the clock starts, headers and body in one
``send`` (no delayed-ACK stall), the answer read and not parsed. A benchmark runs it beside the
app and the SDK against the same sandbox (and relay), so "the limit" is measured in the same run
rather than computed: one round trip per call, plus whatever this machine adds.
"""

from __future__ import annotations

import http.client
import json
from typing import Any
from urllib.parse import urlsplit


class Wire:
    """One kept-alive connection to ``base_url`` (the API URL with its username)."""

    def __init__(self, base_url: str, authorization: str, *, timeout: float = 30.0) -> None:
        parts = urlsplit(base_url)
        if parts.scheme != "http" or parts.hostname not in ("127.0.0.1", "localhost"):
            raise ValueError("Wire only talks to a loopback sandbox over http")
        self.prefix = parts.path.rstrip("/")
        self.connection = http.client.HTTPConnection(
            parts.hostname, parts.port or 80, timeout=timeout
        )
        self.headers = {
            "Authorization": authorization,
            "Accept": "application/json",
            "Content-Type": "application/json",
        }

    @staticmethod
    def message_body(message: dict[str, Any]) -> bytes:
        return json.dumps({"data": {"message": message}}).encode()

    @staticmethod
    def bulk_body(messages: list[dict[str, Any]]) -> bytes:
        return json.dumps({"data": {"messages": messages}}).encode()

    def request(self, method: str, endpoint: str, body: bytes | None = None) -> bytes:
        self.connection.request(method, f"{self.prefix}/{endpoint}", body, self.headers)
        response = self.connection.getresponse()
        data = response.read()
        if response.status != 200:
            raise RuntimeError(f"{method} {endpoint}: {response.status}")
        return data

    def post(self, endpoint: str, body: bytes) -> bytes:
        return self.request("POST", endpoint, body)

    def get(self, endpoint: str) -> bytes:
        return self.request("GET", endpoint)

    def close(self) -> None:
        self.connection.close()

    def __enter__(self) -> Wire:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
