"""The API's outer boundary: request limits checked before any route runs, errors as JSON.

- header block over :data:`~worker.common.limits.MAX_HEADER_BYTES` → 431, before the body is
  read; a declared body over the limit → 413 (bodies.read_body also counts streamed ones);
- a NUL character in the path or query string (Postgres text cannot hold one) → 400;
- a value Postgres refuses as data (out-of-range number, bad encoding) → 400 saying so;
- anything else that goes wrong → 500 ``{"error": "internal error", "requestId"}`` with the
  traceback in the server log under that id, never a plain-text body;
- the waitpoint callback credential (in the URL path) is redacted from access logs.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Mapping

import orjson
import psycopg
from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Scope

from worker.common.limits import MAX_BODY_BYTES, MAX_HEADER_BYTES, LimitError

log = logging.getLogger("worker.api")

_CALLBACK = re.compile(r"(/callback/)[^/?\s]+")


def _json(
    status: int, body: dict[str, object], headers: Mapping[str, str] | None = None
) -> Response:
    return Response(
        orjson.dumps(body), status_code=status, media_type="application/json", headers=headers
    )


def refusal(scope: Scope, header_bytes: int, declared: bytes | None) -> Response | None:
    """The answer to a request refused before any route runs, or None: headers over
    MAX_HEADER_BYTES (``header_bytes``: their size, 4 bytes of framing each), NUL in the
    URL, a declared body (``declared``: the Content-Length) over MAX_BODY_BYTES. Called by
    the request-context middleware (worker/api/observability.py), which has looked at every
    header already: pure ASGI, so nothing of the request is read first."""
    if header_bytes > MAX_HEADER_BYTES:
        return _json(431, {"error": f"request headers are larger than {MAX_HEADER_BYTES} bytes"})
    if "\x00" in scope.get("path", "") or b"%00" in scope.get("query_string", b""):
        return _json(
            400, {"error": "the URL contains a NUL character (%00): no id or value holds one"}
        )
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        return _json(
            413,
            {"error": f"request body is {int(declared)} bytes; the limit is {MAX_BODY_BYTES}"},
        )
    return None


class _RedactCallback(logging.Filter):
    """The HMAC in a callback URL is a credential: access logs show it as ``[redacted]``."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        # the substring test first: a regular expression per argument and line is the larger
        # part of an access log line's cost
        if isinstance(args, tuple) and any(
                isinstance(a, str) and "/callback/" in a for a in args):
            record.args = tuple(
                _CALLBACK.sub(r"\1[redacted]", a) if isinstance(a, str) else a for a in args
            )
        return True


def install(app: FastAPI) -> None:
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, _RedactCallback) for f in access.filters):
        access.addFilter(_RedactCallback())

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> Response:
        # unknown paths (404), wrong methods (405): the documented {"error"} body too
        return _json(exc.status_code, {"error": str(exc.detail)}, exc.headers)

    @app.exception_handler(LimitError)
    async def limit_error(_: Request, exc: LimitError) -> Response:
        return _json(exc.status, {"error": exc.message})

    @app.exception_handler(psycopg.DataError)
    async def data_error(request: Request, exc: psycopg.DataError) -> Response:
        # class 22 (data exception): the request carried a value Postgres cannot hold
        primary = exc.diag.message_primary or type(exc).__name__
        log.info("refused %s %s: %s", request.method, request.url.path, primary)
        return _json(400, {"error": f"a value in the request cannot be stored: {primary}"})

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> Response:
        request_id = uuid.uuid4().hex
        log.error(
            "internal error %s on %s %s",
            request_id,
            request.method,
            _CALLBACK.sub(r"\1[redacted]", request.url.path),
            exc_info=exc,
        )
        return _json(500, {"error": "internal error", "requestId": request_id})
