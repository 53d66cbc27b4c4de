"""``trigger runs list``, ``trigger runs show RUN_ID`` and ``trigger logs RUN_ID [--follow]``.

They read the API with the environment's key (``TRIGGER_API_URL``, ``TRIGGER_SECRET_KEY``):
``runs show`` prints the run's status, attempts, output or error and a text waterfall of its
trace (docs/api.md, "Traces").
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from worker.cli_settings import CliSettings

if TYPE_CHECKING:
    from worker.cli_settings import Formatter, SubParsers
    from worker.sdk.runs import Run

FINAL = {"COMPLETED", "FAILED", "CRASHED", "SYSTEM_FAILURE", "CANCELED", "EXPIRED", "TIMED_OUT"}
BAR_WIDTH = 40


def add_commands(sub: SubParsers, formatter: Formatter = argparse.HelpFormatter) -> None:
    runs = sub.add_parser("runs", help="list runs, show one (TRIGGER_API_URL, TRIGGER_SECRET_KEY)",
                          formatter_class=formatter)
    runs_sub = runs.add_subparsers(dest="runs_command", required=True, metavar="COMMAND")
    listing = runs_sub.add_parser("list", help="the newest runs of the environment",
                                  formatter_class=formatter)
    listing.add_argument("--status", default=None, help="e.g. FAILED or COMPLETED,CRASHED")
    listing.add_argument("--task", default=None, help="only this task's runs")
    listing.add_argument("--limit", type=int, default=20, help="how many runs")
    listing.set_defaults(func=cmd_runs_list)
    show = runs_sub.add_parser("show", help="a run: status, attempts, output, trace waterfall",
                               formatter_class=formatter)
    show.add_argument("run_id", help="the run's id (run_…)")
    show.set_defaults(func=cmd_runs_show)
    logs = sub.add_parser("logs", help="a run's logs (TRIGGER_API_URL, TRIGGER_SECRET_KEY)",
                          formatter_class=formatter)
    logs.add_argument("run_id", help="the run's id (run_…)")
    logs.add_argument("--follow", "-f", action="store_true", help="until the run finishes")
    logs.add_argument("--level", default=None, choices=("debug", "info", "warn", "error"),
                      help="this level and above")
    logs.set_defaults(func=cmd_logs)


def _fail(exc: Exception) -> SystemExit:
    return SystemExit(f"error: {exc}")


def cmd_runs_list(args: argparse.Namespace, _: CliSettings) -> int:
    from worker.sdk.errors import ApiError
    from worker.sdk.runs import runs

    async def fetch() -> list[Run]:
        return [run async for run in runs.list(status=args.status, task_identifier=args.task,
                                               limit=args.limit)]

    try:
        found = asyncio.run(fetch())
    except ApiError as exc:
        raise _fail(exc) from None
    for run in found:
        created = run.created_at.strftime("%Y-%m-%d %H:%M:%S") if run.created_at else "-"
        print(f"{run.id}  {run.status:<15} {run.task_identifier:<30} {created}")
    if not found:
        print("no runs")
    return 0


def _duration(ms: float) -> str:
    return f"{ms / 1000:.2f}s" if ms >= 1000 else f"{ms:.1f}ms"


@dataclass(frozen=True)
class Span:
    """One span of a run's trace (``GET /api/v1/runs/{id}/trace``, docs/api.md "Traces")."""

    message: str
    start: datetime
    duration_ms: float
    is_error: bool
    is_partial: bool
    #: ``(level, message)`` of the log records in the span
    logs: tuple[tuple[str, str], ...]
    children: tuple[Span, ...]

    @classmethod
    def from_api(cls, node: Mapping[str, Any]) -> Span:
        data = node["data"]
        return cls(str(node["message"]), datetime.fromisoformat(data["startTime"]),
                   float(data["durationMs"]), bool(data["isError"]), bool(data["isPartial"]),
                   tuple((str(log["level"]), str(log["message"]))
                         for log in data.get("logs") or []),
                   tuple(cls.from_api(child) for child in node["children"]))


def waterfall(root: Span) -> list[str]:
    """The trace as text: one line per span, indented by depth, with a time bar."""
    total = max(root.duration_ms, 0.001)
    lines: list[str] = []
    stack = [(root, 0)]
    while stack:
        span, depth = stack.pop()
        offset = (span.start - root.start).total_seconds() * 1000
        left = min(BAR_WIDTH - 1, max(0, int(offset / total * BAR_WIDTH)))
        width = max(1, min(BAR_WIDTH - left, round(span.duration_ms / total * BAR_WIDTH)))
        bar = " " * left + ("!" if span.is_error else "=") * width
        mark = " ERROR" if span.is_error else (" …" if span.is_partial else "")
        label = ("  " * depth + span.message)[:48]
        lines.append(f"{label:<48} |{bar:<{BAR_WIDTH}}| {_duration(span.duration_ms)}{mark}")
        for level, message in span.logs:
            lines.append(f"{'  ' * (depth + 1)}· [{level}] {message}"[:120])
        stack.extend((c, depth + 1) for c in reversed(span.children))
    return lines


def cmd_runs_show(args: argparse.Namespace, _: CliSettings) -> int:
    from worker.sdk.errors import ApiError
    from worker.sdk.runs import runs

    async def fetch() -> tuple[Run, Mapping[str, Any]]:
        return await runs.retrieve(args.run_id), await runs.retrieve_trace(args.run_id)

    try:
        run, trace = asyncio.run(fetch())
    except ApiError as exc:
        raise _fail(exc) from None
    print(f"run      {run.id}")
    print(f"task     {run.task_identifier}")
    print(f"status   {run.status}")
    print(f"attempts {run.attempt_count}")
    if run.error:
        print(f"error    {run.error.get('message') or run.error}")
    elif run.status == "COMPLETED":
        print(f"output   {json.dumps(run.output, default=str)[:500]}")
    print(f"trace    {trace['traceId']}")
    print()
    for line in waterfall(Span.from_api(trace["rootSpan"])):
        print(line)
    return 0


def _print_log(line: Mapping[str, Any]) -> None:
    stamp = (line.get("time") or "")[11:23]
    attributes = f" {json.dumps(line['attributes'])}" if line.get("attributes") else ""
    print(f"{stamp} {line['level'].upper():<5} {line['message']}{attributes}", flush=True)


def cmd_logs(args: argparse.Namespace, _: CliSettings) -> int:
    from worker.sdk.errors import ApiError
    from worker.sdk.runs import runs

    async def follow() -> None:
        after: str | None = None
        while True:
            done = (await runs.retrieve(args.run_id)).status in FINAL if args.follow else True
            lines = await runs.logs(args.run_id, level=args.level, after=after)
            for line in lines:
                _print_log(line)
            if lines:
                after = lines[-1]["id"]
            if done:  # read once more after the final status: nothing is left behind
                return
            await asyncio.sleep(1.0)

    try:
        asyncio.run(follow())
    except ApiError as exc:
        raise _fail(exc) from None
    except KeyboardInterrupt:
        sys.stdout.flush()
    return 0
