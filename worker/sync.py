"""Blocking mirror of the client API for programs without an event loop.

Same names and arguments as the async API, one mechanism::

    from worker.sync import runs, tasks

    handle = tasks.trigger("hello-world", {"name": "Ada"})
    run = runs.poll(handle, timeout=60)
    for r in runs.list(status="FAILED", limit=20):
        print(r.id)

Each thread keeps one private event loop (and so one HTTP connection pool) and runs the async
call on it. Calling from inside a running event loop raises ``RuntimeError``: there, ``await`` the
async API (``from worker import tasks, runs``) instead. After a fork the child builds a fresh loop.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Awaitable, Iterator
from datetime import datetime, timedelta
from typing import Any, TypeVar, Unpack

from worker.sdk import client
from worker.sdk import runs as _runs
from worker.sdk import tasks_api as _tasks
from worker.sdk.pagination import Page
from worker.sdk.runs import Run
from worker.sdk.tasks_api import Batch
from worker.sdk.transport import configure
from worker.sdk.trigger_options import TriggerOptions
from worker.sdk.triggering import BatchHandle, RunHandle

T = TypeVar("T")

__all__ = ["batch", "batch_trigger", "configure", "runs", "tasks", "trigger"]

_local = threading.local()


def _loop() -> asyncio.AbstractEventLoop:
    loop: asyncio.AbstractEventLoop | None = getattr(_local, "loop", None)
    if loop is None or getattr(_local, "pid", None) != os.getpid() or loop.is_closed():
        loop = asyncio.new_event_loop()
        _local.loop, _local.pid = loop, os.getpid()
    return loop


def _run(coro: Awaitable[T]) -> T:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return _loop().run_until_complete(coro)
    close = getattr(coro, "close", None)
    if close is not None:
        close()
    raise RuntimeError(
        "worker.sync was called inside a running event loop; use the async API there "
        "(`await tasks.trigger(...)` from `worker`)"
    )


def trigger(task_id: str, payload: object = None, **options: Unpack[TriggerOptions]) -> RunHandle:
    return _run(client.trigger(task_id, payload, **options))


def batch_trigger(
    task_id: str, items: list[object], **options: Unpack[TriggerOptions],
) -> BatchHandle:
    return _run(client.batch_trigger(task_id, items, **options))


class _Tasks:
    def trigger(
        self, task_id: str, payload: object = None, **options: Unpack[TriggerOptions],
    ) -> RunHandle:
        return _run(_tasks.tasks.trigger(task_id, payload, **options))

    def batch_trigger(
        self, task_id: str, items: list[object], **options: Unpack[TriggerOptions],
    ) -> BatchHandle:
        return _run(_tasks.tasks.batch_trigger(task_id, items, **options))


class _Batch:
    def trigger(
        self, items: list[dict[str, Any]], **options: Unpack[TriggerOptions],
    ) -> BatchHandle:
        return _run(_tasks.batch.trigger(items, **options))

    def trigger_by_task(
        self, items: list[dict[str, Any]], **options: Unpack[TriggerOptions],
    ) -> BatchHandle:
        return _run(_tasks.batch.trigger_by_task(items, **options))

    def retrieve(self, batch_id: str | BatchHandle) -> Batch:
        return _run(_tasks.batch.retrieve(batch_id))


class _SyncRunList:
    """Iterate runs across pages; ``.pages()`` yields :class:`Page` objects."""

    def __init__(self, inner: _runs.RunList) -> None:
        self._inner = inner

    def pages(self) -> Iterator[Page[Run]]:
        agen = self._inner.pages()
        try:
            while True:
                try:
                    yield _run(agen.__anext__())
                except StopAsyncIteration:
                    return
        finally:
            _run(agen.aclose())

    def __iter__(self) -> Iterator[Run]:
        for page in self.pages():
            yield from page.data


class _Runs:
    def retrieve(self, run: str | RunHandle | Run) -> Run:
        return _run(_runs.runs.retrieve(run))

    def list(self, **filters: Any) -> _SyncRunList:
        """Same filters as ``worker.runs.list``."""
        return _SyncRunList(_runs.runs.list(**filters))

    def cancel(self, run: str | RunHandle | Run) -> str:
        return _run(_runs.runs.cancel(run))

    def replay(self, run: str | RunHandle | Run) -> RunHandle:
        return _run(_runs.runs.replay(run))

    def reschedule(self, run: str | RunHandle | Run,
                   delay: str | float | timedelta | datetime) -> Run:
        return _run(_runs.runs.reschedule(run, delay))

    def poll(
        self, run: str | RunHandle | Run, poll_interval: float = 1.0, timeout: float | None = None
    ) -> Run:
        return _run(_runs.runs.poll(run, poll_interval=poll_interval, timeout=timeout))


tasks = _Tasks()
batch = _Batch()
runs = _Runs()
