"""The CLI reads the environment once, its flags win, and a bad value stops it in one line."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT
from worker.cli import build_parser
from worker.cli_settings import DEFAULT_API_URL, CliSettings
from worker.common.settings import SettingsError
from worker.db import DatabaseNotConfiguredError, TasksDbSettings


def test_defaults_and_values_from_the_environment() -> None:
    assert CliSettings.from_env({}) == CliSettings()
    assert CliSettings().api_url == DEFAULT_API_URL
    settings = CliSettings.from_env({
        "TRIGGER_API_URL": "http://api:1", "TRIGGER_PORT": "0", "PORT": "8080",
        "TRIGGER_API_WAIT": "2.5", "TRIGGER_LOG_FORMAT": "JSON", "TRIGGER_VERBOSE": "yes",
        "TRIGGER_CONFIG_DIR": "/tmp/x", "DATABASE_URL": " postgresql://db ",
    })
    assert (settings.api_url, settings.dev_port, settings.api_port, settings.api_wait) == (
        "http://api:1", 0, 8080, 2.5)
    assert settings.log_format == "json" and settings.verbose
    assert settings.profiles_dir() == Path("/tmp/x")
    assert settings.database_url == "postgresql://db"


@pytest.mark.parametrize(("name", "value", "says"), [
    ("TRIGGER_PORT", "30x", "whole number"),
    ("PORT", "-1", "at least 0"),
    ("TRIGGER_API_WAIT", "soon", "a number"),
    ("TRIGGER_LOG_FORMAT", "xml", "one of text, json"),
    ("TRIGGER_VERBOSE", "maybe", "1/true/yes/on"),
])
def test_a_bad_value_names_the_variable(name: str, value: str, says: str) -> None:
    with pytest.raises(SettingsError, match=f"{name} must be .*{says}"):
        CliSettings.from_env({name: value})


def test_flags_win_over_the_environment() -> None:
    env = CliSettings.from_env({"TRIGGER_PORT": "4000", "TRIGGER_API_WAIT": "9", "PORT": "81"})
    args = build_parser().parse_args(["dev", "--port", "5000"])
    assert env.with_flags(args).dev_port == 5000
    args = build_parser().parse_args(["worker"])
    assert env.with_flags(args).api_wait == 9.0  # no flag: the environment's
    args = build_parser().parse_args(["api", "--port", "82", "--log-format", "json"])
    both = env.with_flags(args)
    assert (both.api_port, both.log_format, both.dev_port) == (82, "json", 4000)
    assert env.with_flags(argparse.Namespace(unrelated=1)) == env


def test_the_command_stops_in_one_line_naming_the_variable(tmp_path: Path) -> None:
    env = {**os.environ, "TRIGGER_API_WAIT": "a minute", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-P", "-m", "worker", "init", str(tmp_path)],
                          env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 1
    assert done.stderr.strip() == (
        "trigger init: TRIGGER_API_WAIT must be a number, got 'a minute'")
    assert not list(tmp_path.iterdir())  # nothing was done


def test_the_tasks_pool_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TASKS_DATABASE_URL", raising=False)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    with pytest.raises(DatabaseNotConfiguredError):
        TasksDbSettings.from_env()
    monkeypatch.setenv("DATABASE_URL", "postgresql://engine")
    assert TasksDbSettings.from_env() == TasksDbSettings("postgresql://engine", 4)
    monkeypatch.setenv("TASKS_DATABASE_URL", "postgresql://tasks")
    monkeypatch.setenv("TASKS_DB_POOL_MAX", "0")
    with pytest.raises(SettingsError, match="TASKS_DB_POOL_MAX must be at least 1"):
        TasksDbSettings.from_env()
    monkeypatch.setenv("TASKS_DB_POOL_MAX", "7")
    assert TasksDbSettings.from_env() == TasksDbSettings("postgresql://tasks", 7)
