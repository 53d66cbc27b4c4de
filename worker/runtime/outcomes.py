"""Completions the runtime builds outside an attempt, and the out-of-memory retry machine.

Apart from :mod:`worker.runtime.attempt` so that the supervisor, which needs only these, does
not import the SDK, pydantic and OpenTelemetry the executors run tasks with: that keeps its
start-up and its memory small (docs/benchmarks.md, "Cold start").
"""

from __future__ import annotations

from worker.common.protocol import Completion, DequeuedRun, Wire
from worker.common.retry import MAX_ATTEMPTS_HARD_CAP


def oom_retry_machine(run: DequeuedRun, retry: Wire | None = None) -> str | None:
    """The machine an out-of-memory attempt retries on, or None (docs/triggerdev-semantics.md,
    "Retry decision").

    ``retry.out_of_memory.machine`` of the run's locked retry options, when it differs from the
    machine the attempt ran on and attempts remain.
    """
    retry = retry if retry is not None else (run.retry or {})
    machine = ((retry.get("out_of_memory") or {}).get("machine")
               if isinstance(retry.get("out_of_memory"), dict) else None)
    if not machine or machine == run.machine or run.is_final_attempt:
        return None
    max_attempts = int(run.max_attempts or retry.get("max_attempts") or 1)
    if run.attempt_number >= min(max_attempts, MAX_ATTEMPTS_HARD_CAP):
        return None
    return str(machine)


def failed_completion(run: DequeuedRun, error: Wire, *, skipped: bool = True) -> Completion:
    """A failed completion built outside an Attempt (unknown task, timeout, crash)."""
    return Completion(run.run_id, run.attempt_number, False, error=error,
                      skipped_retrying=skipped)
