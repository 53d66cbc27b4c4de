"""trigger-worker: Trigger.dev v4 semantics for Python tasks.

The public SDK surface. Names resolve lazily (PEP 562) so ``import worker`` stays cheap and
never imports httpx, pydantic, the engine or the API: task files are imported by every worker
executor, and application code may only ever call ``tasks.trigger``.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from worker.sdk.definitions import Queue, queue
from worker.sdk.errors import (
    AbortTaskRunError,
    ApiError,
    AuthenticationError,
    CompleteTaskWithOutput,
    ConfigurationError,
    MaxDurationExceededError,
    NotFoundError,
    OutOfMemoryError,
    TaskRunCanceledError,
)
from worker.sdk.logger import logger
from worker.sdk.task import Task, schema_task, task

if TYPE_CHECKING:
    from worker.sdk import idempotency_keys as idempotency_keys
    from worker.sdk.ai import ai
    from worker.sdk.alerts import alerts
    from worker.sdk.auth import auth
    from worker.sdk.background import heartbeats, wait_until
    from worker.sdk.config import define_config
    from worker.sdk.context import locals
    from worker.sdk.metadata import metadata
    from worker.sdk.queues import queues
    from worker.sdk.realtime import streams
    from worker.sdk.retry import retry
    from worker.sdk.runs import Run, runs
    from worker.sdk.schedules import ScheduledPayload, schedules
    from worker.sdk.subtasks import SubtaskUnwrapError, TaskRunResult
    from worker.sdk.tags import tags
    from worker.sdk.tasks_api import batch, tasks
    from worker.sdk.transport import configure
    from worker.sdk.triggering import BatchHandle, RunHandle
    from worker.sdk.usage import usage
    from worker.sdk.wait import WaitpointTimeoutError, step, wait

#: public name -> module that defines it (imported on first access)
_LAZY = {
    "tasks": "worker.sdk.tasks_api",
    "batch": "worker.sdk.tasks_api",
    "runs": "worker.sdk.runs",
    "Run": "worker.sdk.runs",
    "RunHandle": "worker.sdk.triggering",
    "BatchHandle": "worker.sdk.triggering",
    "configure": "worker.sdk.transport",
    "define_config": "worker.sdk.config",
    "locals": "worker.sdk.context",
    "idempotency_keys": "worker.sdk.idempotency_keys",
    "queues": "worker.sdk.queues",
    "schedules": "worker.sdk.schedules",
    "ScheduledPayload": "worker.sdk.schedules",
    "metadata": "worker.sdk.metadata",
    "auth": "worker.sdk.auth",
    "streams": "worker.sdk.realtime",
    "wait": "worker.sdk.wait",
    "step": "worker.sdk.wait",
    "WaitpointTimeoutError": "worker.sdk.wait",
    "SubtaskUnwrapError": "worker.sdk.subtasks",
    "TaskRunResult": "worker.sdk.subtasks",
    "tags": "worker.sdk.tags",
    "retry": "worker.sdk.retry",
    "usage": "worker.sdk.usage",
    "ai": "worker.sdk.ai",
    "alerts": "worker.sdk.alerts",
    "wait_until": "worker.sdk.background",
    "heartbeats": "worker.sdk.background",
}

__all__ = [
    "AbortTaskRunError",
    "ApiError",
    "AuthenticationError",
    "BatchHandle",
    "CompleteTaskWithOutput",
    "ConfigurationError",
    "MaxDurationExceededError",
    "NotFoundError",
    "OutOfMemoryError",
    "Queue",
    "Run",
    "RunHandle",
    "ScheduledPayload",
    "SubtaskUnwrapError",
    "Task",
    "TaskRunCanceledError",
    "TaskRunResult",
    "WaitpointTimeoutError",
    "ai",
    "alerts",
    "auth",
    "batch",
    "configure",
    "define_config",
    "heartbeats",
    "idempotency_keys",
    "locals",
    "logger",
    "metadata",
    "queue",
    "queues",
    "retry",
    "runs",
    "schedules",
    "schema_task",
    "step",
    "streams",
    "tags",
    "task",
    "tasks",
    "usage",
    "wait",
    "wait_until",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'worker' has no attribute {name!r}")
    target = import_module(module)
    # a namespace that is a whole module (idempotency_keys) is the module itself, unless the
    # module defines an object of that name (schedules, metadata, auth)
    value = getattr(target, name, target) if module.endswith("." + name) else getattr(target, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
