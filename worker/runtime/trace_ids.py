"""Span ids both the executor and the supervisor can compute for an attempt (no SDK needed).

An attempt's span id is derived from the dequeued run message, so the supervisor can close
the span of an executor that died mid-run (crash, OOM or timeout kill) with the same id the
executor would have used, and the engine's trace view shows one attempt span, not two.
"""

from __future__ import annotations

import hashlib

from worker.common.protocol import DequeuedRun
from worker.common.trace_context import derived, parse_traceparent


def run_span(run: DequeuedRun) -> tuple[str, str]:
    """``(trace_id, run span id)`` of a dequeued run (its ``traceparent``)."""
    found = parse_traceparent(run.traceparent)
    if found is not None:
        return found
    fallback = derived(run.run_id)
    return fallback.trace_id, fallback.span_id


def attempt_span_id(run: DequeuedRun) -> str:
    """Distinct per attempt and per resume of it (a resume replays a longer journal)."""
    journal = run.journal or run.ctx.journal
    seed = f"{run.run_id}:{run.attempt_number}:{len(journal)}:{run.resumed}"
    span_id = hashlib.sha256(seed.encode()).hexdigest()[:16]
    return span_id if span_id != "0" * 16 else "1" * 16


def attempt_span_name(run: DequeuedRun) -> str:
    return f"Attempt {run.attempt_number}"
