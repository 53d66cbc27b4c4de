"""Span ids both the executor and the supervisor can compute for an attempt (no SDK needed).

An attempt's span id is derived from the dequeued run message, so the supervisor can close
the span of an executor that died mid-run (crash, OOM or timeout kill) with the same id the
executor would have used, and the engine's trace view shows one attempt span, not two.
"""

from __future__ import annotations

import hashlib
from typing import Any

from worker.engine.trace_context import derived, parse_traceparent


def run_span(run: dict[str, Any]) -> tuple[str, str]:
    """``(trace_id, run span id)`` of a dequeued run (its ``traceparent``)."""
    found = parse_traceparent(run.get("traceparent"))
    if found is not None:
        return found
    fallback = derived(str(run["run_id"]))
    return fallback.trace_id, fallback.span_id


def attempt_span_id(run: dict[str, Any]) -> str:
    """Distinct per attempt and per resume of it (a resume replays a longer journal)."""
    journal = run.get("journal") or (run.get("ctx") or {}).get("journal") or []
    seed = (f"{run['run_id']}:{run.get('attempt_number') or 1}:{len(journal)}:"
            f"{bool(run.get('resumed'))}")
    span_id = hashlib.sha256(seed.encode()).hexdigest()[:16]
    return span_id if span_id != "0" * 16 else "1" * 16


def attempt_span_name(run: dict[str, Any]) -> str:
    return f"Attempt {run.get('attempt_number') or 1}"
