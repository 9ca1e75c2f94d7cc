"""The documentation says what the code does: every setting, status, event, sandbox outcome,
beat entry and command is documented; the README keeps its two commands and its links work;
the sandbox page's example tests pass; and the site builds with ``mkdocs build --strict``."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import MISSING, fields
from pathlib import Path

import pytest

from django_paubox.conf import KNOWN_KEYS, PauboxSettings
from django_paubox.sandbox.outcomes import LOCAL_PARTS, OUTCOMES
from django_paubox.tracking.statuses import DELIVERY_STATUS_STRINGS, WEBHOOK_EVENT_NAMES, Status

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


def read(name: str) -> str:
    return (DOCS / name).read_text(encoding="utf-8")


def glance_rows(text: str) -> dict[str, str]:
    """``configuration.md``'s summary table: key -> its whole row."""
    rows = {}
    for line in text.splitlines():
        match = re.match(r"\| \[`([A-Z_]+)`\]\(#[a-z_]+\) \|", line)
        if match:
            rows[match.group(1)] = line
    return rows


def test_every_setting_has_a_section_and_a_row():
    text = read("configuration.md")
    sections = set(re.findall(r"^### `([A-Z_]+)`$", text, re.MULTILINE))
    rows = glance_rows(text)
    keys = {f.name.upper() for f in fields(PauboxSettings)} | {"DOMAINS"}
    assert keys <= KNOWN_KEYS
    assert sorted(keys - sections) == [], "settings without a section in configuration.md"
    assert sorted(sections - KNOWN_KEYS) == [], "documented settings that do not exist"
    assert sorted(KNOWN_KEYS - set(rows)) == [], "settings missing from the summary table"


def _documented_default(value: object) -> str | None:
    """How a default is spelled in the summary table (None: described in words)."""
    if value is None:
        return "`None`"
    if value in ("", ()):
        return None
    if isinstance(value, str):
        return f'"{value}"'
    return f"`{value!r}`"


def test_documented_defaults_match_the_code():
    rows = glance_rows(read("configuration.md"))
    for f in fields(PauboxSettings):
        if f.default is MISSING:
            continue
        expected = _documented_default(f.default)
        if expected is not None:
            row = rows.get(f.name.upper(), "")
            assert expected in row, f"{f.name.upper()}: default {expected} not in {row!r}"


def test_every_paubox_status_string_and_event_is_documented():
    text = read("statuses.md")
    for raw in DELIVERY_STATUS_STRINGS:
        assert f"`{raw}`" in text, raw
    for event in WEBHOOK_EVENT_NAMES:
        assert f"event `{event}`" in text, event
    for status in Status.values:
        assert f"| `{status}` |" in text, status


def test_every_sandbox_outcome_is_documented():
    text = read("sandbox.md")
    for local_part in LOCAL_PARTS:
        assert f"`{local_part}@`" in text, local_part
    for outcome in OUTCOMES:
        assert f"`{outcome}`" in text, outcome


def test_every_beat_entry_and_task_is_documented():
    pytest.importorskip("celery")
    from django_paubox import tasks
    from django_paubox.beat import BEAT_SCHEDULE

    text = read("celery.md")
    for name, entry in BEAT_SCHEDULE.items():
        assert f"`{name}`" in text, name
        assert f"`{entry['task']}`" in text, entry["task"]
    for task in (tasks.send_queued, tasks.sweep_outbox, tasks.refresh_receipts, tasks.purge):
        assert f"`{task.name}(" in text, task.name


def test_every_management_command_is_documented():
    commands = sorted(
        p.stem
        for p in (ROOT / "django_paubox" / "management" / "commands").glob("*.py")
        if not p.stem.startswith("_")
    )
    assert commands
    text = read("commands.md")
    for command in commands:
        assert f"## `{command}`" in text, command


def test_readme_keeps_its_two_commands_and_its_links_work():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "bash example_project/run.sh" in readme
    assert "bash .ci/run" in readme
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", readme)
    local = [link for link in links if not re.match(r"[a-z]+:", link)]
    assert local
    for link in local:
        assert (ROOT / link).exists(), f"README links to {link}, which does not exist"


def test_every_docs_page_is_in_the_nav():
    mkdocs_yml = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    for page in DOCS.glob("*.md"):
        assert f" {page.name}" in mkdocs_yml, f"{page.name} is not in mkdocs.yml's nav"


def _plugin_args() -> list[str]:
    """The opt-in docs/sandbox.md shows (-p), with the name of the pytest11 entry point an older
    install of django-paubox still carries blocked: pytest would refuse the module twice."""
    return ["-p", "no:django_paubox", "-p", "django_paubox.sandbox.pytest_plugin"]


def _first_python_block(text: str, heading: str) -> str:
    return re.findall(r"```python\n(.*?)```", text.split(heading, 1)[1], re.DOTALL)[0]


def test_the_sandbox_pages_example_tests_pass(tmp_path):
    """The tests a user would copy from docs/sandbox.md (pytest and unittest styles), run as a
    user's project would."""
    text = read("sandbox.md")
    (tmp_path / "test_from_the_docs.py").write_text(
        _first_python_block(text, "## The pytest fixture"), encoding="utf-8"
    )
    (tmp_path / "test_from_the_docs_unittest.py").write_text(
        _first_python_block(text, "## For `unittest`"), encoding="utf-8"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO_PAUBOX_")}
    env.update(DJANGO_SETTINGS_MODULE="tests.settings", PYTHONPATH=str(ROOT))  # SQLite
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "--rootdir",
            str(tmp_path),
            *_plugin_args(),
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "5 passed" in result.stdout, result.stdout


@pytest.mark.docs
def test_the_site_builds_strictly(tmp_path):
    pytest.importorskip("mkdocs", reason="the docs extra is not installed")
    pytest.importorskip("material", reason="mkdocs-material is not installed")
    pytest.importorskip("mkdocstrings", reason="mkdocstrings is not installed")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    for page in ("index.html", "configuration/index.html", "api/index.html"):
        assert (tmp_path / page).is_file(), page
    html = (tmp_path / "index.html").read_text(encoding="utf-8")
    assert "fonts.googleapis.com" not in html  # builds and serves offline
