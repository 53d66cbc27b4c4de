"""The W3C trace context of a run (docs/api.md, "Traces").

Every run gets, at trigger time, a trace id, the id of its own span (the parent of its attempts'
spans) and the id of the span it was triggered from:

* an external caller's ``traceparent`` header on the trigger request wins (its trace continues);
* otherwise a child run (``parentRunId``) joins its parent's trace under the parent's run span
  (the SDK inside a run also sends ``traceparent``: the span that triggered the child);
* otherwise a new trace starts.

The request's header reaches the engine's ``RunCreator`` through the
:data:`TRACEPARENT` context variable, set by the API's request middleware (worker/api/
observability.py), so every trigger path (one run, batches, the v2/v3 twins) honours it.
"""

from __future__ import annotations

import hashlib
import os
import re
from contextvars import ContextVar
from dataclasses import dataclass

#: the ``traceparent`` header of the request being served, if any
TRACEPARENT: ContextVar[str | None] = ContextVar("trigger_traceparent", default=None)

_TRACEPARENT = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")


@dataclass(frozen=True)
class RunTrace:
    trace_id: str
    span_id: str
    parent_span_id: str | None

    @property
    def traceparent(self) -> str:
        return f"00-{self.trace_id}-{self.span_id}-01"


def new_trace_id() -> str:
    return os.urandom(16).hex()


def new_span_id() -> str:
    return os.urandom(8).hex()


def parse_traceparent(value: str | None) -> tuple[str, str] | None:
    """``(trace_id, span_id)`` of a valid W3C ``traceparent``; None for anything else (an
    invalid header is ignored, as the W3C spec asks, rather than failing the trigger)."""
    if not value:
        return None
    match = _TRACEPARENT.match(value.strip().lower())
    if match is None or match.group(1) == "ff":
        return None
    trace_id, span_id = match.group(2), match.group(3)
    if trace_id == "0" * 32 or span_id == "0" * 16:
        return None
    return trace_id, span_id


def for_new_run(parent_trace_id: str | None, parent_span_id: str | None) -> RunTrace:
    """The trace context of a run being created; ``parent_*`` is the parent run's, if any."""
    given = parse_traceparent(TRACEPARENT.get())
    if given is not None:
        return RunTrace(given[0], new_span_id(), given[1])
    if parent_trace_id:
        return RunTrace(parent_trace_id, new_span_id(), parent_span_id)
    return RunTrace(new_trace_id(), new_span_id(), None)


def derived(run_id: str) -> RunTrace:
    """Ids for a run created before runs had a trace context (stable: derived from its id)."""
    digest = hashlib.sha256(run_id.encode()).hexdigest()
    return RunTrace(digest[:32], digest[32:48], None)


def of_row(row: dict[str, object]) -> RunTrace:
    """The trace context stored on a runs row (``trace_id``, ``span_id``, ``parent_span_id``)."""
    trace_id, span_id = row.get("trace_id"), row.get("span_id")
    if isinstance(trace_id, str) and isinstance(span_id, str):
        parent = row.get("parent_span_id")
        return RunTrace(trace_id, span_id, parent if isinstance(parent, str) else None)
    return derived(str(row["id"]))
