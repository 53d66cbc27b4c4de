"""Reading request bodies with errors that say what to fix."""

from __future__ import annotations

from typing import Any, TypeVar

import orjson
from fastapi import Request
from pydantic import BaseModel, ValidationError

from worker.common.limits import (
    MAX_BODY_BYTES,
    MAX_BODY_DEPTH,
    LimitError,
    json_problem,
    text_depth_may_exceed,
)
from worker.engine.errors import EngineError, Kind, PayloadTooLarge

M = TypeVar("M", bound=BaseModel)

__all__ = ["MAX_BODY_BYTES", "InvalidBody", "read_body", "read_json", "read_model", "validate"]


class InvalidBody(EngineError):
    kind = Kind.unprocessable


def _too_large(size: int | str) -> PayloadTooLarge:
    return PayloadTooLarge(f"request body is {size} bytes; the limit is {MAX_BODY_BYTES}")


async def read_body(request: Request) -> bytes:
    """The raw body, refused with 413 from its Content-Length before any of it is read (and
    while streaming, for a chunked body that does not say its length)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise _too_large(declared)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise _too_large(f"more than {size}")
        chunks.append(chunk)
    raw = b"".join(chunks)
    request._body = raw  # what request.body() answers from now on
    return raw


async def read_json(request: Request, max_depth: int | None = MAX_BODY_DEPTH) -> Any:
    """The JSON body. ``max_depth=None`` for the worker's batches (/complete, /logs), which
    check each item on its own so that one deep item cannot refuse its neighbours."""
    raw = await read_body(request)
    if not raw:
        raise EngineError("request body is empty: send a JSON object")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise EngineError(f"request body is not valid JSON: {exc}") from None
    # the stored-JSON rule for the whole body at once (per-value rules are checked where the
    # value is stored); the bracket count skips the walk for nearly every body
    if (
        max_depth is not None
        and text_depth_may_exceed(raw, max_depth)
        and (problem := json_problem(data, max_depth))
    ):
        raise EngineError(f"request body {problem}")
    return data


def validate(model: type[M], data: Any) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        for err in exc.errors():  # a value over a size limit answers 413, like everywhere
            cause = (err.get("ctx") or {}).get("error")
            if isinstance(cause, LimitError) and cause.status == 413:
                raise PayloadTooLarge(cause.message) from None
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'body'}: {_message(err)}"
            for err in exc.errors()
        )
        raise InvalidBody(f"invalid request body: {problems}") from None


def _message(err: Any) -> str:
    """A LimitError raised by a validator keeps its own wording (no 'Value error, ' prefix)."""
    cause = (err.get("ctx") or {}).get("error")
    return cause.message if isinstance(cause, LimitError) else str(err["msg"])


async def read_model(
    request: Request, model: type[M], max_depth: int | None = MAX_BODY_DEPTH
) -> M:
    return validate(model, await read_json(request, max_depth))
