"""Completions the runtime builds outside an attempt, and the out-of-memory retry machine.

Apart from :mod:`worker.runtime.attempt` so that the supervisor, which needs only these, does
not import the SDK, pydantic and OpenTelemetry the executors run tasks with: that keeps its
start-up and its memory small (docs/benchmarks.md, "Cold start").
"""

from __future__ import annotations

from typing import Any

from worker.common.retry import MAX_ATTEMPTS_HARD_CAP


def oom_retry_machine(run: dict[str, Any], retry: dict[str, Any] | None = None) -> str | None:
    """The machine an out-of-memory attempt retries on, or None (docs/triggerdev-semantics.md,
    "Retry decision").

    ``retry.out_of_memory.machine`` of the run's locked retry options, when it differs from the
    machine the attempt ran on and attempts remain.
    """
    retry = retry if retry is not None else (run.get("retry") or {})
    machine = ((retry.get("out_of_memory") or {}).get("machine")
               if isinstance(retry.get("out_of_memory"), dict) else None)
    if not machine or machine == run.get("machine") or run.get("is_final_attempt"):
        return None
    max_attempts = int(run.get("max_attempts") or retry.get("max_attempts") or 1)
    if int(run.get("attempt_number") or 1) >= min(max_attempts, MAX_ATTEMPTS_HARD_CAP):
        return None
    return str(machine)


def failed_completion(run: dict[str, Any], error: dict[str, Any], *,
                      skipped: bool = True) -> dict[str, Any]:
    """A failed completion built outside an Attempt (unknown task, timeout, crash)."""
    return {"run_id": run["run_id"], "attempt_number": int(run.get("attempt_number") or 1),
            "ok": False, "error": error, "retry": None, "skipped_retrying": skipped}
