"""``logger``: structured, levelled logs from task code.

Inside a worker executor the runtime installs a sink that tags each record with the current run
and ships it to the API; elsewhere records go to the standard ``logging`` module. Either way the
values of attributes whose key looks secret (password, token, secret, key, auth, ...) are
replaced by ``"[REDACTED]"`` before they leave the call, at any depth of nesting, and the
password of anything that looks like a URL with credentials (``postgresql://u:PASS@host``) is
replaced in every string value and in the message.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from worker.sdk.redaction import redact, redact_text

LEVELS = {"debug": 10, "log": 20, "info": 20, "warn": 30, "error": 40}

Sink = Callable[[str, str, dict[str, Any]], None]

_std = logging.getLogger("worker.task")

def _default_sink(level: str, message: str, attributes: dict[str, Any]) -> None:
    _std.log(LEVELS[level], "%s %s", message, attributes if attributes else "")


_sink: Sink = _default_sink


def set_sink(sink: Sink | None) -> None:
    """Install the function that receives every record (``None`` restores the default)."""
    global _sink
    _sink = sink or _default_sink


def _attributes(given: object, keywords: Mapping[str, object]) -> dict[str, object]:
    """Trigger.dev's positional attributes object (``logger.info("msg", {"user_id": 1})``)
    merged with keyword attributes; a non-mapping positional value is kept under ``value``."""
    if given is None:
        return dict(keywords)
    if isinstance(given, Mapping):
        return {**given, **keywords}
    return {"value": given, **keywords}


class TaskLogger:
    """``logger.info("msg", {"user_id": 1})`` or ``logger.info("msg", user_id=1)``."""

    def debug(self, message: str, attributes: object = None, /, **kw: object) -> None:
        _sink("debug", redact_text(str(message)), redact(_attributes(attributes, kw)))

    def log(self, message: str, attributes: object = None, /, **kw: object) -> None:
        _sink("log", redact_text(str(message)), redact(_attributes(attributes, kw)))

    def info(self, message: str, attributes: object = None, /, **kw: object) -> None:
        _sink("info", redact_text(str(message)), redact(_attributes(attributes, kw)))

    def warn(self, message: str, attributes: object = None, /, **kw: object) -> None:
        _sink("warn", redact_text(str(message)), redact(_attributes(attributes, kw)))

    def error(self, message: str, attributes: object = None, /, **kw: object) -> None:
        _sink("error", redact_text(str(message)), redact(_attributes(attributes, kw)))

    def trace(
        self, name: str, fn: object = None, /, attributes: Mapping[str, object] | None = None
    ) -> Any:
        """A span (worker/sdk/tracing.py): ``with``/``async with logger.trace("name") as
        span``, ``@logger.trace("name")``, or Trigger.dev's ``await logger.trace("name", fn)``
        where ``fn(span)``. The span is recorded in the run's logs when it ends."""
        # lazy: OpenTelemetry costs ~30 ms to import and ``import worker`` imports this module
        from worker.sdk.tracing import trace

        return trace(name, fn, attributes)

    def start_span(self, name: str, attributes: Mapping[str, object] | None = None) -> Any:
        """A span ended by ``span.end()`` (worker/sdk/tracing.py)."""
        from worker.sdk.tracing import start_span  # lazy: see trace()

        return start_span(name, attributes)


logger = TaskLogger()
