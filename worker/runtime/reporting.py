"""The supervisor's reporting to the API: batched completions and logs, lease hand-back.

A mixin of :class:`worker.runtime.supervisor.Supervisor` (kept apart to keep that module short).
Completions are flushed every 50 ms in one ``/complete`` call (re-queued when the API is
unreachable, so a result is never lost while we still hold the lease); log records are batched
every 200 ms and bounded (:data:`MAX_PENDING_LOGS`): a long API outage drops the oldest records
instead of growing the worker's memory without limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING, Any

from worker.runtime.api_client import ProtocolError, WorkerApi

if TYPE_CHECKING:
    from worker.runtime.supervisor import InFlight

#: log records kept while the API is unreachable; older ones are dropped beyond this
MAX_PENDING_LOGS = 50_000


def _refused_for_good(exc: ProtocolError) -> bool:
    """A 4xx other than a timeout or rate limit: sending the same request again cannot help."""
    return 400 <= exc.status < 500 and exc.status not in (408, 429)


class Reporting:
    api: WorkerApi
    completions: list[dict[str, Any]]
    #: the batch a /complete call is sending now: its runs are still ours and heartbeated
    completing: list[dict[str, Any]]
    logs: list[dict[str, Any]]
    inflight: dict[str, InFlight]
    #: set when a completion is queued, so it is sent at once
    completed: asyncio.Event
    dropped_logs: int

    def emit(self, event: dict[str, Any]) -> None:
        raise NotImplementedError

    def _retry_here(self, run: dict[str, Any]) -> None:
        """Run the next attempt the engine started in place (``RETRY_IMMEDIATELY``)."""
        raise NotImplementedError

    # --- logs --------------------------------------------------------------------------

    def _on_log(self, frame: dict[str, Any]) -> None:
        if frame.get("type") == "clock":
            self._on_clock(frame)
            return
        rec = {k: frame.get(k) for k in ("run_id", "attempt_number", "level", "message",
                                         "attributes", "time", "span_id")}
        if len(self.logs) >= MAX_PENDING_LOGS:  # the API is down: never grow without bound
            del self.logs[: MAX_PENDING_LOGS // 10]
            self.dropped_logs += MAX_PENDING_LOGS // 10
        self.logs.append(rec)
        flight = self.inflight.get(str(rec["run_id"]))
        self.emit({"type": "log", "run_id": rec["run_id"],
                   "task_id": flight.run.get("task_id") if flight else None,
                   "level": rec["level"], "message": rec["message"],
                   "attributes": rec["attributes"]})

    def _on_clock(self, frame: dict[str, Any]) -> None:
        """Time a run spends in a durable wait does not count against its max_duration."""
        flight = self.inflight.get(str(frame.get("run_id")))
        if flight is not None:
            flight.pause(bool(frame.get("paused")))

    async def _flush_loop(self) -> None:
        last_logs = 0.0
        while True:
            # Flush as soon as a completion is there; whatever finishes while a /complete call
            # is in flight goes in the next batch (batching without a fixed delay).
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.completed.wait(), 0.2)
            self.completed.clear()
            await self._flush_completions()
            if self.logs and time.monotonic() - last_logs >= 0.2:
                last_logs = time.monotonic()
                await self._flush_logs()

    async def _flush_completions(self) -> None:
        if not self.completions:
            return
        batch, self.completions = self.completions, []
        meta = {c["run_id"]: (c.pop("_task_id", None), c.pop("_max_attempts", None))
                for c in batch}
        self.completing = batch
        try:
            try:
                results = await self.api.complete(batch)
            except ProtocolError as exc:
                if not _refused_for_good(exc):
                    raise
                # the API will never take this batch as it is: each completion alone, so one
                # that it refuses cannot hold back the others
                results = await self._complete_one_by_one(batch)
        except Exception as exc:
            self.completing = []
            self.emit({"type": "error", "message": f"complete failed: {exc}"})
            for c in batch:
                c["_task_id"], c["_max_attempts"] = meta.get(c["run_id"], (None, None))
            self.completions = batch + self.completions
            await asyncio.sleep(1.0)
            return
        self.completing = []
        by_id = {r.get("run_id"): r for r in results}
        for c in batch:
            result = by_id.get(c["run_id"], {})
            if result.get("outcome") == "RETRY_IMMEDIATELY" and result.get("next"):
                self._retry_here(result["next"])
            task_id, max_attempts = meta[c["run_id"]]
            self.emit({"type": "run_finished", "run_id": c["run_id"], "task_id": task_id,
                       "attempt": c.get("attempt_number"), "ok": c["ok"],
                       "status": result.get("status"), "outcome": result.get("outcome"),
                       "duration_ms": c.get("duration_ms"),
                       "error": None if c["ok"] else c.get("error"),
                       "retry_delay_ms": (c.get("retry") or {}).get("delay_ms"),
                       "max_attempts": max_attempts})

    async def _complete_one_by_one(self, batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
        results: list[dict[str, Any]] = []
        for completion in batch:
            try:
                results += await self.api.complete([completion])
            except ProtocolError as exc:
                if not _refused_for_good(exc):
                    raise
                self.emit({"type": "error", "message":
                           f"the API refused the completion of run {completion['run_id']}: {exc}"})
                results.append({"run_id": completion["run_id"], "outcome": "REFUSED"})
        return results

    async def _flush_logs(self) -> None:
        batch, self.logs = self.logs[:5000], self.logs[5000:]
        try:
            await self.api.logs(batch)
        except Exception as exc:
            self.emit({"type": "error", "message": f"sending logs failed: {exc}"})

    async def _release(self, run_ids: list[str]) -> None:
        if not run_ids:
            return
        try:
            await self.api.release(run_ids)
        except Exception as exc:
            self.emit({"type": "error", "message": f"release failed: {exc}"})
