"""Benchmark results: what each benchmark returns, and the markdown table made from them."""

from __future__ import annotations

import json
import os
import platform
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any


@dataclass
class Row:
    """One line of the table: a measure of ours, the baseline's, their ratio and the target.

    The ratio is the result: the baseline is measured in the same run (the SDK, the physical
    limit, a floor written plainly, stock Django), because absolute figures on a shared
    machine drift by several times from day to day while ratios hold.
    """

    measure: str
    ours: str
    baseline: str = ""
    ratio: str = ""
    target: str = ""
    #: True/False against the target; None when the row has no target.
    met: bool | None = None


@dataclass
class Result:
    key: str
    title: str
    rows: list[Row] = field(default_factory=list)
    #: Supporting numbers and checks, one sentence each.
    details: list[str] = field(default_factory=list)
    #: Correctness numbers for the smoke test (counts, never timings).
    checks: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    error: str | None = None

    def row(self, *args: Any, **kwargs: Any) -> Row:
        row = Row(*args, **kwargs)
        self.rows.append(row)
        return row

    def note(self, text: str) -> None:
        self.details.append(text)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Result:
        rows = [Row(**row) for row in data.get("rows", [])]
        return cls(**{**data, "rows": rows})


def ratio(ours: float, baseline: float) -> str:
    return f"{ours / baseline:.1f}×" if baseline > 0 else "n/a"


def per_second(count: int, seconds: float) -> str:
    return f"{count / seconds:,.0f}/s" if seconds > 0 else "n/a"


def seconds(value: float) -> str:
    return f"{value * 1000:,.0f} ms" if value < 10 else f"{value:,.1f} s"


def _mark(met: bool | None) -> str:
    return "" if met is None else ("yes" if met else "**no**")


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _commit() -> str:
    import subprocess

    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).resolve().parent,
        )
    except OSError:
        return "unknown"
    return out.stdout.strip() or "unknown"


def markdown(results: list[Result], *, mode: str, database: str) -> str:
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# django-paubox benchmarks",
        "",
        f"{when} · commit {_commit()} · {mode} · database: {database} · "
        f"Python {platform.python_version()} · "
        f"{os.cpu_count()} CPUs · sandbox in its own process on loopback",
        "",
        "The ratio is the result: each baseline is measured in the same run. Absolute figures "
        "drift with the machine's load; compare ratios between runs, not milliseconds.",
        "",
        "| Benchmark | Measure | django-paubox | Baseline | Ratio | Target | Met |",
        "|---|---|---:|---:|---:|---|:-:|",
    ]
    for result in results:
        if result.error:
            lines.append(f"| {_cell(result.title)} | error: see below | | | | | **no** |")
            continue
        for index, row in enumerate(result.rows):
            title = _cell(result.title) if index == 0 else ""
            cells = [row.measure, row.ours, row.baseline, row.ratio, row.target, _mark(row.met)]
            lines.append(f"| {title} | " + " | ".join(_cell(c) for c in cells) + " |")
    lines.append("")
    for result in results:
        lines.append(f"### {result.title}")
        lines.append("")
        if result.error:
            lines.append("```")
            lines.append(result.error.strip()[-3000:])
            lines.append("```")
        lines.extend(f"- {text}" for text in result.details)
        lines.append(f"- Took {result.seconds:,.0f} s.")
        lines.append("")
    return "\n".join(lines)


def write(results: list[Result], directory: Path, text: str) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "latest.md").write_text(text, encoding="utf-8")
    data = [result.to_json() for result in results]
    (directory / "latest.json").write_text(json.dumps(data, indent=2), encoding="utf-8")
