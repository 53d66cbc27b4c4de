"""JSON responses rendered by orjson, and the hot routes' way around FastAPI's response model.

A route annotated ``-> dict`` gets a response model: FastAPI validates what it returns against
it and re-encodes it (``jsonable_encoder``) before the response class renders it. The hot
routes (the worker protocol's dequeue, complete and heartbeat; trigger, batch trigger and
retrieve run) return :func:`json_response` instead, a response FastAPI hands on untouched, and
name their documented model in the decorator (``response_model=``), so /openapi.json is the
same as with the annotation.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any

import orjson
from starlette.responses import Response
from starlette.types import Receive, Scope, Send


class ORJSONResponse(Response):
    """JSON rendered by orjson (fast, and handles datetimes and UUIDs)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def json_response(content: Any, headers: dict[str, str] | None = None) -> Response:
    """A 200 with ``content`` as JSON, rendered once."""
    return Response(orjson.dumps(content), media_type="application/json", headers=headers)


class LineStream(Response):
    """A 200 whose body is ``lines``, each sent as soon as it is produced (chunked: the head
    leaves at once, before the first line); ``closing`` is awaited once the body ended, however
    it ended. It reads nothing from the client: the route that makes ``lines`` may watch for
    the hang-up itself (routes_worker.py). Proxies are asked not to buffer it
    (``X-Accel-Buffering``: nginx's)."""

    media_type = "application/x-ndjson"

    def __init__(self, lines: AsyncGenerator[bytes, None],
                 closing: Callable[[], Awaitable[object]] | None = None) -> None:
        self.lines = lines
        self.closing = closing
        self.status_code = 200
        self.background = None
        self.init_headers({"cache-control": "no-store", "x-accel-buffering": "no"})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await send({"type": "http.response.start", "status": self.status_code,
                        "headers": self.raw_headers})
            async for line in self.lines:
                await send({"type": "http.response.body", "body": line, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            await self.lines.aclose()
            if self.closing is not None:
                await self.closing()
