"""Run your tasks inside your own tests, with a real ``ctx``, hooks and logger — no server.

```python
from worker.testing import run_task
from trigger.emails import send_email

async def test_send_email():
    result = await run_task(send_email, {"to": "ada@example.com"})
    assert result.ok, result.error
    assert result.output == {"sent": True}
    assert "sent" in result.messages
```

The attempt runs exactly as in a worker executor: payload parsing (``schema_task``), the
middleware chain, ``init``/``on_start``/``on_start_attempt``, ``run``, ``catch_error`` and the
retry decision, ``on_success``/``on_failure``/``on_complete``/``cleanup``, per-run ``locals``,
``current_context()``, the logger and ``print`` capture, ``log_level`` and ``max_duration``
(``MaxDurationExceededError`` is raised inside the task; this uses ``SIGALRM``, so call it from
the main thread). Global hooks come from ``config``: pass your ``trigger_config.config``, or the
project folder to load it from.

``retries=True`` keeps running attempts while the retry decision says so (without waiting the
delays), like the engine would; ``result.attempts`` says how many ran. ``run_task_sync`` is the
same for tests without an event loop.
"""

from __future__ import annotations

import asyncio
import sys
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from worker.common.conventions import CONFIG_FILE, task_queue_name
from worker.common.machines import DEFAULT_MACHINE
from worker.common.protocol import (
    AttemptInfo,
    DequeuedRun,
    EnvironmentInfo,
    MachineInfo,
    ProjectInfo,
    RunContext,
    RunInfo,
    TaskInfo,
    Wire,
)
from worker.common.serialization import dumps, loads
from worker.sdk.config import Config
from worker.sdk.task import Task

__all__ = ["LogRecord", "TaskResult", "run_task", "run_task_sync"]


@dataclass
class LogRecord:
    level: str
    message: str
    attributes: dict[str, Any]
    time: str
    attempt: int


@dataclass
class TaskResult:
    """The outcome of the last attempt (and the logs of all of them)."""

    ok: bool
    output: Any
    #: the wire error (``{"type": "BUILT_IN_ERROR", "name", "message", "stackTrace"}``, or
    #: ``{"type": "INTERNAL_ERROR", "code", ...}`` for timeouts, bad input, OOM...)
    error: dict[str, Any] | None
    retry_delay_ms: int | None
    skipped_retrying: bool
    attempts: int
    run_id: str
    logs: list[LogRecord] = field(default_factory=list)
    #: the raw completion message the worker would send to the engine
    completion: dict[str, Any] = field(default_factory=dict)

    @property
    def messages(self) -> list[str]:
        return [r.message for r in self.logs]

    @property
    def error_code(self) -> str | None:
        return (self.error or {}).get("code")

    def will_retry(self) -> bool:
        return not self.ok and self.retry_delay_ms is not None


class _Collector:
    def __init__(self, echo: bool) -> None:
        self.records: list[LogRecord] = []
        self.echo = echo

    def send(self, message: dict[str, Any]) -> None:
        if message.get("type") != "log":
            return
        record = LogRecord(str(message["level"]), str(message["message"]),
                           dict(message.get("attributes") or {}), str(message["time"]),
                           int(message["attempt_number"]))
        self.records.append(record)
        if self.echo and sys.__stderr__ is not None:
            sys.__stderr__.write(f"[{record.level}] {record.message} {record.attributes or ''}\n")


def _config(config: Config | str | Path | None) -> Config:
    if isinstance(config, Config):
        return config
    if config is None:
        return Config(project="test")
    from worker.runtime.discovery import load_config

    folder = Path(config).resolve()
    # "." from a test folder: the nearest folder upwards that has the config (the project root)
    found = next((f for f in (folder, *folder.parents) if (f / CONFIG_FILE).is_file()), folder)
    return load_config(found)


def _merge(base: Wire, extra: Wire) -> Wire:
    out = dict(base)
    for key, value in extra.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(
            out.get(key), dict) else value
    return out


_ENV_TYPES = {"dev": "DEVELOPMENT", "prod": "PRODUCTION", "staging": "STAGING"}


def _run(task: Task, payload: object, config: Config, *, run_id: str, attempt: int,
         max_attempts: int | None, machine: str | None, max_duration: float | None,
         tags: list[str], environment: str) -> DequeuedRun:
    """The run as a worker would lease it (docs/protocol.md), outside any worker: no lease,
    no journal, no ``ctx.worker``."""
    data, data_type = dumps(payload)
    retry = dict(task.retry or config.retries.default or {})
    if max_attempts is not None:
        retry["max_attempts"] = max_attempts
    total = int(retry.get("max_attempts") or 1)
    machine = machine or task.machine or config.machine or DEFAULT_MACHINE
    now = datetime.now(UTC).isoformat()
    ctx = RunContext(
        run=RunInfo(id=run_id, tags=tags, created_at=now, started_at=now, idempotency_key=None,
                    max_attempts=total, version="test", max_duration=max_duration, priority=0,
                    is_test=True, parent_task_run_id=None, root_task_run_id=None, metadata={}),
        attempt=AttemptInfo(attempt, now),
        task=TaskInfo(task.id, task.source[0]),
        queue=task.queue.name if task.queue else task_queue_name(task.id),
        environment=EnvironmentInfo("env_test", environment,
                                    _ENV_TYPES.get(environment, "DEVELOPMENT")),
        project=ProjectInfo("proj_test", config.project),
        machine=MachineInfo.preset(machine),
    )
    return DequeuedRun(run_id=run_id, attempt_number=attempt, task_id=task.id,
                       version_id="test", version="test", payload=data, payload_type=data_type,
                       max_attempts=total, retry=retry, max_duration=max_duration,
                       machine=machine, ctx=ctx, is_final_attempt=attempt >= total)


async def run_task(task: Task, payload: Any = None, *, config: Config | str | Path | None = None,
                   attempt: int = 1, max_attempts: int | None = None, retries: bool = False,
                   machine: str | None = None, max_duration: float | None = None,
                   tags: list[str] | None = None, environment: str = "dev",
                   ctx: dict[str, Any] | None = None, echo_logs: bool = False) -> TaskResult:
    """Run ``task`` with ``payload`` in this process and return how its attempt ended.

    ``attempt`` / ``max_attempts`` place the attempt in the retry sequence (``on_start`` runs
    only for attempt 1, ``on_failure`` only for the last); ``ctx`` overrides any context field
    (``ctx={"run": {"tags": ["vip"]}}``); ``echo_logs`` also prints the records to stderr.
    """
    from worker.runtime.discovery import Discovered
    from worker.runtime.executor import run_attempt

    if not isinstance(task, Task):
        raise TypeError(f"run_task needs a task (made by @task), got {type(task).__name__}")
    cfg = _config(config)
    collector = _Collector(echo_logs)
    discovered = Discovered(config=cfg, project_dir=Path.cwd(), tasks={task.id: task},
                            manifest=[], content_hash="")
    run_id = f"run_test_{uuid.uuid4().hex[:12]}"
    number = attempt
    while True:
        run = _run(task, payload, cfg, run_id=run_id, attempt=number,
                   max_attempts=max_attempts, machine=machine, max_duration=max_duration,
                   tags=list(tags or []), environment=environment)
        message = run.to_wire()
        if ctx:  # the caller's overrides of any context field
            message["ctx"] = _merge(message["ctx"], ctx)
        completion = (await run_attempt(message, discovered, collector)).wire()
        delay = (completion.get("retry") or {}).get("delay_ms")
        if retries and not completion["ok"] and delay is not None and not run.is_final_attempt:
            number += 1
            continue
        break
    ok = bool(completion["ok"])
    output = loads(completion.get("output"), completion.get("output_type") or
                   "application/json") if ok else None
    return TaskResult(ok=ok, output=output, error=None if ok else completion.get("error"),
                      retry_delay_ms=delay, skipped_retrying=bool(
                          completion.get("skipped_retrying")),
                      attempts=number - attempt + 1, run_id=run_id, logs=collector.records,
                      completion=completion)


def run_task_sync(task: Task, payload: Any = None, **options: Any) -> TaskResult:
    """:func:`run_task` for code without an event loop (a plain ``def test_...``)."""
    return asyncio.run(run_task(task, payload, **options))
