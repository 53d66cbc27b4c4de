"""What happens to a run after a failed attempt (docs/triggerdev-semantics.md, "Retry decision",
"Error codes")."""

from __future__ import annotations

from dataclasses import dataclass

from worker.common.errors import (
    LOOKUP_RETRY_CODES,
    NON_RETRYABLE_CODES,
    TASK_PROCESS_OOM_KILLED,
    error_code,
    final_status_for,
)
from worker.common.limits import MAX_RETRY_DELAY_MS
from worker.common.protocol import Wire
from worker.common.retry import MAX_ATTEMPTS_HARD_CAP, next_retry_delay_ms


@dataclass(frozen=True)
class Outcome:
    retry: bool
    #: delay before the next attempt when retrying
    delay_ms: int = 0
    #: internal final status when not retrying
    status: str = ""
    #: the machine preset the next attempt runs on (an out-of-memory retry), else unchanged
    machine: str | None = None


def decide(
    error: Wire,
    attempt_number: int,
    max_attempts: int | None,
    locked_retry: Wire | None,
    worker_retry: Wire | None,
    skipped_retrying: bool,
    machine: str | None = None,
) -> Outcome:
    """:func:`_decide`, with the delay kept within what the engine stores (~24.8 days)."""
    try:
        outcome = _decide(
            error, attempt_number, max_attempts, locked_retry, worker_retry, skipped_retrying,
            machine,
        )
    except (OverflowError, TypeError, ValueError):  # a retry config beyond reason: no retry
        outcome = Outcome(retry=False, status=final_status_for(error))
    if outcome.delay_ms > MAX_RETRY_DELAY_MS:
        return Outcome(outcome.retry, MAX_RETRY_DELAY_MS, outcome.status, outcome.machine)
    return outcome


def _decide(
    error: Wire,
    attempt_number: int,
    max_attempts: int | None,
    locked_retry: Wire | None,
    worker_retry: Wire | None,
    skipped_retrying: bool,
    machine: str | None = None,
) -> Outcome:
    """Retry or fail for good.

    The worker decides for errors raised in task code (it ran ``catch_error`` and knows the
    delay); the engine decides for processes that died before they could (``LOOKUP_RETRY_CODES``),
    from the retry config locked at the first lease.
    """
    code = error_code(error)
    final = Outcome(retry=False, status=final_status_for(error))
    if code == TASK_PROCESS_OOM_KILLED:
        # Out of memory retries only on the machine named by retry.out_of_memory.machine, and
        # whenever it differs from the current one: like Trigger.dev's engine, the run's
        # max_attempts does not count here (the move happens at most once per machine).
        bigger = ((locked_retry or {}).get("out_of_memory") or {}).get("machine")
        if bigger and bigger != machine and attempt_number < MAX_ATTEMPTS_HARD_CAP:
            delay = next_retry_delay_ms(locked_retry or {}, attempt_number)
            return Outcome(retry=True, delay_ms=delay, machine=bigger)
        return final
    if max_attempts is None or attempt_number >= min(max_attempts, MAX_ATTEMPTS_HARD_CAP):
        return final
    if skipped_retrying or code in NON_RETRYABLE_CODES:
        return final
    if worker_retry is not None:
        return Outcome(retry=True, delay_ms=max(0, int(worker_retry.get("delay_ms", 0))))
    if code in LOOKUP_RETRY_CODES and locked_retry is not None:
        return Outcome(retry=True, delay_ms=next_retry_delay_ms(locked_retry, attempt_number))
    return final
