"""Reading request bodies with errors that say what to fix."""

from __future__ import annotations

from typing import Any, TypeVar

import orjson
from fastapi import Request
from pydantic import BaseModel, ValidationError

from worker.engine.errors import EngineError, PayloadTooLarge

M = TypeVar("M", bound=BaseModel)

#: largest request body accepted (a 1,000-item batch of small payloads fits easily)
MAX_BODY_BYTES = 16 * 1024 * 1024


class InvalidBody(EngineError):
    status = 422


async def read_json(request: Request) -> Any:
    raw = await request.body()
    if len(raw) > MAX_BODY_BYTES:
        raise PayloadTooLarge(f"request body is {len(raw)} bytes; the limit is {MAX_BODY_BYTES}")
    if not raw:
        raise EngineError("request body is empty: send a JSON object")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise EngineError(f"request body is not valid JSON: {exc}") from None


def validate(model: type[M], data: Any) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'body'}: {err['msg']}"
            for err in exc.errors()
        )
        raise InvalidBody(f"invalid request body: {problems}") from None


async def read_model(request: Request, model: type[M]) -> M:
    return validate(model, await read_json(request))
