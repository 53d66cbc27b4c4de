"""`trigger worker` writing to a log (not a terminal) prints the console's lines without rich;
they read as rich prints them uncoloured."""

from __future__ import annotations

import io

import pytest
from rich.console import Console
from rich.markup import escape as rich_escape
from rich.markup import render

from worker.console import DevConsole, PlainOut, escape, plain

TEXTS = ["a [b] c", "x\\[dim]y", "ends\\", "[/] [bold]hi[/bold]", "p [red]x[/red] \\\\[ok]",
         "list [1, 2]", "{'a': [x]}", "no tags at all", "[magenta]run_1[/magenta]"]


@pytest.mark.parametrize("text", TEXTS)
def test_escape_and_plain_follow_rich(text: str) -> None:
    assert escape(text) == rich_escape(text)
    markup = f"[dim]{escape(text)}[/dim] [bold]{escape(text)}[/bold]"
    assert plain(markup) == render(markup).plain


EVENTS = [
    {"type": "version_registered", "version": "20261130.1", "tasks": ["a", "b"]},
    {"type": "ready", "concurrency": 2},
    {"type": "run_started", "run_id": "run_[x]", "task_id": "t[1]", "attempt": 1},
    {"type": "run_finished", "run_id": "run_1", "task_id": "t", "ok": False, "status": "FAILED",
     "duration_ms": 3, "error": {"name": "ValueError", "message": "bad [input]"}},
    {"type": "warning", "message": "careful [with] this\\"},
    {"type": "stopped"},
]


def test_a_log_gets_the_lines_a_terminal_gets_without_colour(
        monkeypatch: pytest.MonkeyPatch) -> None:
    ours = io.StringIO()
    monkeypatch.setattr("sys.stdout", ours)  # not a terminal
    console = DevConsole("http://x")
    assert isinstance(console.out, PlainOut)
    theirs = io.StringIO()
    reference = DevConsole("http://x", Console(file=theirs, width=400, color_system=None,
                                               highlight=False, soft_wrap=True))
    for event in EVENTS:
        console.event(event)
        reference.event(event)
    assert ours.getvalue() == theirs.getvalue()
    assert "bad [input]" in ours.getvalue() and "[dim]" not in ours.getvalue()
