"""The released artefacts: ``python -m build`` makes an sdist and a wheel that ``twine check``
accepts; the wheel holds the whole package (templates, static files, migrations, ``py.typed``)
and nothing else; installed into a clean virtual environment it imports, finds its templates,
static files and commands, and migrates.

Slow (a build in an isolated environment, a venv, a pip install), so marked ``packaging``; it
skips when ``build`` is not installed, and on the PostgreSQL run (the database plays no part).
Run it alone with ``pytest -m packaging tests/test_packaging.py`` or ``tox -e packaging``.
"""

from __future__ import annotations

import email.parser
import os
import subprocess
import sys
import tarfile
import venv
import zipfile
from pathlib import Path

import pytest

import django_paubox

pytest.importorskip("build", reason="`build` is not installed (pip install build)")

pytestmark = [
    pytest.mark.packaging,
    pytest.mark.skipif(
        os.environ.get("DJANGO_PAUBOX_TEST_DB") == "postgres",
        reason="packaging does not depend on the database: checked in the SQLite run",
    ),
]

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "django_paubox"
VERSION = django_paubox.__version__
#: Top-level folders of the repository that must never reach the wheel.
NOT_IN_WHEEL = ("tests/", "example_project/", "bench/", "docs/", ".ci/")


def _run(args: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        args, capture_output=True, text=True, timeout=600, check=False, **kwargs
    )
    shown = " ".join(a if len(a) < 80 else a[:77] + "..." for a in args)
    assert result.returncode == 0, f"{shown} failed:\n{result.stdout}\n{result.stderr}"
    return result


def _source_files() -> set[str]:
    """Every file of the package in the source tree, as wheel paths."""
    return {
        path.relative_to(ROOT).as_posix()
        for path in PACKAGE.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
    }


@pytest.fixture(scope="module")
def dists(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Build once for the module: the sdist, then the wheel from the unpacked sdist (build's
    default), which also proves the sdist holds everything the wheel needs."""
    out = tmp_path_factory.mktemp("dist")
    _run([sys.executable, "-m", "build", "--outdir", str(out), str(ROOT)])
    wheels = list(out.glob("*.whl"))
    sdists = list(out.glob("*.tar.gz"))
    assert len(wheels) == 1, wheels
    assert len(sdists) == 1, sdists
    return {"wheel": wheels[0], "sdist": sdists[0]}


def _wheel_names(wheel: Path) -> set[str]:
    with zipfile.ZipFile(wheel) as archive:
        return set(archive.namelist())


def _wheel_metadata(wheel: Path) -> email.message.Message:
    with zipfile.ZipFile(wheel) as archive:
        text = archive.read(f"django_paubox-{VERSION}.dist-info/METADATA").decode("utf-8")
    return email.parser.Parser().parsestr(text)


def test_version_is_single_sourced(dists: dict[str, Path]) -> None:
    assert dists["wheel"].name == f"django_paubox-{VERSION}-py3-none-any.whl"
    assert dists["sdist"].name == f"django_paubox-{VERSION}.tar.gz"
    assert _wheel_metadata(dists["wheel"])["Version"] == VERSION


def test_twine_accepts_both(dists: dict[str, Path]) -> None:
    pytest.importorskip("twine", reason="`twine` is not installed")
    result = _run([sys.executable, "-m", "twine", "check", "--strict", *map(str, dists.values())])
    assert result.stdout.count("PASSED") == 2, result.stdout


def test_wheel_holds_the_whole_package_and_nothing_else(dists: dict[str, Path]) -> None:
    names = _wheel_names(dists["wheel"])
    package = {n for n in names if not n.startswith(f"django_paubox-{VERSION}.dist-info/")}
    missing = _source_files() - package
    assert not missing, f"not in the wheel: {sorted(missing)}"
    # The parts that are not Python modules, by name, so a refactoring cannot hide their loss.
    assert "django_paubox/py.typed" in package
    assert "django_paubox/static/django_paubox/admin.css" in package
    assert "django_paubox/templates/django_paubox/admin/dashboard.html" in package
    assert "django_paubox/migrations/0001_initial.py" in package
    assert "django_paubox/management/commands/paubox_refresh_receipts.py" in package
    assert "django_paubox/sandbox/pytest_plugin.py" in package
    strays = sorted(n for n in package if not n.startswith("django_paubox/"))
    assert not strays, f"outside the package: {strays}"
    assert not [n for n in names if n.startswith(NOT_IN_WHEEL)]
    assert not [n for n in names if "__pycache__" in n or n.endswith((".pyc", ".pyo"))]


def test_wheel_metadata(dists: dict[str, Path]) -> None:
    metadata = _wheel_metadata(dists["wheel"])
    assert metadata["Name"] == "django-paubox"
    assert metadata["Requires-Python"] == ">=3.10"
    assert metadata["License-Expression"] == "MIT"
    assert metadata["Description-Content-Type"] == "text/markdown"
    classifiers = set(metadata.get_all("Classifier") or [])
    for version in ("3.10", "3.11", "3.12", "3.13"):
        assert f"Programming Language :: Python :: {version}" in classifiers
    for version in ("4.2", "5.2"):
        assert f"Framework :: Django :: {version}" in classifiers
    assert "Typing :: Typed" in classifiers
    requires = metadata.get_all("Requires-Dist") or []
    assert any(r.startswith("Django>=4.2") for r in requires)
    assert {"celery", "test", "docs", "dev"} <= set(metadata.get_all("Provides-Extra") or [])
    # The celery extra brings Celery only: django-celery-results is a recommendation (the package
    # never imports it), kept for the tests.
    extra_requires = {
        extra: sorted(r.split(";")[0].strip() for r in requires if f'extra == "{extra}"' in r)
        for extra in ("celery", "test")
    }
    assert extra_requires["celery"] == ["celery>=5.3"], extra_requires
    assert any(r.startswith("django-celery-results") for r in extra_requires["test"])
    with zipfile.ZipFile(dists["wheel"]) as archive:
        names = archive.namelist()
        entry_points_file = f"django_paubox-{VERSION}.dist-info/entry_points.txt"
        entry_points = archive.read(entry_points_file) if entry_points_file in names else b""
        licenses = [n for n in names if n.endswith("licenses/LICENSE")]
    # The sandbox's pytest plugin is opt-in (-p django_paubox.sandbox.pytest_plugin): no entry
    # point loads it into every test run of every project that installs django-paubox.
    assert b"[pytest11]" not in entry_points
    assert b"pytest_plugin" not in entry_points
    assert licenses, "the LICENSE file is not in the wheel"


def test_sdist_has_what_it_takes_to_test_and_document(dists: dict[str, Path]) -> None:
    with tarfile.open(dists["sdist"]) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    for name in (
        "pyproject.toml",
        "README.md",
        "LICENSE",
        "CHANGELOG.md",
        "tox.ini",
        "mkdocs.yml",
        "docs/index.md",
        "tests/conftest.py",
        "tests/settings.py",
        "django_paubox/templates/django_paubox/admin/dashboard.html",
    ):
        assert name in names, f"{name} is not in the sdist"
    assert not [n for n in names if n.startswith(("example_project/", "bench/", ".ci/"))]
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]


#: Run inside the clean venv, from a folder outside the repository: only the installed wheel can
#: be imported. Prints one line per check, so a failure says which.
_SMOKE = """
import pathlib, sys
import django
from django.conf import settings

settings.configure(
    INSTALLED_APPS=[
        "django.contrib.admin", "django.contrib.auth", "django.contrib.contenttypes",
        "django.contrib.sessions", "django.contrib.messages", "django.contrib.staticfiles",
        "django_paubox",
    ],
    DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
    TEMPLATES=[{"BACKEND": "django.template.backends.django.DjangoTemplates", "APP_DIRS": True}],
    STATIC_URL="/static/",
    USE_TZ=True,
    **(  # Django 6.1 deprecates EMAIL_BACKEND for MAILERS
        {"MAILERS": {"default": {"BACKEND": "django_paubox.backends.PauboxEmailBackend"}}}
        if django.VERSION >= (6, 1)
        else {"EMAIL_BACKEND": "django_paubox.backends.PauboxEmailBackend"}
    ),
    PAUBOX={"API_KEY": "k", "API_USERNAME": "u", "WEBHOOK_SECRET": "s" * 32},
    DEFAULT_AUTO_FIELD="django.db.models.BigAutoField",
)
django.setup()

import django_paubox
location = pathlib.Path(django_paubox.__file__).resolve()
assert "site-packages" in location.parts, location
print("imported", django_paubox.__version__, "from", location.parent)
assert (location.parent / "py.typed").is_file()

from django_paubox import admin, backends, client, conf, models, records, urls
from django_paubox.sending import dispatch, payload
from django_paubox.tracking import statuses, webhook
from django_paubox import sandbox  # the pytest plugin needs pytest: only pytest loads it
print("modules ok")

from django.template.loader import get_template
for name in ("dashboard", "message_change_list", "resend_confirmation"):
    get_template(f"django_paubox/admin/{name}.html")
print("templates ok")

from django.contrib.staticfiles import finders
assert finders.find("django_paubox/admin.css"), "admin.css not found"
print("static ok")

from django.core.management import call_command, get_commands
commands = {n for n, app in get_commands().items() if app == "django_paubox"}
assert {"paubox_refresh_receipts", "paubox_purge", "paubox_sandbox"} <= commands, commands
print("commands ok")

call_command("migrate", verbosity=0)
call_command("makemigrations", "django_paubox", check=True, dry_run=True, verbosity=0)
assert models.Message.objects.count() == 0
print("migrations ok")
"""


def test_wheel_installs_and_works_in_a_clean_venv(dists: dict[str, Path], tmp_path: Path) -> None:
    env = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True, clear=True).create(env)
    python = env / ("Scripts" if os.name == "nt" else "bin") / "python"
    clean_env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "DJANGO"))}
    _run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "-q",
            "--disable-pip-version-check",
            str(dists["wheel"]),
        ],
        env=clean_env,
    )
    work = tmp_path / "elsewhere"
    work.mkdir()
    result = _run([str(python), "-c", _SMOKE], cwd=work, env=clean_env)
    for line in ("modules ok", "templates ok", "static ok", "commands ok", "migrations ok"):
        assert line in result.stdout, result.stdout
    assert f"imported {VERSION}" in result.stdout
    # The sandbox runs from the installed package, without a Django project.
    sandbox = _run([str(python), "-m", "django_paubox.sandbox", "--help"], cwd=work, env=clean_env)
    assert "--processing-seconds" in sandbox.stdout
