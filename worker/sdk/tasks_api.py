"""``tasks`` (trigger by task id) and ``batch`` (multi-task batches, batch retrieval)."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass, field
from typing import Any

import orjson

from worker.sdk import client
from worker.sdk.client import BatchHandle, RunHandle, path_segment


class Tasks:
    """``await tasks.trigger("hello-world", payload, tags=["x"])`` from application code."""

    async def trigger(self, task_id: str, payload: Any = None, **options: Any) -> RunHandle:
        return await client.trigger(task_id, payload, **options)

    async def trigger_and_wait(self, task_id: str, payload: Any = None, **options: Any) -> Any:
        from worker.sdk import subtasks

        return await subtasks.trigger_and_wait(task_id, payload, **options)

    async def batch_trigger(self, task_id: str, items: list[Any], **options: Any) -> BatchHandle:
        return await client.batch_trigger(task_id, items, **options)


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


class BatchApi:
    """``batch.trigger([{"id": task_id, "payload": ..., "options": {...}}])``, ``.retrieve``."""

    async def trigger(self, items: list[dict[str, Any]], **options: Any) -> BatchHandle:
        """One run per item, each naming its task (``"id"`` or ``"task"``); order kept."""
        batch_opts = {k: options.pop(k) for k in list(options) if k in client.BATCH_OPTIONS}
        parts = []
        for index, item in enumerate(items):
            task_id = item.get("id") or item.get("task")
            if not isinstance(task_id, str):
                raise TypeError(f"batch item {index} needs the task id under 'id'")
            merged = client.with_parent(
                client.wire_options({**options, **(item.get("options") or {})})
            )
            parts.append(
                b'{"task":'
                + orjson.dumps(task_id)
                + b","
                + client.encode_payload(item.get("payload"))
                + b',"options":'
                + orjson.dumps(merged)
                + b"}"
            )
        response = await client.request(
            "POST",
            "/api/v2/tasks/batch",
            content=client.batch_body(parts, batch_opts),
            idempotency_key=str(uuid.uuid4()),
        )
        return client.batch_handle(response.json())

    async def trigger_and_wait(self, items: list[dict[str, Any]]) -> Any:
        """Trigger runs of several tasks from inside a run and wait for all of them:
        ``items`` are ``{"id": task id, "payload": ..., "options": {...}}``; the result's
        ``runs`` are in item order."""
        from worker.sdk import subtasks

        return await subtasks.batch_trigger_and_wait(
            [
                {
                    "task": item.get("id", item.get("task")),
                    "payload": item.get("payload"),
                    "options": item.get("options"),
                }
                for item in items
            ]
        )

    async def trigger_by_task(self, task_id: str, items: list[Any], **options: Any) -> BatchHandle:
        """Same as ``tasks.batch_trigger``: many payloads for one task."""
        return await client.batch_trigger(task_id, items, **options)

    async def retrieve(self, batch_id: str | BatchHandle) -> Batch:
        ident = batch_id if isinstance(batch_id, str) else batch_id.batch_id
        response = await client.request("GET", f"/api/v1/batches/{path_segment(ident)}")
        return Batch.from_api(response.json())


tasks = Tasks()
batch = BatchApi()
