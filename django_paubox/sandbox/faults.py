"""Fault injection: queued one-off faults, random fault rates and latency.

The handler asks :meth:`FaultPlan.draw` once per API request (send, bulk send, receipt) and acts
on the answer. Kinds:

- ``status``: answer with an HTTP error (Paubox's error body unless one is given); 429 too.
- ``timeout``: process the request, then hold the answer longer than a client's read timeout
  (``hold_seconds``; released at once by ``stop()``/``reset()``). A send held this way *was*
  captured: the client cannot tell, which is exactly the ambiguity clients must handle.
- ``drop``: read the request, then close the connection without answering (nothing captured).
- ``html404``: answer with the gateway's HTML 404 page, as for a wrong base path.
"""

from __future__ import annotations

import random
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any

FAULT_KINDS = ("status", "timeout", "drop", "html404")
SERVER_ERROR_STATUSES = (500, 502, 503, 504)
FAULTABLE_ENDPOINTS = (
    "messages",
    "bulk_messages",
    "message_receipt",
    "templated_messages",
    "dynamic_templates",
    "schedule",
)


@dataclass
class Fault:
    """One fault to inject; ``endpoint`` limits it to one API endpoint (None: any)."""

    kind: str
    status: int = 503
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    endpoint: str | None = None


@dataclass
class _Queued:
    fault: Fault
    remaining: int


class FaultPlan:
    """Thread-safe fault configuration of one sandbox."""

    def __init__(self, latency: float = 0.0) -> None:
        self._lock = threading.Lock()
        self._initial_latency = latency
        self.latency = latency
        self._queue: deque[_Queued] = deque()
        self._rates: dict[str, float] = {}
        self._random = random.Random()

    def fail_next(self, fault: Fault, count: int = 1) -> None:
        if fault.kind not in FAULT_KINDS:
            raise ValueError(f"Unknown fault kind {fault.kind!r}; choose one of {FAULT_KINDS}.")
        if fault.endpoint is not None and fault.endpoint not in FAULTABLE_ENDPOINTS:
            raise ValueError(f"Faults apply to {FAULTABLE_ENDPOINTS}, not {fault.endpoint!r}.")
        if count < 1:
            raise ValueError("count must be at least 1.")
        with self._lock:
            self._queue.append(_Queued(fault, count))

    def set_rates(
        self,
        *,
        server_error: float = 0.0,
        rate_limit: float = 0.0,
        timeout: float = 0.0,
        drop: float = 0.0,
        seed: int | None = None,
    ) -> None:
        rates = {
            "server_error": server_error,
            "rate_limit": rate_limit,
            "timeout": timeout,
            "drop": drop,
        }
        if any(not 0.0 <= r <= 1.0 for r in rates.values()) or sum(rates.values()) > 1.0:
            raise ValueError("Fault rates must be between 0 and 1 and add up to at most 1.")
        with self._lock:
            self._rates = {k: float(v) for k, v in rates.items() if v}
            self._random = random.Random(seed)

    @property
    def rates(self) -> dict[str, float]:
        with self._lock:
            return dict(self._rates)

    def draw(self, endpoint: str) -> Fault | None:
        """The fault for the next request to ``endpoint``, if any (queued faults first)."""
        with self._lock:
            for queued in self._queue:
                if queued.fault.endpoint in (None, endpoint):
                    queued.remaining -= 1
                    if queued.remaining <= 0:
                        self._queue.remove(queued)
                    return queued.fault
            if not self._rates:
                return None
            roll = self._random.random()
            for name, rate in self._rates.items():
                if roll < rate:
                    return self._random_fault(name)
                roll -= rate
        return None

    def _random_fault(self, name: str) -> Fault:
        if name == "server_error":
            return Fault("status", status=self._random.choice(SERVER_ERROR_STATUSES))
        if name == "rate_limit":
            return Fault("status", status=429)
        return Fault(name)

    def reset(self) -> None:
        with self._lock:
            self._queue.clear()
            self._rates = {}
            self.latency = self._initial_latency
