"""Per-run capture of ``logger.*`` records and ``print``/stdout/stderr in an executor.

Each record becomes a ``log`` frame to the supervisor, tagged with the run and attempt, which
batches it to ``/engine/v1/worker/logs``. ``logger.*`` is filtered by the config's ``log_level``;
console output is always captured (as Trigger.dev's console interceptor).
"""

from __future__ import annotations

import io
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TextIO

from worker.runtime import telemetry
from worker.sdk import logger as sdk_logger
from worker.sdk.tracing import current_span_id

LEVEL_RANK = {"debug": 10, "log": 20, "info": 20, "warn": 30, "error": 40, "none": 100}

Emit = Callable[[dict[str, Any]], None]


def now_iso() -> str:
    return datetime.now(UTC).isoformat()


class _StreamToLog(io.TextIOBase):
    """A text stream that turns each written line into a log record."""

    def __init__(self, capture: RunCapture, level: str) -> None:
        self._capture = capture
        self._level = level
        self._buf = ""

    def writable(self) -> bool:
        return True

    def write(self, s: str) -> int:
        self._buf += s
        while "\n" in self._buf:
            line, self._buf = self._buf.split("\n", 1)
            self._capture.record(self._level, line, {}, console=True)
        return len(s)

    def flush(self) -> None:
        if self._buf:
            line, self._buf = self._buf, ""
            self._capture.record(self._level, line, {}, console=True)


class RunCapture:
    """Installs the sinks for one attempt; use as a context manager."""

    def __init__(self, emit: Emit, run_id: str, attempt: int, log_level: str = "info") -> None:
        self._emit = emit
        self.run_id = run_id
        self.attempt = attempt
        self.min_rank = LEVEL_RANK.get(log_level, 20)
        self._saved: tuple[TextIO, TextIO] | None = None
        self._stdout = _StreamToLog(self, "info")
        self._stderr = _StreamToLog(self, "error")

    def record(self, level: str, message: str, attributes: dict[str, Any],
               console: bool = False) -> None:
        if not console and LEVEL_RANK.get(level, 20) < self.min_rank:
            return
        span_id = current_span_id()
        telemetry.emit_log(level, message, attributes)
        self._emit({
            "type": "log",
            "span_id": span_id,
            "run_id": self.run_id,
            "attempt_number": self.attempt,
            "level": level,
            "message": message,
            "attributes": attributes,
            "time": now_iso(),
        })

    def __enter__(self) -> RunCapture:
        self._saved = (sys.stdout, sys.stderr)
        sys.stdout = self._stdout
        sys.stderr = self._stderr
        sdk_logger.set_sink(self.record)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stdout.flush()
        self._stderr.flush()
        sdk_logger.set_sink(None)
        if self._saved:
            sys.stdout, sys.stderr = self._saved
            self._saved = None
