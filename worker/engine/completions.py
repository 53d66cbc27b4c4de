"""What a worker sends in ``/complete`` and ``/logs``, checked item by item (docs/protocol.md).

One bad item never spoils its neighbours: an item that cannot be applied at all (no usable run
id or attempt number) is refused on its own; anything else is repaired where the result can be
kept — a NUL in the output text is escaped, an unusable error becomes ``TASK_RUN_CRASHED``, a
retry delay is clamped, bad metadata is dropped (and logged) when it is applied — and an output
that can never be shown again fails the attempt with ``TASK_OUTPUT_ERROR``. Log lines are
sanitised the same way, never refused for their content.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson

from worker.common.errors import internal_error
from worker.common.limits import (
    MAX_INT32,
    MAX_LOG_LEVEL_LENGTH,
    MAX_NAME_LENGTH,
    MAX_RETRY_DELAY_MS,
    clean_json,
    clean_text,
    json_problem,
    text_depth_may_exceed,
)
from worker.common.machines import MACHINE_PRESETS
from worker.common.protocol import Completion, CompletionResult, Outcome, Wire
from worker.engine.models import MAX_OUTPUT_BYTES

_SPAN_ID = re.compile(r"[0-9a-f]{16}")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Refused:
    """A completion that names no run attempt we could apply it to."""

    run_id: object
    reason: str

    def result(self) -> CompletionResult:
        run_id = self.run_id if isinstance(self.run_id, str) else None
        return CompletionResult(run_id, Outcome.REFUSED, error=self.reason)


def _run_id(value: object) -> str | None:
    if isinstance(value, str) and 0 < len(value) <= MAX_NAME_LENGTH and "\x00" not in value:
        return value
    return None


def _attempt(value: object) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_INT32:
        return value
    return None


def _output_problem(output: str, output_type: str) -> str | None:
    """Why a successful output can never be returned by the API, or None."""
    if len(output) > MAX_OUTPUT_BYTES:
        return f"output is {len(output)} bytes; the limit is {MAX_OUTPUT_BYTES} bytes (10 MiB)"
    if output_type != "application/json":
        return None
    try:
        value = orjson.loads(output)
    except orjson.JSONDecodeError as exc:
        return f"output is not valid JSON although its type is application/json: {exc}"
    if text_depth_may_exceed(output):
        problem = json_problem(value, nul_ok=True)
        if problem:
            return f"output {problem}"
    return None


def clean_completion(raw: object) -> Completion | Refused:
    """A completion item the engine can apply without an error of its own, or why not."""
    if not isinstance(raw, dict):
        return Refused(None, "each completion must be an object")
    run_id = _run_id(raw.get("run_id"))
    if run_id is None:
        return Refused(raw.get("run_id"), "run_id must be a run id string")
    attempt = _attempt(raw.get("attempt_number"))
    if attempt is None:
        return Refused(run_id, f"attempt_number must be an integer from 1 to {MAX_INT32}")
    # checked (and dropped when bad) where it is applied
    metadata = raw.get("metadata") or None
    if raw.get("ok") is True:
        output = raw.get("output")
        output_type = raw.get("output_type")
        if not isinstance(output_type, str) or not 0 < len(output_type) <= 256:
            output_type = "application/json"
        output_type = clean_text(output_type)
        if output is None:
            return Completion(run_id, attempt, True, None, output_type, metadata=metadata)
        problem: str | None
        if not isinstance(output, str):
            problem = f"output must be serialised text, not a JSON {type(output).__name__}"
        else:
            output = clean_text(output)  # a raw NUL cannot be stored: keep it escaped
            problem = _output_problem(output, output_type)
        if problem is None:
            return Completion(run_id, attempt, True, output, output_type, metadata=metadata)
        return Completion(run_id, attempt, False,
                          error=internal_error("TASK_OUTPUT_ERROR", problem),
                          skipped_retrying=True, metadata=metadata)
    sent = raw.get("error")
    if isinstance(sent, dict) and isinstance(sent.get("type"), str):
        error = clean_json(sent)
    else:
        error = internal_error("TASK_RUN_CRASHED", "the worker sent a failure without an error")
    retry = raw.get("retry")
    delay_ms: int | None = None
    if isinstance(retry, dict):
        delay = retry.get("delay_ms", 0)
        if not isinstance(delay, int | float) or isinstance(delay, bool) or delay != delay:
            delay = 0
        delay_ms = int(min(max(delay, 0), MAX_RETRY_DELAY_MS))
    machine = raw.get("retry_machine")
    return Completion(
        run_id, attempt, False, error=error, retry_delay_ms=delay_ms,
        skipped_retrying=raw.get("skipped_retrying") is True,
        retry_in_place=raw.get("retry_in_place") is True,
        retry_machine=machine if isinstance(machine, str) and machine in MACHINE_PRESETS
        else None,
        metadata=metadata,
    )


def _logged_at(value: object, now: str) -> str:
    if isinstance(value, str) and "\x00" not in value:
        try:
            when = datetime.fromisoformat(value)
        except ValueError:
            return now
        if 1970 <= when.year <= 9999:
            return when.isoformat() if when.tzinfo else when.replace(tzinfo=UTC).isoformat()
    return now


def clean_log(entry: object, now: str) -> Wire | None:
    """A storable log line (NUL escaped, types fixed), or None when it names no run."""
    if not isinstance(entry, dict):
        return None
    run_id = _run_id(entry.get("run_id"))
    if run_id is None:
        return None
    attempt = entry.get("attempt_number")
    level = entry.get("level")
    message = entry.get("message", "")
    attributes = entry.get("attributes")
    return {
        "run_id": run_id,
        "attempt_number": attempt if _attempt(attempt) else 0,
        "level": clean_text(level[:MAX_LOG_LEVEL_LENGTH]) if isinstance(level, str) else "info",
        "message": clean_text(message if isinstance(message, str) else str(message)),
        "attributes": clean_json(attributes),
        "logged_at": _logged_at(entry.get("time"), now),
        # the span current when the line was written (16 hex digits), for the trace view
        "span_id": span if isinstance(span := entry.get("span_id"), str)
        and _SPAN_ID.fullmatch(span) else None,
    }
