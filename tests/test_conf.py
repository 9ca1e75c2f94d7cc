"""Settings: env fallbacks, laziness, validation, and the system checks."""

from __future__ import annotations

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from django_paubox.checks import check_paubox_settings
from django_paubox.conf import get_settings
from django_paubox.exceptions import PauboxConfigError
from tests.mailers import CELERY, DJANGO_61, default_connection, use_backend

BACKEND = "django_paubox.backends.PauboxEmailBackend"


@pytest.fixture(autouse=True)
def _no_env(monkeypatch):
    for name in ("PAUBOX_API_KEY", "PAUBOX_API_USERNAME", "PAUBOX_API_URL"):
        monkeypatch.delenv(name, raising=False)


def test_documented_endpoint_and_token_auth_by_default():
    with override_settings(PAUBOX={"API_KEY": "k1", "API_USERNAME": "clinic"}):
        conf = get_settings()
    assert conf.base_url == "https://api.paubox.net/v1/clinic"
    assert conf.authorization == "Token token=k1"


def test_bearer_and_newer_url_without_username():
    with override_settings(
        PAUBOX={
            "API_KEY": "k1",
            "API_URL": "https://api.paubox.com/v1/email",
            "AUTH_SCHEME": "bearer",
        }
    ):
        conf = get_settings()
        conf.require_credentials()
    assert conf.base_url == "https://api.paubox.com/v1/email"
    assert conf.authorization == "Bearer k1"


def test_environment_fallbacks(monkeypatch):
    monkeypatch.setenv("PAUBOX_API_KEY", "from-env")
    monkeypatch.setenv("PAUBOX_API_USERNAME", "env-user")
    monkeypatch.setenv("PAUBOX_API_URL", "http://127.0.0.1:8025/v1/")
    with override_settings(PAUBOX={}):
        conf = get_settings()
    assert conf.api_key == "from-env"
    assert conf.base_url == "http://127.0.0.1:8025/v1/env-user"


def test_settings_win_over_environment(monkeypatch):
    monkeypatch.setenv("PAUBOX_API_KEY", "from-env")
    with override_settings(PAUBOX={"API_KEY": "from-settings"}):
        assert get_settings().api_key == "from-settings"


def test_read_lazily_so_override_settings_works():
    with override_settings(PAUBOX={"API_KEY": "a", "API_USERNAME": "u", "BATCH_SIZE": 10}):
        assert get_settings().batch_size == 10
    with override_settings(PAUBOX={"API_KEY": "a", "API_USERNAME": "u"}):
        assert get_settings().batch_size == 50


def test_repr_never_shows_the_key():
    with override_settings(PAUBOX={"API_KEY": "sekrit-key-123", "WEBHOOK_SECRET": "hook-sekrit"}):
        text = repr(get_settings())
    assert "sekrit-key-123" not in text
    assert "hook-sekrit" not in text


@pytest.mark.parametrize(
    ("paubox", "named"),
    [
        ({"API_USERNAME": "u"}, 'PAUBOX["API_KEY"]'),
        ({"API_KEY": "k"}, 'PAUBOX["API_USERNAME"]'),
    ],
)
def test_missing_credentials_name_the_setting(paubox, named, settings):
    settings.PAUBOX = paubox
    use_backend(settings, BACKEND)
    with pytest.raises(ImproperlyConfigured) as info:
        default_connection()
    assert named in str(info.value)
    errors = [m for m in check_paubox_settings() if m.id == "django_paubox.E002"]
    assert len(errors) == 1 and named in errors[0].msg


@pytest.mark.parametrize(
    "paubox",
    [
        {"AUTH_SCHEME": "Basic"},
        {"TIMEOUT": "soon"},
        {"TIMEOUT": -1},
        {"BATCH_SIZE": 51},
        {"BATCH_SIZE": 0},
        {"MAX_RECIPIENTS": "many"},
    ],
)
def test_invalid_values_are_config_errors(paubox):
    with override_settings(PAUBOX={"API_KEY": "k", "API_USERNAME": "u", **paubox}):
        with pytest.raises(PauboxConfigError) as info:
            get_settings()
        key = next(iter(paubox))
        assert key in str(info.value)
        assert [m.id for m in check_paubox_settings()] == ["django_paubox.E001"]


def test_timeout_accepts_a_number_or_a_pair():
    with override_settings(PAUBOX={"TIMEOUT": 7}):
        assert get_settings().timeout == (7.0, 7.0)
    with override_settings(PAUBOX={"TIMEOUT": (2, 9)}):
        assert get_settings().timeout == (2.0, 9.0)


def test_check_warns_on_unknown_keys_and_short_secret_and_non_tls():
    with override_settings(
        PAUBOX={
            "API_KEY": "k",
            "API_USERNAME": "u",
            "API_KYE": "typo",
            "WEBHOOK_SECRET": "short",
            "ALLOW_NON_TLS": True,
        }
    ):
        ids = {m.id: m for m in check_paubox_settings()}
    assert "API_KYE" in ids["django_paubox.W001"].msg
    assert "django_paubox.W002" in ids
    assert "django_paubox.W003" in ids


def test_check_warns_when_a_send_could_outlast_the_stale_clock():
    base = {"API_KEY": "k", "API_USERNAME": "u", "TIMEOUT": (5, 30)}
    with override_settings(PAUBOX={**base, "OUTBOX_STALE_SECONDS": 60}):
        found = {m.id: m for m in check_paubox_settings()}
    assert "35 s" in found["django_paubox.W006"].msg
    with override_settings(PAUBOX={**base, "OUTBOX_STALE_SECONDS": 70}):
        assert "django_paubox.W006" not in {m.id for m in check_paubox_settings()}
    with override_settings(PAUBOX={"API_KEY": "k", "API_USERNAME": "u"}):  # the defaults
        assert "django_paubox.W006" not in {m.id for m in check_paubox_settings()}


def test_check_reports_unset_webhook_secret_and_accepts_a_list():
    with override_settings(PAUBOX={"API_KEY": "k", "API_USERNAME": "u"}):
        assert "django_paubox.I001" in {m.id for m in check_paubox_settings()}
    with override_settings(PAUBOX={"WEBHOOK_SECRET": ["a" * 32, "b" * 32]}):
        conf = get_settings()
        assert conf.webhook_secret == ("a" * 32, "b" * 32)
        assert not [m for m in check_paubox_settings() if m.id.startswith("django_paubox.I")]


def test_paubox_must_be_a_dict():
    with override_settings(PAUBOX="k"):
        with pytest.raises(PauboxConfigError):
            get_settings()


@pytest.mark.skipif(not DJANGO_61, reason="MAILERS is Django 6.1's")
def test_check_finds_our_backend_in_django_61_mailers(settings):
    settings.PAUBOX = {}
    use_backend(settings, "x.Other", billing={"BACKEND": CELERY})
    errors = [m for m in check_paubox_settings() if m.id == "django_paubox.E002"]
    assert [e.msg.split(":")[0] for e in errors] == ['MAILERS["billing"]']
    use_backend(settings, "x.Other")
    assert "django_paubox.E002" not in {m.id for m in check_paubox_settings()}
