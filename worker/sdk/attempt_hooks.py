"""Plumbing between the runtime and SDK features that live inside an executor.

Features such as run metadata buffer state during an attempt; the executor calls
:func:`attempt_started` before the task's hooks and :func:`attempt_ending` after the task has
finished but before the completion is sent, so they can reset and flush; a run that
checkpoints sends no completion, so :func:`checkpointing` runs before it does. Whatever the end
callbacks return is merged into the completion message (e.g. ``{"metadata": {...}}``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

StartCallback = Callable[[Any], Awaitable[None]]
EndCallback = Callable[[Any], Awaitable[Mapping[str, object] | None]]

_on_start: list[StartCallback] = []
_on_end: list[EndCallback] = []
#: per end callback: whether it may wait for something now (absent: it may, always)
_end_busy: dict[EndCallback, Callable[[], bool]] = {}
_on_checkpoint: list[StartCallback] = []


def on_attempt_start(callback: StartCallback) -> StartCallback:
    if callback not in _on_start:
        _on_start.append(callback)
    return callback


def on_attempt_end(callback: EndCallback,
                   busy: Callable[[], bool] | None = None) -> EndCallback:
    """``busy()`` (optional) tells whether ``callback`` would wait for anything if called now
    (I/O, tasks to settle): when none is busy, the executor calls them without the bound on
    their time (a timer per attempt saved)."""
    if callback not in _on_end:
        _on_end.append(callback)
    if busy is not None:
        _end_busy[callback] = busy
    return callback


def ending_may_wait() -> bool:
    """Whether :func:`attempt_ending` may wait for something (see :func:`on_attempt_end`)."""
    for callback in _on_end:
        busy = _end_busy.get(callback)
        if busy is None or busy():
            return True
    return False


def on_checkpoint(callback: StartCallback) -> StartCallback:
    """``callback(ctx)`` runs before the run checkpoints (its process will not complete the
    attempt: buffered state must reach the engine now)."""
    if callback not in _on_checkpoint:
        _on_checkpoint.append(callback)
    return callback


async def checkpointing(ctx: object) -> None:
    for callback in _on_checkpoint:
        await callback(ctx)


async def attempt_started(ctx: object) -> None:
    for callback in _on_start:
        await callback(ctx)


async def attempt_ending(ctx: object) -> dict[str, object]:
    extra: dict[str, object] = {}
    for callback in _on_end:
        extra.update(await callback(ctx) or {})
    return extra
