"""The benchmarks, in the order they run, with the time each may take at full size."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType


@dataclass(frozen=True)
class Benchmark:
    key: str
    module: str
    #: Seconds after which the harness stops it (full size; quick runs get a fifth).
    timeout: float
    #: Needs PostgreSQL (skipped on SQLite).
    postgres_only: bool = False

    def load(self) -> ModuleType:
        return importlib.import_module(self.module)


BENCHMARKS = (
    Benchmark("statements", "bench.statements", 120),
    Benchmark("single", "bench.single", 300),
    Benchmark("bulk", "bench.bulk", 300),
    Benchmark("receipts", "bench.receipts", 400),
    Benchmark("webhooks", "bench.webhooks", 300, postgres_only=True),
    Benchmark("admin", "bench.admin_pages", 400, postgres_only=True),
    Benchmark("memory", "bench.memory", 600),
    Benchmark("soak", "bench.soak", 600, postgres_only=True),
)
BY_KEY = {b.key: b for b in BENCHMARKS}
