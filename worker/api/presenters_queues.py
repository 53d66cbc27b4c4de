"""Queues as the API and the dashboard show them (Trigger.dev's ``QueueItem``; docs/api.md)."""

from __future__ import annotations

from worker.engine.queues import QueueState


def queue_limits(queue: QueueState) -> dict[str, object]:
    return {"current": queue.limit, "base": queue.declared_limit, "override": queue.override}


def present_queue(queue: QueueState) -> dict[str, object]:
    limit = queue.limit
    return {
        "id": queue.name,
        "name": queue.name,
        "type": "task" if queue.is_task_queue else "custom",
        "running": queue.running,
        "queued": queue.queued,
        "paused": queue.paused,
        "concurrencyLimit": limit if limit is not None else queue.env_limit,
        "concurrency": queue_limits(queue),
    }
