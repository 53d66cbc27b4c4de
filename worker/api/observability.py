"""The API's own observability: request ids, the caller's ``traceparent``, server logs.

* :class:`RequestContextMiddleware` (pure ASGI): every request gets an id (the caller's
  ``x-request-id`` when it is a short token, else 16 random hex digits), returned in
  ``x-request-id`` and written on every log line of the request; the ``traceparent`` header is
  handed to the trigger code (worker/common/trace_context.py) so an external caller's trace is
  honoured. The same pass over the headers feeds the request limits (worker/api/guards.py).
* :func:`configure_logging`: timestamps, levels, logger names and request ids on every line,
  ``text`` or ``json`` (``trigger api --log-format json`` / ``TRIGGER_LOG_FORMAT``), with
  secrets scrubbed from messages (secret keys, bearer tokens, DSN passwords, callback
  signatures).
"""

from __future__ import annotations

import logging
import os
import re
import sys
from contextvars import ContextVar
from datetime import UTC, datetime

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from worker.api.guards import refusal
from worker.common.trace_context import TRACEPARENT
from worker.sdk.logger import redact_text

REQUEST_ID: ContextVar[str] = ContextVar("trigger_request_id", default="-")
_SAFE_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_SECRETS = re.compile(
    r"(tr_(?:dev|stg|prod|pat|preview)_[A-Za-z0-9_-]+)|((?:Bearer|bearer)\s+)[^\s\"']+"
    r"|(/callback/)[^/?\s\"']+")


def scrub(text: str) -> str:
    """``text`` without secret keys, bearer tokens, callback signatures or DSN passwords."""
    def repl(match: re.Match[str]) -> str:
        if match.group(1):
            return match.group(1)[:8] + "[REDACTED]"
        return (match.group(2) or match.group(3)) + "[REDACTED]"

    text = redact_text(text)
    # every match holds one of these: most lines (access log lines) hold none
    if "tr_" in text or "earer" in text or "/callback/" in text:
        return _SECRETS.sub(repl, text)
    return text


class RequestContextMiddleware:
    """Request id and ``traceparent`` for the request's code and log lines, and the limits
    checked before any route runs (worker/api/guards.py ``refusal``): one pass over the
    headers for both."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = traceparent = declared = None
        size = 0
        for key, value in scope.get("headers") or ():
            size += len(key) + len(value) + 4
            if key == b"x-request-id":
                given = value.decode("latin-1")
            elif key == b"traceparent":
                traceparent = value.decode("latin-1")
            elif key == b"content-length":
                declared = value
        request_id = given if given and _SAFE_ID.match(given) else os.urandom(8).hex()
        id_token = REQUEST_ID.set(request_id)
        trace_token = TRACEPARENT.set(traceparent)
        id_header = (b"x-request-id", request_id.encode())

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), id_header]
            await send(message)

        try:
            problem = refusal(scope, size, declared)
            if problem is not None:
                await problem(scope, receive, send_with_id)
            else:
                await self.app(scope, receive, send_with_id)
        finally:
            TRACEPARENT.reset(trace_token)
            REQUEST_ID.reset(id_token)


class _Context(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = REQUEST_ID.get()
        return True


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s [%(request_id)s] %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        return scrub(super().format(record))


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {"time": datetime.fromtimestamp(record.created, UTC).isoformat(),
                 "level": record.levelname.lower(), "logger": record.name,
                 "request_id": getattr(record, "request_id", "-"),
                 "message": scrub(record.getMessage())}
        if record.exc_info:
            entry["exception"] = scrub(self.formatException(record.exc_info))
        return orjson.dumps(entry).decode()


def configure_logging(fmt: str = "text", level: str = "info") -> None:
    """Route every logger (the engine's, uvicorn's) to stderr in ``fmt`` (text | json)."""
    if fmt not in ("text", "json"):
        raise ValueError("log format must be 'text' or 'json'")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(_Context())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
