"""``metadata``: read and change the current run's metadata from inside a task.

Changes are synchronous and chainable (``metadata.set("progress", 0.5).increment("done")``):
they apply at once to the local view (``metadata.current()``, ``metadata.get(k)``) and are
buffered as operations, flushed to the API about once a second
(``TRIGGER_RUN_METADATA_FLUSH_INTERVAL`` ms, default 1000), before the run checkpoints, and
finally with the attempt's completion. When a checkpointed run resumes and replays the code
before its wait, the replayed changes are skipped: they were applied before the checkpoint.
``await metadata.flush()`` sends them now; ``await metadata.refresh()`` reloads the server's copy
(which children may have changed through ``metadata.parent``).

``metadata.parent.*`` / ``metadata.root.*`` change the parent / root run (the run itself when it
has none); increments from many children never lose updates (applied under a row lock).

Outside a run, changes are ignored and ``current()`` is ``{}``. Metadata is limited to 256 KiB
of JSON: a change that would pass it raises :class:`MetadataTooLargeError` and is not applied.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections.abc import AsyncIterable, Iterable
from typing import Any

import orjson

from worker.common.metadata_ops import (
    MAX_METADATA_BYTES,
    MetadataOperationError,
    apply_operations,
)
from worker.sdk import attempt_hooks, durable, transport
from worker.sdk.context import Context, current_context
from worker.sdk.realtime import PipedStream
from worker.sdk.settings import sdk_settings
from worker.sdk.transport import path_segment


class MetadataTooLargeError(ValueError):
    """The change would make the run's metadata larger than 256 KiB of JSON."""


def _flush_interval() -> float:
    return sdk_settings().metadata_flush_interval


class _State:
    """The metadata of the run executing in this process (one run per executor)."""

    def __init__(self) -> None:
        self.run_id: str | None = None
        self.current: dict[str, Any] = {}
        self.ops: list[dict[str, Any]] = []
        self.parent_ops: list[dict[str, Any]] = []
        self.root_ops: list[dict[str, Any]] = []
        self.flusher: asyncio.Task[None] | None = None
        self.lock: asyncio.Lock | None = None
        #: the context the attempt started in, while an attempt runs in this executor: the
        #: periodic flush starts there at the first change (none for a run that changes
        #: nothing: a task and a timer per attempt saved)
        self.flush_context: contextvars.Context | None = None
        self.flush_loop: asyncio.AbstractEventLoop | None = None

    def reset(self, run_id: str | None, initial: object) -> None:
        self.run_id = run_id
        self.current = dict(initial) if isinstance(initial, dict) else {}
        self.ops, self.parent_ops, self.root_ops = [], [], []
        self.lock = asyncio.Lock()

    def pending(self) -> dict[str, Any] | None:
        if not (self.ops or self.parent_ops or self.root_ops):
            return None
        return {
            "operations": self.ops,
            "parentOperations": self.parent_ops,
            "rootOperations": self.root_ops,
        }

    def start_flusher(self) -> None:
        if self.flusher is not None or self.flush_context is None or self.flush_loop is None:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is not self.flush_loop:  # a change made in a thread of the task's
            self.flush_loop.call_soon_threadsafe(self.start_flusher)
            return
        self.flusher = running.create_task(_flush_forever(), context=self.flush_context)

    def take(self) -> dict[str, Any] | None:
        body = self.pending()
        self.ops, self.parent_ops, self.root_ops = [], [], []
        return body

    def put_back(self, body: dict[str, Any]) -> None:
        self.ops = body["operations"] + self.ops
        self.parent_ops = body["parentOperations"] + self.parent_ops
        self.root_ops = body["rootOperations"] + self.root_ops


_state = _State()


def _run_id() -> str | None:
    """The current run's id (the attempt hooks set it; the context is the fallback)."""
    if _state.run_id:
        return _state.run_id
    ctx = current_context()
    if ctx is None:
        return None
    run_id = ctx.to_dict().get("run", {}).get("id")
    if run_id and _state.run_id is None:
        _state.reset(run_id, ctx.to_dict().get("run", {}).get("metadata"))
    return str(run_id) if run_id else None


def _replaying() -> bool:
    """Is the run replaying its journal after a checkpoint (not yet past its last entry)?"""
    run = durable.maybe_state()
    return run is not None and run.replaying


class _Target:
    """Buffered changes to one run: the current one, its parent or its root."""

    def __init__(self, target: str) -> None:
        self._target = target

    def _queue(self) -> list[dict[str, Any]]:
        return {"self": _state.ops, "parent": _state.parent_ops, "root": _state.root_ops}[
            self._target
        ]

    def _op(self, op: dict[str, Any]) -> _Target:
        if _run_id() is None:
            return self  # outside a run: nothing to change
        if _replaying():
            # Code before a wait runs again when a checkpointed run resumes; its changes were
            # flushed before the checkpoint and are in the metadata this attempt started
            # from: applying them again would count an increment twice.
            return self
        try:
            orjson.dumps(op)
        except TypeError as exc:
            raise TypeError(f"metadata values must be JSON: {exc}") from None
        if self._target == "self":
            try:
                updated = apply_operations(_state.current, [op])
            except MetadataOperationError as exc:
                raise ValueError(str(exc)) from None
            size = len(orjson.dumps(updated))
            if size > MAX_METADATA_BYTES:
                raise MetadataTooLargeError(
                    f"run metadata would be {size} bytes; the limit is {MAX_METADATA_BYTES} "
                    "bytes (256 KiB). Keep large data elsewhere (a stream, your database) and "
                    "store a reference in metadata."
                )
            _state.current = updated
        self._queue().append(op)
        _state.start_flusher()
        return self

    def set(self, key: str, value: object) -> _Target:
        return self._op({"type": "set", "key": key, "value": value})

    def delete(self, key: str) -> _Target:
        return self._op({"type": "delete", "key": key})

    del_ = delete

    def append(self, key: str, value: object) -> _Target:
        return self._op({"type": "append", "key": key, "value": value})

    def remove(self, key: str, value: object) -> _Target:
        return self._op({"type": "remove", "key": key, "value": value})

    def increment(self, key: str, value: float = 1) -> _Target:
        return self._op({"type": "increment", "key": key, "value": value})

    def decrement(self, key: str, value: float = 1) -> _Target:
        return self._op({"type": "increment", "key": key, "value": -value})

    def update(self, values: dict[str, Any]) -> _Target:
        """Merge ``values`` into the metadata (top-level keys), like ``dict.update``."""
        for key, value in values.items():
            self.set(key, value)
        return self

    def replace(self, values: dict[str, Any]) -> _Target:
        """Replace the whole metadata object."""
        if not isinstance(values, dict):
            raise TypeError("metadata.replace needs a dict")
        return self._op({"type": "update", "value": values})


class Metadata(_Target):
    """The ``metadata`` namespace (the current run), with ``.parent`` and ``.root``."""

    def __init__(self) -> None:
        super().__init__("self")
        self.parent = _Target("parent")
        self.root = _Target("root")

    def current(self) -> dict[str, Any]:
        _run_id()
        return dict(_state.current)

    def get(self, key: str, default: object = None) -> Any:
        _run_id()
        return _state.current.get(key, default)

    async def flush(self) -> None:
        """Send the buffered changes now (they are retried at the next flush on failure)."""
        run_id = _run_id()
        if run_id is None or _state.lock is None:
            return
        async with _state.lock:
            body = _state.take()
            if body is None:
                return
            try:
                response = await transport.request(
                    "PUT",
                    f"/api/v1/runs/{path_segment(run_id)}/metadata",
                    json=body,
                )
            except BaseException:
                _state.put_back(body)
                raise
            # The server's copy includes changes made by others (children, the API); replay
            # the changes buffered since this flush started on top of it.
            server = response.json().get("metadata") or {}
            _state.current = apply_operations(server, _state.ops)

    async def refresh(self) -> None:
        """Reload the run's metadata from the API (buffered changes are kept on top)."""
        run_id = _run_id()
        if run_id is None:
            return
        response = await transport.request(
            "GET", f"/api/v1/runs/{path_segment(run_id)}/metadata"
        )
        _state.current = apply_operations(response.json().get("metadata") or {}, _state.ops)

    async def stream(
        self, key: str, source: AsyncIterable[object] | Iterable[object]
    ) -> PipedStream:
        """Pipe an (async) iterable to the run's stream ``key`` and return a
        :class:`~worker.sdk.realtime.PipedStream` of the chunks as they are piped."""

        return PipedStream(key, source)


metadata = Metadata()


# --- executor integration (worker.sdk.attempt_hooks) ---------------------------------------


async def _flush_forever() -> None:
    interval = _flush_interval()
    while True:
        await asyncio.sleep(interval)
        with contextlib.suppress(Exception):  # kept buffered; the final flush carries it
            await metadata.flush()


async def _attempt_started(ctx: Context | None) -> None:
    run = ctx.to_dict().get("run", {}) if ctx is not None else {}
    _state.reset(run.get("id"), run.get("metadata"))
    # the periodic flush starts at the first change, in this context, on this loop
    _state.flush_context = contextvars.copy_context()
    _state.flush_loop = asyncio.get_running_loop()


async def _attempt_ending(ctx: object) -> dict[str, object] | None:
    """Stop the periodic flush; the remaining changes ride on the completion."""
    _state.flush_context = _state.flush_loop = None
    if _state.flusher is not None:
        # Let an in-flight flush finish first: cancelling it after the server applied it
        # would put its operations back and apply them twice.
        async with _state.lock or asyncio.Lock():
            _state.flusher.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await _state.flusher
        _state.flusher = None
    body = _state.take()
    _state.run_id = None
    _state.current = {}
    return {"metadata": body} if body else None


async def _before_checkpoint(ctx: object) -> None:
    """A run about to checkpoint sends no completion: flush now (raises if the API refuses,
    and the run then keeps waiting in place rather than lose the changes)."""
    await metadata.flush()


attempt_hooks.on_attempt_start(_attempt_started)
attempt_hooks.on_attempt_end(_attempt_ending, busy=lambda: _state.flusher is not None)
attempt_hooks.on_checkpoint(_before_checkpoint)
