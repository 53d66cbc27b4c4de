"""Reporting to the API: batched completions and logs, their flush loop, lease hand-back.

Completions are flushed as soon as one is queued, in one ``/complete`` call (re-queued when the
API is unreachable, so a result is never lost while we still hold the lease); log records are
batched every 200 ms and bounded (:data:`MAX_PENDING_LOGS`): a long API outage drops the oldest
records instead of growing the worker's memory without limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from worker.common.protocol import Completion, CompletionResult, DequeuedRun, Outcome, Wire
from worker.runtime.api_client import ProtocolError, WorkerApi
from worker.runtime.inflight import RunTable
from worker.runtime.slots import Lease, Slots

#: log records kept while the API is unreachable; older ones are dropped beyond this
MAX_PENDING_LOGS = 50_000
#: log records per ``/logs`` call
LOG_BATCH = 5000

Emit = Callable[[Wire], None]


@dataclass(frozen=True, slots=True)
class Finished:
    """A completion waiting for ``/complete``, with what the worker's events say about its run
    (kept beside the wire message, never sent)."""

    completion: Completion
    task_id: str
    max_attempts: int | None

    @property
    def run_id(self) -> str:
        return self.completion.run_id


def _refused_for_good(exc: ProtocolError) -> bool:
    """A 4xx other than a timeout or rate limit: sending the same request again cannot help."""
    return 400 <= exc.status < 500 and exc.status not in (408, 429)


class Reporter:
    def __init__(self, api: WorkerApi, runs: RunTable, emit: Emit,
                 retry_here: Callable[[DequeuedRun], None], slots: Slots | None = None,
                 leased: Callable[[list[DequeuedRun]], Awaitable[None]] | None = None,
                 linger: Callable[[], bool] | None = None, linger_ms: float = 0.0) -> None:
        self.api = api
        self.runs = runs
        self.emit = emit
        #: runs the next attempt the engine started in place (``RETRY_IMMEDIATELY``)
        self.retry_here = retry_here
        #: with both, ``/complete`` also leases the next runs (slots.py) and starts them
        self.slots = slots
        self.leased = leased
        #: True while queued completions may wait for more (runs leased ahead are still
        #: waiting for executors: the next ``/complete``, and the runs it leases, can wait)
        self.linger = linger if linger_ms > 0 else None
        self.linger_s = linger_ms / 1000
        self.completions: list[Finished] = []
        #: the batch a /complete call is sending now: its runs are still ours and heartbeated
        self.completing: list[Finished] = []
        self.logs: list[Wire] = []
        #: set when a completion is queued, so it is sent at once
        self.completed = asyncio.Event()
        self.dropped_logs = 0

    def held(self) -> list[str]:
        """Runs whose completion is not accepted yet: their leases must be kept."""
        return [f.run_id for f in self.completions] + [f.run_id for f in self.completing]

    def finished(self, item: Finished) -> None:
        completions = self.completions
        completions.append(item)
        # while lingering, the flush loop is woken only once the batch should go
        if len(completions) == 1 or self.linger is None or not self.linger():
            self.completed.set()

    def forget(self, run_id: str) -> None:
        """The run is no longer ours: its completion must never be sent."""
        self.completions = [f for f in self.completions if f.run_id != run_id]

    # --- logs ----------------------------------------------------------------------------

    def on_frame(self, frame: Wire) -> None:
        """A ``log`` or ``clock`` frame of an executor."""
        if frame.get("type") == "clock":
            # time a run spends in a durable wait does not count against its max_duration
            flight = self.runs.get(str(frame.get("run_id")))
            if flight is not None:
                flight.pause(bool(frame.get("paused")))
            return
        rec = {k: frame.get(k) for k in ("run_id", "attempt_number", "level", "message",
                                         "attributes", "time", "span_id")}
        if len(self.logs) >= MAX_PENDING_LOGS:  # the API is down: never grow without bound
            del self.logs[: MAX_PENDING_LOGS // 10]
            self.dropped_logs += MAX_PENDING_LOGS // 10
        self.logs.append(rec)
        flight = self.runs.get(str(rec["run_id"]))
        self.emit({"type": "log", "run_id": rec["run_id"],
                   "task_id": flight.run.task_id if flight else None,
                   "level": rec["level"], "message": rec["message"],
                   "attributes": rec["attributes"]})

    # --- flushing ------------------------------------------------------------------------

    async def flush_loop(self) -> None:
        last_logs = 0.0
        while True:
            # Flush as soon as a completion is there; whatever finishes while a /complete call
            # is in flight goes in the next batch (batching without a fixed delay).
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.2):  # not wait_for: no task per wake-up
                    await self.completed.wait()
            self.completed.clear()
            if self.completions and self.linger is not None:
                await self._linger()
            await self.flush_completions()
            if self.logs and time.monotonic() - last_logs >= 0.2:
                last_logs = time.monotonic()
                await self.flush_logs()

    async def _linger(self) -> None:
        """Let more completions join the batch while ``linger()`` says the executors have runs
        to go on with, for at most ``linger_s``: under load each ``/complete`` then carries
        several runs (its cost in the API and Postgres is mostly per call), and the runs it
        leases arrive before the executors run out."""
        assert self.linger is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.linger_s
        while self.linger():
            self.completed.clear()
            try:
                async with asyncio.timeout_at(deadline):
                    await self.completed.wait()  # each completion queued: check again
            except TimeoutError:
                return

    async def flush_completions(self) -> None:
        if not self.completions:
            return
        batch, self.completions = self.completions, []
        self.completing = batch
        wires = [f.completion.to_wire() for f in batch]
        lease = None
        if self.slots is not None and self.leased is not None:
            lease = self.slots.lease_for_complete(
                sum(1 for f in batch if f.completion.retry_in_place))
            if lease is None:
                self.slots.capacity.set()  # no completion queued now: the long-poll may go
        try:
            try:
                if lease is not None:
                    results = await self._complete_and_lease(wires, lease)
                else:
                    results = (await self.api.complete(wires)).results
            except ProtocolError as exc:
                if not _refused_for_good(exc):
                    raise
                # the API will never take this batch as it is: each completion alone, so one
                # that it refuses cannot hold back the others
                results = await self._complete_one_by_one(wires)
        except Exception as exc:
            self.completing = []
            self.emit({"type": "error", "message": f"complete failed: {exc}"})
            self.completions = batch + self.completions
            await asyncio.sleep(1.0)
            return
        self.completing = []
        by_id = {r.run_id: r for r in results}
        for item in batch:
            result = by_id.get(item.run_id)
            if result is not None and result.outcome is Outcome.RETRY_IMMEDIATELY and result.next:
                self.retry_here(result.next)
            c = item.completion
            self.emit({"type": "run_finished", "run_id": item.run_id, "task_id": item.task_id,
                       "attempt": c.attempt_number, "ok": c.ok,
                       "status": result.status if result else None,
                       "outcome": result.outcome.value if result else None,
                       "duration_ms": c.duration_ms, "error": None if c.ok else c.error,
                       "retry_delay_ms": c.retry_delay_ms, "max_attempts": item.max_attempts})

    async def _complete_and_lease(self, wires: list[Wire],
                                  lease: Lease) -> list[CompletionResult]:
        """One ``/complete`` that also leases up to ``lease.max_runs`` runs, started at once.
        If it fails, the completions go again without a lease (with the usual retries)."""
        assert self.slots is not None and self.leased is not None
        try:
            reply = await self.api.complete(wires, lease.to_wire())
        except Exception:
            # This call only: a 4xx may be about one completion of the batch (the retry
            # without a lease sorts those out), not about the lease. An API that does not
            # lease on complete says so by a reply without "runs" (below).
            self.slots.end_lease(lease, None)
            return (await self.api.complete(wires)).results
        runs, results = reply.runs, reply.results
        dequeued = runs or []
        # before ``leased``, whose first step counts the runs as starting (no await between)
        self.slots.end_lease(lease, len(dequeued) if runs is not None else None,
                             refused=runs is None)
        if dequeued:
            await self.leased(dequeued)
        return results

    async def _complete_one_by_one(self, batch: list[Wire]) -> list[CompletionResult]:
        results: list[CompletionResult] = []
        for completion in batch:
            try:
                results += (await self.api.complete([completion])).results
            except ProtocolError as exc:
                if not _refused_for_good(exc):
                    raise
                self.emit({"type": "error", "message":
                           f"the API refused the completion of run {completion['run_id']}: {exc}"})
                results.append(CompletionResult(str(completion["run_id"]), Outcome.REFUSED))
        return results

    async def flush_logs(self) -> None:
        batch, self.logs = self.logs[:LOG_BATCH], self.logs[LOG_BATCH:]
        try:
            await self.api.logs(batch)
        except Exception as exc:
            self.emit({"type": "error", "message": f"sending logs failed: {exc}"})

    async def release(self, run_ids: list[str]) -> None:
        if not run_ids:
            return
        try:
            await self.api.release(run_ids)
        except Exception as exc:
            self.emit({"type": "error", "message": f"release failed: {exc}"})
