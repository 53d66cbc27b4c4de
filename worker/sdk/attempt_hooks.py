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
_on_checkpoint: list[StartCallback] = []


def on_attempt_start(callback: StartCallback) -> StartCallback:
    if callback not in _on_start:
        _on_start.append(callback)
    return callback


def on_attempt_end(callback: EndCallback) -> EndCallback:
    if callback not in _on_end:
        _on_end.append(callback)
    return callback


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
