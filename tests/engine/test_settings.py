"""The API process's settings: read once at start; a bad value stops it, naming the variable."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from worker.api.errors import STATUS
from worker.api.settings import Settings
from worker.common.settings import SettingsError
from worker.engine.errors import Kind

BASE = {"DATABASE_URL": "postgresql://127.0.0.1/none"}


def test_defaults() -> None:
    settings = Settings.from_env(BASE)
    assert settings.engine.lease_seconds == 30.0
    assert settings.engine.retention.days == 30 and settings.engine.retention.span_days == 30
    assert settings.auth_failures_per_minute == 60 and settings.metrics_token is None


@pytest.mark.parametrize("name, value", [
    ("TRIGGER_LEASE_SECONDS", "soon"),
    ("TRIGGER_SPAN_RETENTION_DAYS", "-1"),
    ("TRIGGER_SMTP_PORT", "twenty-five"),
    ("TRIGGER_SMTP_STARTTLS", "maybe"),
    ("TRIGGER_AUTH_FAILURES_PER_MINUTE", "lots"),
    ("TRIGGER_MAX_SSE_PER_ENV", "0"),
    ("TRIGGER_CRON_MAX_SLEEP", "nan"),
    ("TRIGGER_LOG_FORMAT", "xml"),
    ("TRIGGER_ENCRYPTION_KEY", "not-a-key"),
])
def test_bad_value_names_the_variable(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name):
        Settings.from_env({**BASE, name: value})


def test_api_process_refuses_to_start() -> None:
    env = {**os.environ, **BASE, "TRIGGER_METRICS_CACHE_SECONDS": "often"}
    done = subprocess.run(
        [sys.executable, "-c", "from worker.api.app import create_app; create_app()"],
        env=env, capture_output=True, text=True, timeout=60,
    )
    assert done.returncode != 0
    assert "TRIGGER_METRICS_CACHE_SECONDS" in done.stderr


def test_every_error_kind_has_a_status() -> None:
    assert set(STATUS) == set(Kind)
