"""The `trigger dev` console: one coloured line per run start and finish, and task logs."""

from __future__ import annotations

import re
import sys
import sysconfig
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from rich.console import Console

LEVEL_STYLE = {"debug": "dim", "log": "white", "info": "cyan", "warn": "yellow", "error": "red"}
_FRAME = re.compile(r'File "(?P<file>[^"]+)", line (?P<line>\d+), in (?P<fn>\S+)')
_RETRY_OUTCOMES = {"RETRY_QUEUED", "RETRY_IMMEDIATELY"}
#: frames here are not "where" a task failed: the standard library, installed packages, us
_LIBRARY_DIRS = tuple(
    {sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib", "purelib", "platlib")}
    | {str(Path(__file__).resolve().parent)}
)


#: a markup tag and the backslashes before it (rich's own rule)
_TAG = re.compile(r"(\\*)(\[[a-z#/@][^[]*?])")


def escape(text: str) -> str:
    """``text`` shown as is inside console markup (what ``rich.markup.escape`` does)."""
    def double(match: re.Match[str]) -> str:
        backslashes, tag = match.groups()
        return f"{backslashes}{backslashes}\\{tag}"

    text = _TAG.sub(double, text)
    if text.endswith("\\") and not text.endswith("\\\\"):
        return text + "\\"
    return text


def plain(markup: str) -> str:
    """``markup`` without its style tags, escapes undone (as rich renders it, uncoloured)."""
    def render(match: re.Match[str]) -> str:
        backslashes, tag = match.groups()
        kept, escaped = divmod(len(backslashes), 2)
        return "\\" * kept + (tag if escaped else "")

    return _TAG.sub(render, markup)


class Out(Protocol):
    def print(self, text: str) -> None: ...


class PlainOut:
    """Lines without colour for a stdout that is not a terminal (a container's log, a file):
    rich (~2.8 MiB and 56 modules in every ``trigger worker``) only for a terminal."""

    def print(self, text: str) -> None:
        sys.stdout.write(plain(text) + "\n")
        sys.stdout.flush()


def _is_library(file: str) -> bool:
    return file.startswith(_LIBRARY_DIRS) or "site-packages" in file


def describe_error(error: object) -> str:
    """``Name: first line of the message (at file:line in function)`` for a wire error.

    "Where" is the innermost frame of the task's own code (not the standard library, an
    installed package or this one), else the innermost frame.
    """
    if not isinstance(error, dict):
        return str(error or "")
    name = error.get("name") or error.get("code") or error.get("type") or "Error"
    lines = str(error.get("message") or "").strip().splitlines()
    text = f"{name}: {lines[0]}" if lines else str(name)
    frames = list(_FRAME.finditer(str(error.get("stackTrace") or "")))
    own = [f for f in frames if not _is_library(f["file"])]
    chosen = own or frames
    if chosen:
        frame = chosen[-1]
        text += f" (at {frame['file']}:{frame['line']} in {frame['fn']})"
    return text


class DevConsole:
    def __init__(self, api_url: str, console: Console | None = None) -> None:
        self.api_url = api_url
        self.out: Out
        if console is not None:
            self.out = console
        elif sys.stdout.isatty():
            from rich.console import Console

            self.out = Console(highlight=False, soft_wrap=True)
        else:
            self.out = PlainOut()

    def _stamp(self) -> str:
        return f"[dim]{datetime.now().strftime('%H:%M:%S')}[/dim]"

    def line(self, text: str) -> None:
        self.out.print(f"{self._stamp()} {text}")

    def event(self, event: Mapping[str, object]) -> None:
        """One worker event (a dict the supervisor emits, keyed by ``type``)."""
        kind = event.get("type")
        run = f"[magenta]{escape(str(event.get('run_id', '')))}[/magenta]"
        task = f"[bold]{escape(str(event.get('task_id', '')))}[/bold]"
        if kind == "run_started":
            self.line(f"[blue]▶[/blue] {task} {run} attempt {event.get('attempt', 1)}")
        elif kind == "run_finished":
            self._finished(event, task, run)
        elif kind == "log":
            level = str(event.get("level", "info"))
            style = LEVEL_STYLE.get(level, "white")
            attrs = event.get("attributes") or {}
            extra = f" [dim]{escape(str(attrs))}[/dim]" if attrs else ""
            self.line(
                f"  {task} {run} [{style}]{level.upper():5} {escape(str(event.get('message')))}"
                f"[/{style}]{extra}"
            )
        elif kind == "version_registered":
            tasks = event.get("tasks")
            count = len(tasks) if isinstance(tasks, list) else event.get("task_count", "?")
            self.line(
                f"[green]●[/green] worker ready: version {escape(str(event.get('version')))}"
                f" with {count} task(s)"
            )
        elif kind == "reload_failed":
            self.line("[red]✖ reload failed; the previous version keeps serving:[/red]")
            self.out.print(escape(str(event.get("error", ""))))
        elif kind in ("discovery_warning", "warning", "error"):
            color = "red" if kind == "error" else "yellow"
            self.line(f"[{color}]⚠ {escape(str(event.get('message', '')))}[/{color}]")
        elif kind == "ready":
            self.line(f"[green]●[/green] {event.get('concurrency', '?')} warm executor(s)")
        elif kind == "reloading":
            changed = event.get("files")
            files = ", ".join(str(f) for f in changed) if isinstance(changed, list) else ""
            self.line(f"[dim]↻ change detected: {escape(files)}[/dim]")
        elif kind == "reloaded":
            self.line(f"[green]↻[/green] reloaded: version {escape(str(event.get('version')))} "
                      f"warm in {event.get('ms', '?')} ms")
        elif kind == "run_suspended":
            self.line(f"[cyan]⏸[/cyan] {task} {run} waiting (checkpointed: no process held)")
        elif kind == "run_lost":
            reason = event.get("reason") or "canceled"
            self.line(f"[yellow]■[/yellow] {task} {run} stopped: {escape(str(reason))}")
        elif kind in ("stopping", "stopping_now"):
            now = " now" if kind == "stopping_now" else ""
            self.line(f"stopping{now}: {event.get('running', 0)} run(s) in flight")
        elif kind == "stopped":
            self.line("stopped")
        else:
            self.line(f"[dim]{escape(str(event))}[/dim]")

    def _finished(self, event: Mapping[str, object], task: str, run: str) -> None:
        ok = event.get("ok")
        duration = event.get("duration_ms")
        took = f" in {duration:.0f} ms" if isinstance(duration, int | float) else ""
        if ok:
            status = event.get("status") or "COMPLETED"
            self.line(f"[green]✔[/green] {task} {run} {escape(str(status))}{took}")
            return
        error = escape(describe_error(event.get("error")))
        if event.get("outcome") in _RETRY_OUTCOMES:
            number = event.get("attempt")
            attempt = number if isinstance(number, int) else 1
            delay = event.get("retry_delay_ms")
            when = f" in {delay / 1000:.1f} s" if isinstance(delay, int | float) else ""
            of = f"/{event['max_attempts']}" if event.get("max_attempts") else ""
            self.line(f"[yellow]↻[/yellow] {task} {run} attempt {attempt} failed{took}: "
                      f"[yellow]{error}[/yellow]; retrying{when} (attempt {attempt + 1}{of})")
            return
        status = event.get("status") or "FAILED"
        self.line(f"[red]✖[/red] {task} {run} {escape(str(status))}{took}: [red]{error}[/red]")
