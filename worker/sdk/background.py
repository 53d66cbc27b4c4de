"""``wait_until`` and ``heartbeats``: Trigger.dev's helpers for work that outlives a statement.

``wait_until(awaitable)`` (Trigger.dev's ``waitUntil(promise)``): start it now, and the attempt
does not complete until it settled (its error is logged, not raised into the run).

``await heartbeats.yield_()`` (``heartbeats.yield()``; ``yield`` is a Python keyword): gives the
event loop a turn. Executors heartbeat from the supervisor, not from the task's loop, so a
CPU-bound task is never lost for lack of it; this exists so that translated code runs.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import Any

from worker.sdk import attempt_hooks
from worker.sdk.logger import logger

_pending: set[asyncio.Future[Any]] = set()


def wait_until(awaitable: Awaitable[Any]) -> asyncio.Future[Any]:
    future = asyncio.ensure_future(awaitable)
    _pending.add(future)
    future.add_done_callback(_pending.discard)
    return future


async def _settle(ctx: object) -> dict[str, object] | None:
    for future in list(_pending):
        try:
            await future
        except Exception as exc:
            logger.error(f"wait_until: {type(exc).__name__}: {exc}")
    return None


async def _before_checkpoint(ctx: object) -> None:
    """A checkpointing process completes nothing: settle before it stops."""
    await _settle(ctx)


class Heartbeats:
    def __init__(self) -> None:
        self._last = time.time()

    async def yield_(self) -> None:
        self._last = time.time()
        await asyncio.sleep(0)

    def get_last_heartbeat(self) -> float:
        """When :meth:`yield_` last ran (epoch seconds)."""
        return self._last


attempt_hooks.on_attempt_end(_settle, busy=lambda: bool(_pending))
attempt_hooks.on_checkpoint(_before_checkpoint)
heartbeats = Heartbeats()
