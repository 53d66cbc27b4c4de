"""Leasing: the dequeue long-poll loop and the heartbeat loop of a worker replica.

Each is given what it needs as callables, so neither knows the supervisor.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from worker.common.protocol import DequeuedRun, HeartbeatResponse, Wire
from worker.runtime.api_client import WorkerApi, retry_delay
from worker.runtime.slots import Slots

Emit = Callable[[Wire], None]


async def dequeue_loop(api: WorkerApi, *, stopping: Callable[[], bool], slots: Slots,
                       version_id: Callable[[], str], defer: Callable[[], bool], wait_ms: int,
                       leased: Callable[[list[DequeuedRun]], Awaitable[None]],
                       emit: Emit, stream: bool = True) -> None:
    """Long-poll ``/dequeue`` for as many runs as there are free slots; hand them to
    ``leased``. Waits on ``slots.capacity`` (set when a slot frees up) while there is none, or
    while ``defer()`` says the completions being reported lease the slots (slots.py).

    With ``stream`` the poll stays open after a batch (docs/protocol.md, "Streamed dequeue"):
    each batch that arrives takes its share of the slots reserved for the poll, and the rest
    stays reserved until the API ends the stream (those slots' worth of runs, or ``wait_ms``)."""
    failures = 0
    capacity = slots.capacity
    while not stopping():
        capacity.clear()  # before the checks: a slot freed after them sets it again
        free = 0 if defer() else slots.reserve()
        if free <= 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await capacity.wait()
            continue
        reserved = free

        async def batch(runs: list[Wire]) -> None:
            nonlocal reserved
            dequeued = [DequeuedRun.from_wire(run) for run in runs]
            # the runs count as starting as soon as ``leased`` begins, before its first await
            given = min(len(dequeued), reserved)
            reserved -= given
            slots.release(given)
            await leased(dequeued)

        # Only the current version: an old one only finishes what it runs. A run locked to
        # a version nobody serves any more migrates to this one when it is leased again
        # (docs/run-states.md, "Versions").
        slots.polling = True
        failed: Exception | None = None
        try:
            if stream:
                await api.dequeue_stream([version_id()], free, wait_ms, batch)
            else:
                await batch(await api.dequeue([version_id()], free, wait_ms))
        except Exception as exc:
            failed = exc
        finally:
            slots.polling = False
            slots.release(reserved)
        if failed is not None:
            emit({"type": "error", "message": f"dequeue failed: {failed}"})
            failures += 1
            await asyncio.sleep(retry_delay(failures))  # back within ~1 s of the API
            continue
        failures = 0


async def heartbeat_loop(api: WorkerApi, *, interval: Callable[[], float],
                         held: Callable[[], list[str]],
                         lose: Callable[[str, bool], None], emit: Emit) -> None:
    """Every ``interval()`` seconds, extend the leases of ``held()``; ``lose(run_id,
    canceled)`` each run the engine no longer gives us."""
    while True:
        await asyncio.sleep(interval())
        ids = list(dict.fromkeys(held()))  # sent even when empty: it says this worker is alive
        try:
            reply = HeartbeatResponse.from_wire(await api.heartbeat(ids))
        except Exception as exc:
            emit({"type": "error", "message": f"heartbeat failed: {exc}"})
            continue
        canceled = set(reply.canceled)
        for run_id in reply.lost:
            lose(run_id, run_id in canceled)
