"""The CLI explains itself, and the dev console says what happened to a run (issue 12)."""

from __future__ import annotations

import argparse
import io
import subprocess
import sys
import sysconfig

from rich.console import Console

from tests.conftest import ROOT
from worker.cli import build_parser
from worker.console import DevConsole, describe_error


def _commands(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    found = [parser]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found += _commands(sub)
    return found


def test_every_option_has_help_and_shows_its_default() -> None:
    parser = build_parser()
    assert "`" not in parser.format_help()
    for command in _commands(parser):
        text = command.format_help()
        for action in command._actions:
            if isinstance(action, argparse._HelpAction | argparse._VersionAction):
                continue
            if isinstance(action, argparse._SubParsersAction):
                continue
            assert action.help, f"{command.prog} {action.dest} has no help"
            if action.option_strings and action.default not in (None, False):
                assert f"(default: {action.default})" in " ".join(text.split()), \
                    f"{command.prog} {action.option_strings[0]} hides its default"


def test_version() -> None:
    done = subprocess.run([sys.executable, "-P", "-m", "worker", "--version"], cwd=ROOT,
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0 and done.stdout.startswith("trigger-worker ")


def _console() -> tuple[DevConsole, io.StringIO]:
    out = io.StringIO()
    return DevConsole("http://x", Console(file=out, width=400, color_system=None)), out


ERROR = {
    "type": "BUILT_IN_ERROR", "name": "SmtpError", "message": "connection refused\nmore detail",
    "stackTrace": (
        'Traceback (most recent call last):\n'
        '  File "/x/site-packages/worker/runtime/attempt.py", line 10, in _body\n'
        '  File "/home/ada/app/trigger/emails.py", line 42, in send_email\n'
        f'  File "{sysconfig.get_paths()["stdlib"]}/smtplib.py", line 7, in connect\n'
    ),
}


def test_a_failed_run_prints_its_error_and_where() -> None:
    assert describe_error(ERROR) == (
        "SmtpError: connection refused (at /home/ada/app/trigger/emails.py:42 in send_email)"
    )
    console, out = _console()
    console.event({"type": "run_finished", "run_id": "run_1", "task_id": "send-email",
                   "attempt": 3, "ok": False, "status": "FAILED", "outcome": "RUN_FINISHED",
                   "duration_ms": 12, "error": ERROR, "max_attempts": 3})
    line = out.getvalue()
    assert "send-email run_1 FAILED in 12 ms: SmtpError: connection refused" in line
    assert "more detail" not in line


def test_a_retried_attempt_says_when_and_which_attempt_comes_next() -> None:
    console, out = _console()
    console.event({"type": "run_finished", "run_id": "run_1", "task_id": "send-email",
                   "attempt": 1, "ok": False, "status": "EXECUTING", "outcome": "RETRY_QUEUED",
                   "duration_ms": 5, "error": ERROR, "retry_delay_ms": 2100,
                   "max_attempts": 3})
    assert "retrying in 2.1 s (attempt 2/3)" in out.getvalue()
    assert "FAILED" not in out.getvalue()


def test_the_ready_line_counts_the_tasks() -> None:
    console, out = _console()
    console.event({"type": "version_registered", "version": "20261130.1",
                   "tasks": ["a", "b", "c"], "concurrency": 2})
    assert "version 20261130.1 with 3 task(s)" in out.getvalue()
