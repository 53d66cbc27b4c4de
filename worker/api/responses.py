"""JSON responses rendered by orjson, and the hot routes' way around FastAPI's response model.

A route annotated ``-> dict`` gets a response model: FastAPI validates what it returns against
it and re-encodes it (``jsonable_encoder``) before the response class renders it. The hot
routes (the worker protocol's dequeue, complete and heartbeat; trigger, batch trigger and
retrieve run) return :func:`json_response` instead, a response FastAPI hands on untouched, and
name their documented model in the decorator (``response_model=``), so /openapi.json is the
same as with the annotation.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response


class ORJSONResponse(Response):
    """JSON rendered by orjson (fast, and handles datetimes and UUIDs)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def json_response(content: Any, headers: dict[str, str] | None = None) -> Response:
    """A 200 with ``content`` as JSON, rendered once."""
    return Response(orjson.dumps(content), media_type="application/json", headers=headers)
