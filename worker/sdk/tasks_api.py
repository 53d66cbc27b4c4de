"""``tasks`` (trigger by task id) and ``batch`` (multi-task batches, batch retrieval).

Trigger.dev's batch family, twinned: ``batch.trigger`` / ``batch.trigger_by_id`` take items
naming the task by id (``{"id": "my-task", "payload": ...}``); ``batch.trigger_by_task`` takes
items holding the task object (``{"task": my_task, "payload": ...}``); the ``_and_wait`` forms
(inside a run) wait for every run and return results in item order.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Unpack

from worker.sdk import subtasks, transport, triggering
from worker.sdk.global_hooks import register as add_global_hook
from worker.sdk.run_models import Run
from worker.sdk.runs import runs
from worker.sdk.subtasks import BatchResult, TaskRunResult
from worker.sdk.transport import path_segment
from worker.sdk.trigger_options import TriggerOptions, collect_items
from worker.sdk.triggering import BatchHandle, ChildItem, RunHandle


def _global_hook(kind: str) -> Callable[..., object]:
    """A ``tasks.<kind>([name,] fn)`` method registering a global hook."""

    def register(
        self: Tasks,
        name_or_fn: str | Callable[..., object],
        fn: Callable[..., object] | None = None,
    ) -> Callable[..., object]:
        return add_global_hook(kind, name_or_fn, fn)

    register.__name__ = kind
    return register


class Tasks:
    """``await tasks.trigger("hello-world", payload, tags=["x"])`` from application code."""

    async def trigger(
        self, task_id: str, payload: object = None, **options: Unpack[TriggerOptions]
    ) -> RunHandle[Any]:
        return await triggering.trigger(task_id, payload, **options)

    # global hooks (Trigger.dev's tasks.onStart(...) & co.): tasks.on_start([name,] fn)
    middleware = _global_hook("middleware")
    on_start = _global_hook("on_start")
    on_start_attempt = _global_hook("on_start_attempt")
    on_success = _global_hook("on_success")
    on_failure = _global_hook("on_failure")
    on_complete = _global_hook("on_complete")
    on_wait = _global_hook("on_wait")
    on_resume = _global_hook("on_resume")
    on_cancel = _global_hook("on_cancel")
    catch_error = _global_hook("catch_error")

    async def trigger_and_wait(
        self, task_id: str, payload: object = None, **options: Unpack[TriggerOptions]
    ) -> TaskRunResult[Any]:
        return await subtasks.trigger_and_wait(task_id, payload, **options)

    async def batch_trigger(
        self, task_id: str, items: Sequence[object], **options: Unpack[TriggerOptions]
    ) -> BatchHandle[Any]:
        return await triggering.batch_trigger(task_id, items, **options)

    async def batch_trigger_and_wait(
        self, task_id: str, items: Sequence[object]
    ) -> BatchResult[Any]:
        """Inside a run: one child per item (payloads, or ``{"payload", "options"}``), waited
        for; a ``BatchResult`` whose ``runs`` are in item order."""
        return await subtasks.batch_trigger_and_wait(subtasks.child_items(task_id, items))

    async def trigger_and_poll(
        self,
        task_id: str,
        payload: object = None,
        *,
        poll_interval_ms: int = 1000,
        timeout: float | None = None,
        **options: Unpack[TriggerOptions],
    ) -> Run:
        """Trigger, then wait for the run to be final (``runs.poll``: one server-side long-poll
        at a time, or a retrieve every ``poll_interval_ms`` against an API without ``waitMs``);
        the final ``Run``. Blocks the caller: not for HTTP handlers (use realtime instead)."""
        handle = await triggering.trigger(task_id, payload, **options)
        return await runs.poll(handle, poll_interval=poll_interval_ms / 1000, timeout=timeout)


@dataclass
class Batch:
    """A batch as ``GET /api/v1/batches/{id}`` reports it."""

    id: str
    status: str
    run_count: int
    runs: list[str] = field(default_factory=list)
    idempotency_key: str | None = None
    created_at: dt.datetime | None = None
    updated_at: dt.datetime | None = None

    @classmethod
    def from_api(cls, data: dict[str, Any]) -> Batch:
        def when(key: str) -> dt.datetime | None:
            value = data.get(key)
            return dt.datetime.fromisoformat(value) if isinstance(value, str) else None

        runs = [r["id"] if isinstance(r, dict) else r for r in data.get("runs", [])]
        return cls(
            id=data["id"],
            status=data.get("status", ""),
            run_count=int(data.get("runCount", len(runs))),
            runs=runs,
            idempotency_key=data.get("idempotencyKey"),
            created_at=when("createdAt"),
            updated_at=when("updatedAt"),
        )


def _item_task(item: object, index: int) -> str:
    """The task id of a batch item: ``"id"`` (an id) or ``"task"`` (a task object or id)."""
    if not isinstance(item, dict):
        raise TypeError(
            f"batch item {index} must be a dict like {{'id': 'my-task', 'payload': ...}}"
        )
    target = item.get("id") or item.get("task")
    task_id = getattr(target, "id", target)
    if not isinstance(task_id, str) or not task_id:
        raise TypeError(
            f"batch item {index} needs its task: 'id' (the task id) or 'task' (the task object)"
        )
    return task_id


def _child(item: object, index: int) -> ChildItem:
    """A multi-task batch item as a child: its task, payload and options."""
    task_id = _item_task(item, index)
    assert isinstance(item, Mapping)  # _item_task refused anything else
    options = item.get("options")
    return ChildItem(task_id, item.get("payload"), dict(options) if options else {})


class BatchApi:
    """``batch.trigger([{"id": task_id, "payload": ..., "options": {...}}])``, ``.retrieve``."""

    async def trigger(self, items: object, **options: Unpack[TriggerOptions]) -> BatchHandle[Any]:
        """One run per item, each naming its task (``"id"`` or ``"task"``); order kept. Items
        may also come from an (async) iterable."""
        collected = await collect_items(items)
        return await triggering.batch_trigger_tasks(
            [_child(item, index) for index, item in enumerate(collected)], **options)

    async def trigger_and_wait(self, items: Sequence[Mapping[str, object]]) -> BatchResult[Any]:
        """Trigger runs of several tasks from inside a run and wait for all of them:
        ``items`` are ``{"id": task id, "payload": ..., "options": {...}}``; the result's
        ``runs`` are in item order."""
        return await subtasks.batch_trigger_and_wait(
            [_child(item, index) for index, item in enumerate(items)])

    # Trigger.dev's names: by id (items name the task id) and by task (items hold the task)
    trigger_by_id = trigger
    trigger_by_id_and_wait = trigger_and_wait

    async def trigger_by_task(
        self, items: Sequence[Mapping[str, object]], **options: Unpack[TriggerOptions]
    ) -> BatchHandle[Any]:
        """``batch.trigger_by_task([{"task": child_task, "payload": ...}, ...])``: one run per
        item, of the task object it holds."""
        return await self.trigger(items, **options)

    async def trigger_by_task_and_wait(
        self, items: Sequence[Mapping[str, object]]
    ) -> BatchResult[Any]:
        """Inside a run: :meth:`trigger_by_task`, then wait for every run (item order)."""
        return await self.trigger_and_wait(items)

    async def retrieve(self, batch_id: str | BatchHandle[Any]) -> Batch:
        ident = batch_id if isinstance(batch_id, str) else batch_id.batch_id
        return Batch.from_api(await transport.json("GET", f"/api/v1/batches/{path_segment(ident)}"))


tasks = Tasks()
batch = BatchApi()
