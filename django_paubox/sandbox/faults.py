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
from dataclasses import asdict, dataclass, field, fields
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


@dataclass(frozen=True)
class FaultRates:
    """Shares of API requests answered with a random fault, and the seed of the draws.

    The one definition of the fault-rate arguments: ``SandboxServer.set_fault_rates``,
    ``SandboxControl.set_fault_rates``, the control API and the command line all build one.
    Each share is between 0 and 1 and together they add up to at most 1; all zero: no faults.
    """

    #: 500, 502, 503 or 504 (drawn), in Paubox's error shape.
    server_error: float = 0.0
    #: 429 in Paubox's error shape.
    rate_limit: float = 0.0
    #: The answer is held past the client's read timeout (the request *is* processed).
    timeout: float = 0.0
    #: The connection is closed without an answer (nothing processed).
    drop: float = 0.0
    #: Seed of the draws (None: a fresh random sequence).
    seed: int | None = None

    def __post_init__(self) -> None:
        shares = self.shares(nonzero=False).values()
        if any(not 0.0 <= share <= 1.0 for share in shares) or sum(shares) > 1.0:
            raise ValueError("Fault rates must be between 0 and 1 and add up to at most 1.")

    def shares(self, *, nonzero: bool = True) -> dict[str, float]:
        """Fault name -> share, in draw order (by default only the shares that are not 0)."""
        named = {
            "server_error": float(self.server_error),
            "rate_limit": float(self.rate_limit),
            "timeout": float(self.timeout),
            "drop": float(self.drop),
        }
        return {name: share for name, share in named.items() if share or not nonzero}

    def to_dict(self) -> dict[str, Any]:
        """JSON for the control API (``POST /_sandbox/faults {"rates": ...}``)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FaultRates:
        """Read the control API's ``rates``; unknown keys are a ``ValueError``."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"Unknown fault rate(s) {unknown}; choose from {sorted(names)}.")
        seed = data.get("seed")
        return cls(
            **{name: float(data[name] or 0.0) for name in names - {"seed"} if name in data},
            seed=None if seed is None else int(seed),
        )


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

    def set_rates(self, rates: FaultRates) -> None:
        with self._lock:
            self._rates = rates.shares()
            self._random = random.Random(rates.seed)

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
