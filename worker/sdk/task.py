"""Task definitions: the ``task`` decorator / call form, ``schema_task``, ``queue``.

A :class:`Task` is a plain description of user code plus its options; it holds no connection and
does nothing at import time beyond recording where it was defined (for discovery errors). The
runtime executes it (``worker.runtime``); the client triggers it (``worker.sdk.client``).
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from worker.common.machines import MACHINE_PRESETS

HOOK_NAMES = (
    "middleware",
    "init",
    "on_start",
    "on_start_attempt",
    "on_success",
    "on_failure",
    "on_complete",
    "cleanup",
    "catch_error",
    "on_wait",
    "on_resume",
    "on_cancel",
)


RETRY_KEYS = frozenset(
    {"max_attempts", "factor", "min_timeout_ms", "max_timeout_ms", "randomize", "out_of_memory"}
)


class TaskDefinitionError(ValueError):
    """A task was declared with options that cannot work; the message says which and why."""


@dataclass(frozen=True)
class Queue:
    """A named queue shared by the tasks that name it. ``concurrency_limit=None`` is unbounded."""

    name: str
    concurrency_limit: int | None = None

    def __post_init__(self) -> None:
        if not self.name or not isinstance(self.name, str):
            raise TaskDefinitionError("queue name must be a non-empty string")
        limit = self.concurrency_limit
        if limit is not None and (not isinstance(limit, int) or not 0 <= limit <= 100_000):
            raise TaskDefinitionError(
                f"queue {self.name!r}: concurrency_limit must be an int in 0..100000 or None"
            )


def queue(name: str, concurrency_limit: int | None = None) -> Queue:
    return Queue(name, concurrency_limit)


@dataclass
class Task:
    """An exported task. Call ``await task.trigger(payload)`` to run it through the engine."""

    id: str
    run: Callable[..., Any]
    description: str | None = None
    queue: Queue | None = None
    retry: dict[str, Any] | None = None
    max_duration: float | None = None
    ttl: str | int | None = None
    machine: str | None = None
    schema: type | None = None
    hooks: dict[str, Callable[..., Any]] = field(default_factory=dict)
    #: ``schedules.task``'s cron: ``{"pattern", "timezone", "environments"}`` (else None)
    schedule: dict[str, Any] | None = None
    #: ``"schedule"`` for ``schedules.task`` (only those take schedules), else ``"standard"``
    trigger_source: str = "standard"
    #: where the task was declared: (absolute file path, line number)
    source: tuple[str, int] = ("<unknown>", 0)

    # --- triggering (implemented by the client; imported lazily to keep imports light) ------
    async def trigger(self, payload: Any = None, **options: Any) -> Any:
        from worker.sdk import client

        return await client.trigger(self.id, payload, **options)

    async def batch_trigger(self, items: list[Any], **options: Any) -> Any:
        """``items``: payloads, or dicts ``{"payload": ..., "options": {...}}``."""
        from worker.sdk import client

        return await client.batch_trigger(self.id, items, **options)

    async def trigger_and_wait(self, payload: Any = None, **options: Any) -> Any:
        """Trigger a child run and wait for its result (inside a run only): a
        ``TaskRunResult`` with ``ok``, ``output`` / ``error`` and ``unwrap()``."""
        from worker.sdk import subtasks

        return await subtasks.trigger_and_wait(self.id, payload, **options)

    async def batch_trigger_and_wait(self, items: list[Any]) -> Any:
        """Trigger one child per item and wait for all; results in item order."""
        from worker.sdk import client, subtasks

        parts = []
        for item in items:
            payload, options = client.split_item(item)
            parts.append({"task": self.id, "payload": payload, "options": options})
        return await subtasks.batch_trigger_and_wait(parts)

    def manifest(self) -> dict[str, Any]:
        """What the worker registers with the engine for this task."""
        schema_json = None
        if self.schema is not None:
            schema_json = self.schema.model_json_schema()  # type: ignore[attr-defined]
        return {
            "id": self.id,
            "description": self.description,
            "queue": (
                {"name": self.queue.name, "concurrency_limit": self.queue.concurrency_limit}
                if self.queue
                else {"name": f"task/{self.id}", "concurrency_limit": None}
            ),
            "retry": self.retry,
            "max_duration": self.max_duration,
            "ttl": self.ttl,
            "machine": self.machine,
            "payload_schema": schema_json,
            "schedule": self.schedule,
            "trigger_source": self.trigger_source,
            "file": self.source[0],
            "line": self.source[1],
        }


#: Every Task created in this interpreter, in creation order. Discovery compares it with the
#: modules' exports to report tasks that were declared but not exported.
_created: list[Task] = []


def created_tasks() -> list[Task]:
    return list(_created)


def _caller_source(depth: int) -> tuple[str, int]:
    frame = sys._getframe(depth)
    return (frame.f_code.co_filename, frame.f_lineno)


def _build(
    id: str,
    run: Callable[..., Any],
    source: tuple[str, int],
    schema: type | None = None,
    **options: Any,
) -> Task:
    if not isinstance(id, str) or not id.strip():
        raise TaskDefinitionError(f"{source[0]}:{source[1]}: task id must be a non-empty string")
    if not callable(run):
        raise TaskDefinitionError(f"task {id!r}: run must be a function, got {type(run).__name__}")
    hooks = {name: options.pop(name) for name in HOOK_NAMES if options.get(name) is not None}
    for name in HOOK_NAMES:
        options.pop(name, None)
    for name, fn in hooks.items():
        if not callable(fn):
            raise TaskDefinitionError(f"task {id!r}: hook {name} must be callable")
    q = options.pop("queue", None)
    if isinstance(q, str):
        q = Queue(q)
    elif isinstance(q, dict):
        q = Queue(**q)
    retry = options.pop("retry", None)
    if retry is not None and (not isinstance(retry, dict) or not set(retry) <= RETRY_KEYS):
        bad = sorted(set(retry) - RETRY_KEYS) if isinstance(retry, dict) else retry
        raise TaskDefinitionError(
            f"task {id!r}: unknown retry option(s) {bad}; allowed: {sorted(RETRY_KEYS)}"
        )
    machine = options.pop("machine", None)
    if machine is not None and machine not in MACHINE_PRESETS:
        raise TaskDefinitionError(
            f"task {id!r}: unknown machine {machine!r}; one of {sorted(MACHINE_PRESETS)}"
        )
    max_duration = options.pop("max_duration", None)
    if max_duration is not None and (
        not isinstance(max_duration, int | float) or max_duration <= 0
    ):
        raise TaskDefinitionError(f"task {id!r}: max_duration must be a positive number of seconds")
    description = options.pop("description", None)
    ttl = options.pop("ttl", None)
    if options:
        raise TaskDefinitionError(f"task {id!r}: unknown option(s) {sorted(options)}")
    task_obj = Task(
        id=id,
        run=run,
        description=description,
        queue=q,
        retry=retry,
        max_duration=max_duration,
        ttl=ttl,
        machine=machine,
        schema=schema,
        hooks=hooks,
        source=source,
    )
    _created.append(task_obj)
    return task_obj


def task(id: str, run: Callable[..., Any] | None = None, **options: Any) -> Any:
    """Declare a task, as a decorator or in call form.

    ``@task(id="hello", max_duration=300, retry={"max_attempts": 3})`` above ``async def`` or
    ``def`` ``run(payload, ctx)``; or ``hello = task(id="hello", run=fn, ...)``. Hook options
    (``on_start``, ``on_success``, ``catch_error``, ...) are functions whose parameters are picked
    by name from ``payload, ctx, output, error, result, init, task``.
    """
    if run is not None:
        return _build(id, run, _caller_source(2), **options)
    source = _caller_source(2)

    def decorate(fn: Callable[..., Any]) -> Task:
        return _build(id, fn, source, **options)

    return decorate


def schema_task(
    id: str, schema: type, run: Callable[..., Any] | None = None, **options: Any
) -> Any:
    """A task whose payload is validated by a pydantic model before ``run`` gets it.

    The worker parses the payload into ``schema`` (so ``run`` receives a model instance); the
    manifest carries the model's JSON schema.
    """
    if not (inspect.isclass(schema) and hasattr(schema, "model_validate")):
        raise TaskDefinitionError(f"schema_task {id!r}: schema must be a pydantic BaseModel class")
    if run is not None:
        return _build(id, run, _caller_source(2), schema=schema, **options)
    source = _caller_source(2)

    def decorate(fn: Callable[..., Any]) -> Task:
        return _build(id, fn, source, schema=schema, **options)

    return decorate
