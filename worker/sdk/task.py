"""Task definitions: the ``task`` decorator / call form, ``schema_task``, ``queue``.

A :class:`Task` is a plain description of user code plus its options; it holds no connection and
does nothing at import time beyond recording where it was defined (for discovery errors). The
runtime executes it (``worker.runtime``); the client triggers it (``worker.sdk.client``).
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import (
    TYPE_CHECKING,
    Any,
    Concatenate,
    Generic,
    Protocol,
    TypeVar,
    Unpack,
    overload,
)

from worker.common.machines import MACHINE_PRESETS
from worker.sdk.definitions import Queue, TaskDefinitionError
from worker.sdk.hook_signatures import check_hook
from worker.sdk.schemas import adapt

if TYPE_CHECKING:
    from worker.sdk.run_models import Run
    from worker.sdk.subtasks import BatchResult, TaskRunResult
    from worker.sdk.trigger_options import TriggerOptions
    from worker.sdk.triggering import BatchHandle, RunHandle

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
#: Trigger.dev's literal spellings, accepted and stored under our names
RETRY_TWINS = {"min_timeout_in_ms": "min_timeout_ms", "max_timeout_in_ms": "max_timeout_ms"}
#: Trigger.dev's deprecated hook names, accepted as the current ones
HOOK_ALIASES = {"handle_error": "catch_error"}

#: a task's payload and output types: ``Task[Payload, Output]``
P = TypeVar("P")
O = TypeVar("O")  # noqa: E741


def normalize_retry(retry: object, where: str) -> dict[str, object] | None:
    """Retry options with Trigger.dev's literal key names mapped to ours; unknown keys refused."""
    if retry is None:
        return None
    if not isinstance(retry, dict):
        raise TaskDefinitionError(f"{where}: retry must be a dict of options, got {retry!r}")
    out: dict[str, object] = {}
    for key, value in retry.items():
        name = RETRY_TWINS.get(str(key), str(key))
        if name in out:
            raise TaskDefinitionError(f"{where}: retry gives {name} twice ({key!r} is its twin)")
        out[name] = value
    bad = sorted(set(retry) - RETRY_KEYS - set(RETRY_TWINS))
    if bad:
        raise TaskDefinitionError(
            f"{where}: unknown retry option(s) {bad}; allowed: {sorted(RETRY_KEYS)} "
            f"(or the twins {sorted(RETRY_TWINS)})"
        )
    return out


def normalize_hooks(options: dict[str, Any], where: str) -> dict[str, Callable[..., object]]:
    """Pop the hook options (aliases mapped) and check each can be called (see
    worker/sdk/hook_signatures.py): a hook we cannot call is refused now, not when it fires."""
    for alias, name in HOOK_ALIASES.items():
        if options.get(alias) is not None:
            if options.get(name) is not None:
                raise TaskDefinitionError(
                    f"{where}: give {name} or {alias} (its old name), not both"
                )
            options[name] = options.pop(alias)
        options.pop(alias, None)
    hooks = {name: options.pop(name) for name in HOOK_NAMES if options.get(name) is not None}
    for name in HOOK_NAMES:
        options.pop(name, None)
    for name, fn in hooks.items():
        if not callable(fn):
            raise TaskDefinitionError(f"{where}: hook {name} must be callable")
        try:
            check_hook(name, fn)
        except ValueError as exc:
            raise TaskDefinitionError(f"{where}: {exc}") from None
    return hooks


@dataclass
class Task(Generic[P, O]):
    """An exported task. Call ``await task.trigger(payload)`` to run it through the engine.

    ``Task[Payload, Output]``: the decorator infers both from ``run``'s annotations, so a type
    checker sees ``(await t.trigger_and_wait(p)).unwrap()`` as ``Output`` and flags a wrong
    payload.
    """

    id: str
    run: Callable[..., object]
    description: str | None = None
    queue: Queue | None = None
    retry: dict[str, object] | None = None
    max_duration: float | None = None
    ttl: str | int | None = None
    machine: str | None = None
    #: the payload schema, adapted to ``model_validate`` / ``model_json_schema``
    #: (worker/sdk/schemas.py)
    schema: Any = None
    hooks: dict[str, Callable[..., object]] = field(default_factory=dict)
    #: ``schedules.task``'s cron: ``{"pattern", "timezone", "environments"}`` (else None)
    schedule: dict[str, object] | None = None
    #: ``"schedule"`` for ``schedules.task`` (only those take schedules), else ``"standard"``
    trigger_source: str = "standard"
    #: where the task was declared: (absolute file path, line number)
    source: tuple[str, int] = ("<unknown>", 0)

    # --- triggering: worker/sdk/triggering.py and worker/sdk/subtasks.py. Imported when first
    # called, not at the top: ``import worker`` imports this module and must stay cheap (no
    # asyncio, no HTTP client; tests/sdk/test_client_unit.py checks it).
    async def trigger(
        self, payload: P | None = None, **options: Unpack[TriggerOptions]
    ) -> RunHandle[O]:
        from worker.sdk import triggering

        handle: RunHandle[O] = await triggering.trigger(self.id, payload, **options)
        return handle

    async def trigger_and_subscribe(
        self, payload: P | None = None, **options: Unpack[TriggerOptions]
    ) -> AsyncIterator[Run]:
        """Trigger, then yield the run's snapshots (``Run``) until it is final."""
        from worker.sdk import realtime

        handle = await self.trigger(payload, **options)
        async for run in realtime.subscribe_to_run(handle.id):
            yield run

    async def batch_trigger(
        self, items: Sequence[P | Mapping[str, object]], **options: Unpack[TriggerOptions]
    ) -> BatchHandle[O]:
        """``items``: payloads, or dicts ``{"payload": ..., "options": {...}}``."""
        from worker.sdk import triggering

        handle: BatchHandle[O] = await triggering.batch_trigger(self.id, items, **options)
        return handle

    async def trigger_and_wait(
        self, payload: P | None = None, **options: Unpack[TriggerOptions]
    ) -> TaskRunResult[O]:
        """Trigger a child run and wait for its result (inside a run only): a
        ``TaskRunResult`` with ``ok``, ``output`` / ``error`` and ``unwrap()``."""
        from worker.sdk import subtasks

        result: TaskRunResult[O] = await subtasks.trigger_and_wait(self.id, payload, **options)
        return result

    async def batch_trigger_and_wait(
        self, items: Sequence[P | Mapping[str, object]]
    ) -> BatchResult[O]:
        """Trigger one child per item and wait for all; results in item order."""
        from worker.sdk import subtasks

        result: BatchResult[O] = await subtasks.batch_trigger_and_wait(
            subtasks.child_items(self.id, items))
        return result

    def manifest(self) -> dict[str, object]:
        """What the worker registers with the engine for this task."""
        schema_json = None
        if self.schema is not None:
            schema_json = self.schema.model_json_schema()
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


#: Every Task created in this interpreter, in creation order (read it with created_tasks()).
_created: list[Task[Any, Any]] = []


def created_tasks(since: int = 0) -> list[Task[Any, Any]]:
    """The tasks created in this interpreter, in creation order, from the ``since``-th on (a
    copy). Discovery notes ``len(created_tasks())`` before importing the project's modules and
    compares ``created_tasks(that)`` with their exports, to report tasks declared but not
    exported."""
    return _created[since:]


def _caller_source(depth: int) -> tuple[str, int]:
    frame = sys._getframe(depth)
    return (frame.f_code.co_filename, frame.f_lineno)


def _build(
    id: str,
    run: Callable[..., object],
    source: tuple[str, int],
    schema: object = None,
    **options: Any,
) -> Task[Any, Any]:
    if not isinstance(id, str) or not id.strip():
        raise TaskDefinitionError(f"{source[0]}:{source[1]}: task id must be a non-empty string")
    if not callable(run):
        raise TaskDefinitionError(f"task {id!r}: run must be a function, got {type(run).__name__}")
    hooks = normalize_hooks(options, f"task {id!r}")
    q = options.pop("queue", None)
    if isinstance(q, str):
        q = Queue(q)
    elif isinstance(q, dict):
        q = Queue(**q)
    retry = normalize_retry(options.pop("retry", None), f"task {id!r}")
    machine = options.pop("machine", None)
    if isinstance(machine, dict):  # Trigger.dev's {preset}; its cpu/memory form is deprecated
        if set(machine) != {"preset"}:
            raise TaskDefinitionError(
                f"task {id!r}: machine takes a preset name (or {{'preset': name}}); cpu/memory "
                f"are not supported, pick the preset that fits: {sorted(MACHINE_PRESETS)}"
            )
        machine = machine["preset"]
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
    task_obj: Task[Any, Any] = Task(
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


class TaskDecorator(Protocol):
    """What ``@task(...)`` returns: infers ``Task[Payload, Output]`` from ``run``."""

    @overload
    def __call__(self, fn: Callable[Concatenate[P, ...], Awaitable[O]]) -> Task[P, O]: ...

    @overload
    def __call__(self, fn: Callable[Concatenate[P, ...], O]) -> Task[P, O]: ...

    @overload
    def __call__(self, fn: Callable[[], Awaitable[O]]) -> Task[Any, O]: ...


@overload
def task(id: str, run: None = None, **options: Any) -> TaskDecorator: ...


@overload
def task(
    id: str, run: Callable[Concatenate[P, ...], Awaitable[O]], **options: Any
) -> Task[P, O]: ...


@overload
def task(id: str, run: Callable[..., object], **options: Any) -> Task[Any, Any]: ...


def task(id: str, run: Callable[..., object] | None = None, **options: Any) -> Any:
    """Declare a task, as a decorator or in call form.

    ``@task(id="hello", max_duration=300, retry={"max_attempts": 3})`` above ``async def`` or
    ``def`` ``run(payload, ctx)``; or ``hello = task(id="hello", run=fn, ...)``. Hooks
    (``on_start``, ``on_success``, ``catch_error``, ...) take their arguments by name
    (``payload, ctx, output, error, result, init, task``) or in Trigger.dev's positional order
    (``on_failure(payload, error, params)``); see worker/sdk/hook_signatures.py.
    """
    if run is not None:
        return _build(id, run, _caller_source(2), **options)
    source = _caller_source(2)

    def decorate(fn: Callable[..., object]) -> Task[Any, Any]:
        return _build(id, fn, source, **options)

    return decorate


def schema_task(
    id: str, schema: object, run: Callable[..., object] | None = None, **options: Any
) -> Any:
    """A task whose payload is validated by ``schema`` before ``run`` gets it.

    ``schema``: a pydantic model or ``TypeAdapter``, a dataclass, a ``TypedDict``, a JSON-schema
    dict or a parsing function (worker/sdk/schemas.py). The worker parses the payload with it
    (so ``run`` receives e.g. a model instance); the manifest carries its JSON schema where one
    can be derived, and the API then refuses a bad payload at trigger time (422).
    """
    try:
        adapted = adapt(schema)
    except Exception as exc:
        raise TaskDefinitionError(f"schema_task {id!r}: {exc}") from None
    if run is not None:
        return _build(id, run, _caller_source(2), schema=adapted, **options)
    source = _caller_source(2)

    def decorate(fn: Callable[..., object]) -> Task[Any, Any]:
        return _build(id, fn, source, schema=adapted, **options)

    return decorate
